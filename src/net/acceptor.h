// acceptor.h: one acceptor process: a libevent loop that owns the parts of the
// request path (listener.h, conn.h, request.h, router.h, leases.h, link_client.h)
// and what they share: the generation's runtime and segment, a read buffer, the
// access log. It handles signals, the quarter-second tick and shutdown. It never
// blocks and never decodes a request's arguments.
#pragma once

#include <event2/event.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/runtime.h"
#include "io/event.h"
#include "io/spare_buffers.h"
#include "log/access_log.h"

namespace bertd {

class Connections;
class RequestPath;
class Leases;
class LinkClient;
class Listener;
class Callbacks;

class Acceptor {
public:
    // Events that keep workers busy (their answers, slot hand-offs) run before new
    // clients are accepted and read, so a worker never idles while the loop is busy.
    static constexpr int kWorkerPriority = 0;  // of 2; everything else gets libevent's default, 1

    Acceptor(Runtime& rt, uint32_t index);
    ~Acceptor();
    Acceptor(const Acceptor&) = delete;
    Acceptor& operator=(const Acceptor&) = delete;

    int run();  // returns the process exit status

    // For tests and fuzzing, which drive the loop themselves: sets everything up
    // (signal handling optional) without dispatching; then step with
    // event_base_loop(base(), EVLOOP_NONBLOCK).
    bool start(bool handle_signals);
    // Serves an already connected socket as if it had been accepted.
    void adopt(int fd);
    size_t open_connections() const;
    size_t leases_held() const;
    size_t buffered() const;  // bytes held for clients (the memory budget's count)

    // ---- what the parts share ----------------------------------------------------------
    Runtime& rt() { return rt_; }
    Segment& seg() { return seg_; }
    uint32_t index() const { return index_; }
    size_t max_frame() const { return max_frame_; }
    event_base* base() const { return base_; }
    // Unique across restarts of this acceptor: the top bits of its connection and request ids.
    uint64_t id_prefix() const { return id_prefix_; }
    std::string& scratch() { return scratch_; }  // a read buffer; holds nothing between calls
    SpareBuffers& spares() { return spares_; }
    // The read buffer of streamed answers (bigger reads, fewer system calls per chunk), made
    // at the first one; holds nothing between calls.
    std::string& stream_scratch() {
        if (stream_scratch_.empty()) stream_scratch_.resize(kStreamScratch);
        return stream_scratch_;
    }
    AccessLog& access_log() { return access_log_; }
    bool stopping() const { return stopping_; }
    Connections& conns() { return *conns_; }
    RequestPath& requests() { return *requests_; }
    Leases& leases() { return *leases_; }
    LinkClient& link() { return *link_; }
    Callbacks& callbacks() { return *callbacks_; }
    void wake(int32_t acceptor);  // another acceptor has a slot waiting for it
    void poke_master();           // a slot needs its worker replaced
    // While stopping: ends the loop once nothing is in flight.
    void maybe_exit();

private:
    static void on_wake(evutil_socket_t, short, void*);
    static void on_control(evutil_socket_t, short, void*);
    static void on_tick(evutil_socket_t, short, void*);
    static void on_signal(evutil_socket_t, short, void*);
    void begin_shutdown(bool graceful);

    Runtime& rt_;
    Segment& seg_;
    const uint32_t index_;
    const size_t max_frame_;
    event_base* base_ = nullptr;
    uint64_t id_prefix_ = 0;
    bool stopping_ = false;
    std::string scratch_;
    SpareBuffers spares_;
    static constexpr size_t kStreamScratch = 256u << 10;
    std::string stream_scratch_;
    AccessLog access_log_;
    // Destroyed before the base (members go in reverse order), events with their owners.
    std::unique_ptr<Connections> conns_;
    std::unique_ptr<RequestPath> requests_;
    std::unique_ptr<Leases> leases_;
    std::unique_ptr<LinkClient> link_;
    std::unique_ptr<Listener> listener_;
    std::unique_ptr<Callbacks> callbacks_;
    EventPtr wake_ev_, tick_ev_, control_ev_;
    std::vector<EventPtr> signal_evs_;
};

}  // namespace bertd
