// acceptor.h: one acceptor process: a libevent loop that accepts clients, reads
// BERPs, routes each request to a worker slot (or queues it in shared memory) and
// writes answers in request order. It never blocks and never decodes arguments.
#pragma once

#include <event2/event.h>
#include <sys/socket.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "bert/codec.h"
#include "core/runtime.h"
#include "log/access_log.h"
#include "net/answers.h"

namespace bertd {

// What the stats and the access log need to know about one request.
struct RequestInfo {
    int64_t arrived_us = 0;       // monotonic
    int64_t started_us = 0;       // monotonic: handed to a worker
    int64_t finished_us = 0;      // monotonic: answered
    int64_t arrived_wall_us = 0;  // wall clock, for the log line
    uint32_t queued_high = 0, queued_low = 0;
    bool high = true;
    bool native = false;  // served by a native module (the access log says nat)
    std::string text;  // the request in Erlang syntax, when the access log is on
};

class Acceptor {
public:
    Acceptor(Runtime& rt, uint32_t index);
    ~Acceptor();
    Acceptor(const Acceptor&) = delete;
    Acceptor& operator=(const Acceptor&) = delete;

    int run();  // returns the process exit status

    // For tests and fuzzing, which drive the loop themselves: sets everything up
    // (signal handling optional) without dispatching; then step with
    // event_base_loop(base(), EVLOOP_NONBLOCK).
    bool start(bool handle_signals);
    event_base* base() const { return base_; }
    // Serves an already connected socket as if it had been accepted.
    void adopt(int fd);
    size_t open_connections() const;
    size_t leases_held() const;

private:
    struct Conn;
    struct Lease;

    static void on_accept(evutil_socket_t, short, void*);
    static void on_conn_read(evutil_socket_t, short, void*);
    static void on_conn_write(evutil_socket_t, short, void*);
    static void on_lease_io(evutil_socket_t, short, void*);
    static void on_lease_timeout(evutil_socket_t, short, void*);
    static void on_wake(evutil_socket_t, short, void*);
    static void on_tick(evutil_socket_t, short, void*);
    static void on_signal(evutil_socket_t, short, void*);
    static void on_handover(evutil_socket_t, short, void*);

    void accept_ready();
    Conn& add_conn(int fd, const struct sockaddr_storage& peer);
    void hand_over_idle();
    void conn_readable(Conn& c);
    void process_input(Conn& c);
    void after_input(Conn& c);
    bool handle_frame(Conn& c, std::string_view payload);  // false: the frame waits for a slot
    void handle_admin(Conn& c, const bert::Peek& pk, std::string_view payload);
    void start_on_slot(Conn& c, uint32_t slot);
    void lease_io(Lease& l, short what);
    void finish_lease(Lease& l, std::string_view answer_payload);
    void fail_lease(Lease& l, const std::string& why);
    void give_back(uint32_t slot);
    void take_handoff(uint32_t slot);
    void retry_handoff(uint32_t dead_slot);
    void scan_slots();
    void count_request(int32_t module, RequestInfo& r, int error_type);
    void log_request(const RequestInfo& r, int error_type);
    void conn_ready(Conn& c);
    void send(Conn& c, std::string_view frame);
    void send_owned(Conn& c, std::string&& frame);
    void flush(Conn& c);
    void close_conn(Conn& c);
    void set_reading(Conn& c, bool on);
    void wake(int32_t acceptor);
    void poke_master();
    void begin_shutdown(bool graceful);
    void maybe_exit();
    bool route_external(Conn& c, std::string_view payload);  // handle_frame's external half

    // acceptor_link.cc: native requests through the Erlang link, and the connections
    // the link opens to run rpc:calls from Erlang nodes on external modules.
    struct NativeRequest {
        uint64_t conn_id = 0;
        uint32_t stats_module = 0;
    };
    // A native request that found no link (it is being restarted): its bytes stay in
    // the connection's buffer until the link is back or the wait is over.
    struct ParkedNative {
        uint64_t conn_id = 0;
        uint32_t stats_module = 0;
        bool has_external = false;
        int64_t deadline_us = 0;
    };
    static void on_link_io(evutil_socket_t, short, void*);
    static void on_link_retry(evutil_socket_t, short, void*);
    bool link_connect();
    void link_retry();
    void native_unavailable(Conn& c, uint32_t stats_module);
    void link_io(short what);
    void link_lost(const std::string& why);
    void link_message(uint8_t type, uint64_t tag, std::string_view body);
    void link_flush();
    void send_native(Conn& c, std::string_view payload, uint32_t stats_module, bool has_external);
    void write_native(Conn& c, std::string_view payload, uint32_t stats_module, bool has_external);
    void native_answer(uint64_t tag, std::string_view payload);
    void native_fallback(uint64_t tag);

    Runtime& rt_;
    Segment& seg_;
    const uint32_t index_;
    const size_t max_frame_;
    event_base* base_ = nullptr;
    event* accept_ev_ = nullptr;
    event* wake_ev_ = nullptr;
    event* handover_ev_ = nullptr;
    event* retry_ev_ = nullptr;
    Fd handover_out_;
    event* tick_ev_ = nullptr;
    std::vector<event*> signal_evs_;
    std::unordered_map<uint64_t, std::unique_ptr<Conn>> conns_;
    std::vector<std::unique_ptr<Lease>> leases_;  // by slot index; set while this acceptor holds it
    uint64_t conn_prefix_ = 0;
    uint64_t next_conn_ = 1;
    bool stopping_ = false;
    std::string read_buf_;
    AccessLog access_log_;
    std::vector<std::unique_ptr<Conn>> graveyard_;  // closed, freed at the next callback
    Fd link_fd_;
    event* link_ev_ = nullptr;
    std::string link_in_, link_out_;
    size_t link_in_start_ = 0, link_out_start_ = 0;
    bool link_writing_ = false;
    std::deque<int> link_fds_;  // descriptors received with Conn messages, in order
    std::unordered_map<uint64_t, NativeRequest> native_;
    uint64_t next_native_ = 1;
    int64_t link_retry_us_ = 0;
    int64_t link_lost_us_ = 0;  // when link_lost() last ran
    std::deque<ParkedNative> link_parked_;
    event* link_retry_ev_ = nullptr;
};

}  // namespace bertd
