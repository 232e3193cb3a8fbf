// proxy_gate.cc: reading PROXY headers without ever taking a byte of what follows
// (proxy_gate.h). The socket is peeked: bytes are taken only once they are known to be
// header, so the client's first request stays in the socket for its connection to read.
#include "net/proxy_gate.h"

#include <errno.h>
#include <sys/socket.h>

#include <cstring>
#include <utility>

#include "io/clock.h"
#include "log/log.h"
#include "net/acceptor.h"
#include "net/answers.h"
#include "net/conn.h"
#include "net/proxy.h"

namespace bertd {

ProxyGate::ProxyGate(Acceptor& a)
    : acc_(a), timeout_us_(int64_t(a.rt().config.limits.proxy_header_timeout * 1e6)) {
    for (const std::string& r : a.rt().config.proxy_protocol_from)
        if (auto range = parse_range(r)) from_.push_back(*range);
}

ProxyGate::~ProxyGate() = default;

bool ProxyGate::trusted(const sockaddr_storage& peer) const {
    if (is_unix(peer)) return true;  // who may connect is the socket file's mode
    for (const AddressRange& r : from_)
        if (r.contains(peer)) return true;
    return false;
}

void ProxyGate::admit(int fd, const sockaddr_storage& peer, const std::string& listener) {
    auto w = std::make_unique<Waiting>();
    w->gate = this;
    w->key = next_++;
    w->fd.reset(fd);
    w->peer = peer;
    w->listener = &listener;
    w->deadline_us = monotonic_us() + timeout_us_;
    w->ev = make_event(acc_.base(), fd, EV_READ, on_event, w.get());
    Waiting& ref = *w;
    waiting_.emplace(w->key, std::move(w));
    // Counted as open from now on, so that limits.max_connections covers the waiting too.
    acc_.seg().header().stats.connections_active.fetch_add(1, std::memory_order_relaxed);
    if (!trusted(peer)) {
        refuse(ref, "PROXY header from " + endpoint_text(peer) + ", which is not in proxy_protocol_from");
        return;
    }
    step(ref);  // most balancers send the header with the connect
}

void ProxyGate::on_event(evutil_socket_t, short what, void* arg) {
    Waiting& w = *static_cast<Waiting*>(arg);
    ProxyGate& g = *w.gate;
    if ((what & EV_TIMEOUT) && monotonic_us() >= w.deadline_us) {
        g.refuse(w, "no whole PROXY header within limits.proxy_header_timeout (" +
                        std::to_string(g.timeout_us_ / 1000) + " ms)");
        return;
    }
    g.step(w);
}

void ProxyGate::arm(Waiting& w) {
    int64_t left = std::max<int64_t>(w.deadline_us - monotonic_us(), 1000);
    timeval tv{time_t(left / 1'000'000), suseconds_t(left % 1'000'000)};
    event_add(w.ev.get(), &tv);
}

// What the socket holds is looked at with the bytes taken so far; bytes are taken only
// while all of them are header (NeedMore), and at the end exactly the header's rest.
void ProxyGate::step(Waiting& w) {
    char buf[proxy::kMaxHeader];
    size_t room = proxy::kMaxHeader - w.got.size();
    ssize_t n = ::recv(w.fd.get(), buf, room, MSG_PEEK);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return arm(w);
        return forget(w);  // reset by the peer: nobody to tell
    }
    if (n == 0) {
        if (w.got.empty()) return forget(w);  // connected and left (a balancer's TCP check)
        return refuse(w, "the connection ended inside its PROXY header");
    }
    std::string all = w.got + std::string(buf, size_t(n));
    proxy::Header h = proxy::parse(all);
    if (h.status == proxy::Header::Status::Bad) return refuse(w, h.error);
    size_t take = h.status == proxy::Header::Status::Done ? h.length - w.got.size() : size_t(n);
    if (::recv(w.fd.get(), buf, take, 0) != ssize_t(take)) return forget(w);
    if (h.status == proxy::Header::Status::NeedMore) {
        w.got.append(buf, take);
        return arm(w);
    }
    pass(w, h.has_address ? h.source : w.peer);
}

void ProxyGate::pass(Waiting& w, const sockaddr_storage& client_in) {
    int fd = w.fd.release();
    sockaddr_storage client = client_in;  // it may be w.peer, which goes with w
    acc_.seg().header().stats.connections_active.fetch_sub(
        1, std::memory_order_relaxed);  // add() counts it again
    waiting_.erase(w.key);
    Conn& c = acc_.conns().add(fd, client);
    acc_.conns().read(c);  // the first request may be there already
}

void ProxyGate::refuse(Waiting& w, const std::string& why) {
    GlobalStats& gs = acc_.seg().header().stats;
    gs.protocol_errors.fetch_add(1, std::memory_order_relaxed);
    std::string f = error_frame(ErrorType::Protocol, 1, "connection refused: " + why);
    [[maybe_unused]] ssize_t n = ::send(w.fd.get(), f.data(), f.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    uint64_t unsaid;
    if (say(unsaid))
        log::warn("closed a connection from %s on %s: %s%s", endpoint_text(w.peer).c_str(),
                  w.listener->c_str(), why.c_str(),
                  unsaid ? (" (" + std::to_string(unsaid) + " such lines left out before)").c_str() : "");
    close_quietly(w);
}

bool ProxyGate::say(uint64_t& unsaid) {
    int64_t now = monotonic_us();
    if (now - window_us_ >= 10'000'000) window_us_ = now, said_ = 0;
    if (said_ >= kBurst) {
        ++unsaid_;
        return false;
    }
    ++said_;
    unsaid = std::exchange(unsaid_, 0);
    return true;
}

// What the client sent beyond the refused header is read and dropped first: closing a
// socket with unread bytes would reset it, and the client might never see why.
void ProxyGate::close_quietly(Waiting& w) {
    char buf[4096];
    for (int i = 0; i < 16 && ::recv(w.fd.get(), buf, sizeof buf, MSG_DONTWAIT) > 0; ++i) {
    }
    ::shutdown(w.fd.get(), SHUT_WR);
    forget(w);
}

void ProxyGate::forget(Waiting& w) {
    GlobalStats& gs = acc_.seg().header().stats;
    gs.connections_active.fetch_sub(1, std::memory_order_relaxed);
    gs.connections_completed.fetch_add(1, std::memory_order_relaxed);
    // Erased from inside its own callback: nothing of it is used after this.
    waiting_.erase(w.key);
}

}  // namespace bertd
