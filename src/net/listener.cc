// listener.cc: accept4 in batches, the connection limit, and SCM_RIGHTS hand-overs
// between generations (io/unix.h).
#include "net/listener.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cstring>
#include <vector>

#include "io/address.h"
#include "io/clock.h"
#include "io/unix.h"
#include "log/log.h"
#include "net/acceptor.h"
#include "net/answers.h"
#include "net/metrics_http.h"
#include "net/proxy_gate.h"
#include "net/request.h"

namespace bertd {

namespace {
constexpr int kAcceptBatch = 64;
constexpr size_t kHandoverBatch = 200;  // descriptors per datagram (io/unix.h's kMaxPassedFds is 250)
// Out of descriptors, accepting pauses this long, doubling while it lasts, up to a second.
constexpr int64_t kFirstPauseUs = 50'000, kMaxPauseUs = 1'000'000;
constexpr int64_t kLogEveryUs = 10'000'000;

// The members of a listen entry's SO_REUSEPORT group this acceptor accepts on (runtime.h).
std::vector<int> my_members(const ListenRuntime& l, uint32_t me, uint32_t acceptors) {
    std::vector<int> all{l.fd.get()};
    for (const Fd& fd : l.more) all.push_back(fd.get());
    std::vector<int> mine;
    for (size_t m = me; m < all.size(); m += acceptors) mine.push_back(all[m]);
    if (mine.empty()) mine.push_back(all[me % all.size()]);
    return mine;
}
}  // namespace

Listener::Listener(Acceptor& a) : acc_(a) {
    Runtime& rt = a.rt();
    for (uint32_t i = 0; i < rt.listeners.size(); ++i)
        for (int fd : my_members(rt.listeners[i], a.index(), uint32_t(std::max(rt.config.acceptors, 1)))) {
            auto p = std::make_unique<Port>(Port{this, i, fd, nullptr});
            p->ev = make_event(a.base(), fd, EV_READ | EV_PERSIST, on_accept, p.get());
            event_add(p->ev.get(), nullptr);
            ports_.push_back(std::move(p));
        }
    if (rt.handover) {
        handover_ev_ = make_event(a.base(), rt.handover.get(), EV_READ | EV_PERSIST, on_handover, this);
        event_add(handover_ev_.get(), nullptr);
    }
    retry_ev_ = make_event(a.base(), -1, 0, on_retry, this);
    resume_ev_ = make_event(a.base(), -1, 0, on_resume, this);
    reserve_.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    gate_ = std::make_unique<ProxyGate>(a);
    if (rt.metrics_fd) metrics_ = std::make_unique<MetricsHttp>(a, rt.metrics_fd.get());
}

Listener::~Listener() = default;

size_t Listener::pending() const { return gate_->pending(); }

void Listener::take_handovers() {
    if (acc_.rt().handover) on_handover(acc_.rt().handover.get(), EV_READ, this);
}

void Listener::stop_accepting() {
    for (auto& p : ports_) event_del(p->ev.get());
    if (metrics_) metrics_->stop();
    evtimer_del(resume_ev_.get());
}

void Listener::on_accept(evutil_socket_t, short, void* arg) {
    auto* p = static_cast<Port*>(arg);
    p->self->accept_ready(*p);
}

void Listener::accept_ready(const Port& p) {
    int listen_fd = p.fd;
    uint32_t index = p.index;
    GlobalStats& gs = acc_.seg().header().stats;
    const Limits& limits = acc_.rt().config.limits;
    for (int i = 0; i < kAcceptBatch && !acc_.stopping(); ++i) {
        sockaddr_storage peer{};
        socklen_t plen = sizeof peer;
        int fd = accept4(listen_fd, reinterpret_cast<sockaddr*>(&peer), &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) out_of_descriptors(errno, listen_fd);
            return;  // EAGAIN: another acceptor took it, or nothing left
        }
        pause_us_ = 0;
        if (gs.connections_active.load(std::memory_order_relaxed) >= limits.max_connections) {
            gs.connections_refused.fetch_add(1, std::memory_order_relaxed);
            std::string f = error_frame(ErrorType::Server, 0,
                                        "too many connections (limit " + std::to_string(limits.max_connections) +
                                            ", limits.max_connections)");
            [[maybe_unused]] ssize_t n = ::send(fd, f.data(), f.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
            ::close(fd);
            continue;
        }
        int one = 1;
        if (peer.ss_family != AF_UNIX) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        gs.connections_total.fetch_add(1, std::memory_order_relaxed);
        if (const ListenRuntime& l = acc_.rt().listeners[index]; l.proxy_protocol) {
            gate_->admit(fd, peer, l.name);
            continue;
        }
        Conn& c = acc_.conns().add(fd, peer);
        acc_.conns().read(c);  // most clients send the request with the connect: try it now
    }
}

// The listen socket stays readable while clients wait, so accepting again at once would
// spin. One waiting client is refused with a reason (through the spare descriptor), then
// accepting pauses; one log line says so per period, however often it happens.
void Listener::out_of_descriptors(int err, int listen_fd) {
    if (reserve_) {
        reserve_.reset();
        int fd = accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            std::string f = error_frame(ErrorType::Server, 0, "the server is out of file descriptors; try again later");
            [[maybe_unused]] ssize_t n = ::send(fd, f.data(), f.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
            ::close(fd);
        }
        reserve_.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    }
    pause_us_ = pause_us_ == 0 ? kFirstPauseUs : std::min(pause_us_ * 2, kMaxPauseUs);
    ++pauses_;
    int64_t now = monotonic_us();
    if (logged_at_us_ == 0 || now - logged_at_us_ >= kLogEveryUs) {
        log::error("accept: out of file descriptors (%s): not accepting for up to %lld ms at a time (%llu pauses "
                   "since the last such line); raise the limit (ulimit -n, LimitNOFILE=) or lower "
                   "limits.max_connections",
                   strerror(err), (long long)(kMaxPauseUs / 1000), (unsigned long long)pauses_);
        logged_at_us_ = now;
        pauses_ = 0;
    }
    for (auto& p : ports_) event_del(p->ev.get());
    timeval tv{time_t(pause_us_ / 1'000'000), suseconds_t(pause_us_ % 1'000'000)};
    evtimer_add(resume_ev_.get(), &tv);
}

void Listener::on_resume(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<Listener*>(arg);
    if (self->acc_.stopping()) return;
    for (auto& p : self->ports_) event_add(p->ev.get(), nullptr);
    for (auto& p : self->ports_) self->accept_ready(*p);
}

// ---- handing connections between generations ---------------------------------------------

void Listener::on_handover(evutil_socket_t fd, short, void* arg) {
    auto* self = static_cast<Listener*>(arg);
    const std::string& secret = self->acc_.rt().ipc.secret();
    for (int i = 0; i < kAcceptBatch; ++i) {
        // The secret, then each connection's client (io/address.h's packed records).
        char body[256 + kHandoverBatch * kPackedAddress];
        std::vector<int> fds;
        PeerCred sender;
        ssize_t n = recv_with_fds(int(fd), body, sizeof body, fds, &sender);
        if (n <= 0) return;
        // Only an acceptor of this server (the generation before) hands connections over: it
        // knows the secret. (It may have exited since, so its ancestry cannot be asked.)
        std::string_view got(body, size_t(n));
        if (secret.empty() || got.substr(0, secret.size()) != secret) {
            for (int f : fds) ::close(f);
            uint64_t times;
            if (self->refused_.due(times))
                log::error("refused %zu connections handed over by pid %d (uid %u): not an acceptor of this server "
                           "(%llu such since the last line)",
                           fds.size(), int(sender.pid), unsigned(sender.uid), (unsigned long long)times);
            continue;
        }
        std::string_view clients = got.substr(secret.size());
        bool with_clients = clients.size() == fds.size() * kPackedAddress;
        for (int conn_fd : fds) {
            sockaddr_storage client;
            bool known = with_clients && take_packed(clients, client) && client.ss_family != AF_UNSPEC;
            self->take_handed_over(conn_fd, known ? &client : nullptr);
        }
    }
}

// A connection keeps the client its PROXY header named in the generation before.
void Listener::take_handed_over(int fd, const sockaddr_storage* client) {
    set_nonblocking(fd);
    sockaddr_storage peer{};
    socklen_t plen = sizeof peer;
    if (client)
        peer = *client;
    else
        getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &plen);
    Conn& c = acc_.conns().add(fd, peer);
    acc_.conns().read(c);  // the client may have sent a request meanwhile
}

void Listener::on_retry(evutil_socket_t, short, void* arg) { static_cast<Listener*>(arg)->acc_.maybe_exit(); }

void Listener::hand_over_idle() {
    Segment& seg = acc_.seg();
    uint64_t successor = seg.header().successor.load();
    if (successor == 0) return;
    if (handover_to_ != successor) handover_out_.reset();  // a newer generation came since
    if (!handover_out_) {
        handover_out_.reset(connect_abstract(acc_.rt().ipc.handover(successor), SOCK_DGRAM));
        if (!handover_out_) {
            log::warn("cannot reach generation %llu to hand connections over: %s", (unsigned long long)successor,
                      strerror(errno));
            return;
        }
        handover_to_ = successor;
    }
    std::vector<Conn*> idle;
    acc_.conns().each([&](Conn& c) {
        if (c.idle() && c.in.empty() && c.out.empty() && !c.eof && !c.closing && !c.from_link) idle.push_back(&c);
    });
    // Many descriptors per datagram: the successor's queue holds only a few datagrams.
    for (size_t at = 0; at < idle.size(); at += kHandoverBatch) {
        size_t n = std::min(idle.size() - at, kHandoverBatch);
        int fds[kHandoverBatch];
        std::string body = acc_.rt().ipc.secret();
        for (size_t k = 0; k < n; ++k) {
            fds[k] = idle[at + k]->fd.get();
            append_packed(body, idle[at + k]->client.get());
        }
        if (send_with_fds(handover_out_.get(), body, fds, n) < 0) {
            // The successor's queue is full: try again shortly.
            timeval soon{0, 5000};
            evtimer_add(retry_ev_.get(), &soon);
            return;
        }
        for (size_t k = 0; k < n; ++k) {
            Conn* c = idle[at + k];
            // The successor owns the socket now; closing our descriptor leaves it open.
            seg.header().stats.connections_active.fetch_sub(1, std::memory_order_relaxed);
            seg.acceptor(acc_.index()).connections.fetch_sub(1, std::memory_order_relaxed);
            c->handed_over = true;
            acc_.conns().close(*c);
        }
    }
}

}  // namespace bertd
