// event.h: EventPtr, a libevent event owned like a unique_ptr, so an event can
// never outlive the object its callback points at, nor be freed twice.
#pragma once

#include <event2/event.h>

#include <memory>

namespace bertd {

struct EventFree {
    void operator()(event* e) const { event_free(e); }
};
using EventPtr = std::unique_ptr<event, EventFree>;

inline EventPtr make_event(event_base* base, evutil_socket_t fd, short what, event_callback_fn fn, void* arg) {
    return EventPtr(event_new(base, fd, what, fn, arg));
}

}  // namespace bertd
