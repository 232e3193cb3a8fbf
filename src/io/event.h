// event.h: EventPtr, a libevent event owned like a unique_ptr, and InlineEvent, one kept
// inside the object it serves; either way an event can never outlive the object its
// callback points at, nor be freed twice.
#pragma once

#include <event2/event.h>
#include <event2/event_struct.h>

#include <memory>

namespace bertd {

struct EventFree {
    void operator()(event* e) const { event_free(e); }
};
using EventPtr = std::unique_ptr<event, EventFree>;

inline EventPtr make_event(event_base* base, evutil_socket_t fd, short what, event_callback_fn fn, void* arg) {
    return EventPtr(event_new(base, fd, what, fn, arg));
}

// An event in its owner's own memory, for objects there are many of (a connection): no
// allocation of its own and no malloc overhead. Deleted from its loop when it goes.
class InlineEvent {
public:
    InlineEvent() = default;
    InlineEvent(const InlineEvent&) = delete;
    InlineEvent& operator=(const InlineEvent&) = delete;
    ~InlineEvent() {
        if (event_initialized(&ev_)) event_del(&ev_);
    }
    // Checks once that the libevent loaded is the one compiled against (its event fits).
    void assign(event_base* base, evutil_socket_t fd, short what, event_callback_fn fn, void* arg);
    event* get() { return &ev_; }

private:
    event ev_{};
};

}  // namespace bertd
