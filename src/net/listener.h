// listener.h: where an acceptor's connections come from: the listen sockets (with
// the server's connection limit; a `proxy_protocol` listener's through the PROXY gate),
// and, after a reload, the previous generation's
// idle connections handed over on this generation's datagram socket. While stopping,
// it hands this acceptor's idle connections on to the next generation. Out of file
// descriptors, it stops accepting for a while rather than spin. Nothing here reads a
// client's bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include <sys/socket.h>

#include "io/event.h"
#include "io/fd.h"
#include "log/throttle.h"

namespace bertd {

class Acceptor;
class ProxyGate;
class MetricsHttp;

class Listener {
public:
    explicit Listener(Acceptor& a);
    ~Listener();

    void stop_accepting();
    // While stopping: passes every connection between requests (nothing read, nothing to
    // write) to the successor generation, if there is one.
    void hand_over_idle();
    // Connections still waiting for their PROXY header.
    size_t pending() const;
    // Takes the connections handed over that wait unread (before this acceptor exits).
    void take_handovers();

private:
    // One listen socket (a member of rt.listeners[index]) and its event.
    struct Port {
        Listener* self;
        uint32_t index;
        int fd;
        EventPtr ev;
    };
    static void on_accept(evutil_socket_t, short, void*);
    static void on_handover(evutil_socket_t, short, void*);
    static void on_retry(evutil_socket_t, short, void*);
    static void on_resume(evutil_socket_t, short, void*);
    void accept_ready(const Port& p);
    void out_of_descriptors(int err, int listen_fd);
    void take_handed_over(int fd, const sockaddr_storage* client);

    Acceptor& acc_;
    std::vector<std::unique_ptr<Port>> ports_;
    std::unique_ptr<ProxyGate> gate_;
    std::unique_ptr<MetricsHttp> metrics_;  // GET /metrics, when the config has `metrics`
    EventPtr handover_ev_, retry_ev_, resume_ev_;
    Fd handover_out_;
    uint64_t handover_to_ = 0;  // the generation handover_out_ reaches
    Fd reserve_;               // a spare descriptor, given up to refuse one client when there are none
    int64_t pause_us_ = 0;     // the current pause; 0 while accepting works
    int64_t logged_at_us_ = 0;
    uint64_t pauses_ = 0;      // since the last log line
    log::Throttle refused_{10'000'000};  // hand-overs from strangers
};

}  // namespace bertd
