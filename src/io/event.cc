// event.cc: InlineEvent's assignment. It refuses to run on a libevent whose event is
// larger than the one compiled against, rather than write past the owner's room for it.
#include "io/event.h"

#include <cstdio>
#include <cstdlib>

namespace bertd {

void InlineEvent::assign(event_base* base, evutil_socket_t fd, short what, event_callback_fn fn, void* arg) {
    static const bool fits = event_get_struct_event_size() <= sizeof(event);
    if (!fits) {
        fprintf(stderr, "bertd: libevent %s has an event of %zu bytes, built for %zu: rebuild bertd\n",
                event_get_version(), event_get_struct_event_size(), sizeof(event));
        abort();
    }
    event_assign(&ev_, base, fd, what, fn, arg);
}

}  // namespace bertd
