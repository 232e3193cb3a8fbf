// acceptor_internal.h: the acceptor's per-connection and per-lease records, shared
// by acceptor.cc and acceptor_link.cc. Only the acceptor's own files include it.
#pragma once

#include <event2/event.h>

#include "bert/frame.h"
#include "net/acceptor.h"

namespace bertd {

struct Acceptor::Conn {
    Acceptor* owner = nullptr;
    uint64_t id = 0;
    Fd fd;
    event* rev = nullptr;
    event* wev = nullptr;
    std::string in;  // unparsed bytes start at in_start
    size_t in_start = 0;
    std::string out;  // unsent bytes start at out_start
    size_t out_start = 0;
    enum class State { Idle, Waiting, Busy } state = State::Idle;
    bool reading = false;
    bool high = true;  // priority of the next request ({info, priority, ...})
    bool eof = false;  // the client will send nothing more
    bool closing = false;  // close once `out` is flushed
    bool out_paused = false;  // requests wait until the client has read its answers
    bool admin_ok = false;
    bool dead = false;     // closed; freed at the start of the next callback
    bool handed_over = false;  // passed to the next generation, not closed
    bool from_link = false;    // the Erlang link's: external modules only, never handed over
    std::string peer;
    int64_t accepted_us = 0;      // wall clock, for the access log
    int64_t last_active_us = 0;   // monotonic, for the idle timeout
    // The request in progress.
    uint32_t module = 0;
    bool cast = false;
    size_t frame_len = 0;  // header + payload, at in_start
    RequestInfo req;

    // The request in progress, while its bytes wait in `in` (native calls, fallbacks).
    std::string_view payload() const {
        return std::string_view(in).substr(in_start + bert::kFrameHeader, frame_len - bert::kFrameHeader);
    }

    ~Conn() {
        if (rev) event_free(rev);
        if (wev) event_free(wev);
    }
};

struct Acceptor::Lease {
    Acceptor* owner = nullptr;
    uint32_t slot = 0;
    int fd = -1;
    event* ev = nullptr;
    event* timer = nullptr;
    Conn* conn = nullptr;  // null once the client no longer waits (cast, or gone)
    uint64_t conn_id = 0;
    uint32_t module = 0;
    bool cast = false;
    std::string pending;  // request bytes not yet written
    size_t pending_off = 0;
    std::string reply;
    bool writing = false;
    RequestInfo req;  // a cast's, logged when its worker finishes

    ~Lease() {
        if (ev) event_free(ev);
        if (timer) event_free(timer);
    }
};

}  // namespace bertd
