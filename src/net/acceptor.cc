// acceptor.cc: the per-process event loop. Accepts, frames, peeks, routes to a
// worker slot or a shared-memory queue, relays answers in request order. It never
// blocks, never decodes a request's arguments, and never lets one client's bad
// bytes or dead worker touch another client's request.
#include "net/acceptor.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "admin/admin.h"
#include "bert/frame.h"
#include "bert/printer.h"
#include "io/unix.h"
#include "log/log.h"
#include "net/acceptor_internal.h"

namespace bertd {

namespace {
constexpr size_t kReadChunk = 64 * 1024;
constexpr int kReadRounds = 16;  // at most 1 MiB from one connection per wake-up
constexpr int kAcceptBatch = 64;
constexpr size_t kHandoverBatch = 200;  // descriptors per datagram (SCM_MAX_FD is 253)
constexpr size_t kLogRequestBytes = 4096;  // a huge request is cut short in the access log
// A client that does not read its answers gets no more requests served once this much
// waits to be sent: without the bound, pipelined requests grow the buffer without limit.
constexpr size_t kOutHighWater = 1u << 20;
// Buffers above this size are freed once empty (a request's after a second of rest, so a
// busy connection keeps its buffer), so idle connections hold no memory of their largest
// request or answer.
constexpr size_t kKeepBuffer = 4096;
constexpr int64_t kShrinkIdleUs = 1'000'000;
constexpr int kWorkerPriority = 0;  // of 2; client events get libevent's default, 1

bool is_loopback(const sockaddr_storage& a) {
    if (a.ss_family == AF_INET) {
        auto* in = reinterpret_cast<const sockaddr_in*>(&a);
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (a.ss_family == AF_INET6) {
        auto* in6 = reinterpret_cast<const sockaddr_in6*>(&a);
        if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr)) return true;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) return in6->sin6_addr.s6_addr[12] == 127;
    }
    return false;
}

std::string peer_text(const sockaddr_storage& a) {
    char buf[INET6_ADDRSTRLEN] = "?";
    if (a.ss_family == AF_INET)
        inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&a)->sin_addr, buf, sizeof buf);
    else if (a.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&a)->sin6_addr, buf, sizeof buf);
    return buf;
}
}  // namespace

Acceptor::Acceptor(Runtime& rt, uint32_t index)
    : rt_(rt), seg_(*rt.seg), index_(index), max_frame_(rt.config.limits.max_frame) {
    leases_.resize(seg_.nslots());
    read_buf_.resize(kReadChunk);
}

Acceptor::~Acceptor() {
    conns_.clear();
    leases_.clear();
    if (accept_ev_) event_free(accept_ev_);
    if (wake_ev_) event_free(wake_ev_);
    if (handover_ev_) event_free(handover_ev_);
    if (retry_ev_) event_free(retry_ev_);
    if (tick_ev_) event_free(tick_ev_);
    if (link_ev_) event_free(link_ev_);
    if (link_retry_ev_) event_free(link_retry_ev_);
    for (auto* e : signal_evs_) event_free(e);
    if (base_) event_base_free(base_);
}

int Acceptor::run() {
    if (!start(true)) return 1;
    event_base_dispatch(base_);
    return 0;
}

bool Acceptor::start(bool handle_signals) {
    AcceptorShared& me = seg_.acceptor(index_);
    uint64_t incarnation = me.incarnation.fetch_add(1) + 1;
    me.pid = getpid();
    // Connection ids stay unique across restarts of this acceptor, so a queued
    // hand-off meant for a previous incarnation's connection is never misdelivered.
    conn_prefix_ = (uint64_t(index_) << 56) | ((incarnation & 0xFFFFFF) << 32);

    base_ = event_base_new();
    if (!base_) return false;
    // Two priorities: what keeps workers busy (their answers, hand-offs of slots) runs before
    // new clients are accepted and read, so a worker never idles while this loop is busy.
    event_base_priority_init(base_, 2);
    accept_ev_ = event_new(base_, rt_.listen_fd.get(), EV_READ | EV_PERSIST, on_accept, this);
    event_add(accept_ev_, nullptr);
    wake_ev_ = event_new(base_, rt_.acceptor_wake[index_].get(), EV_READ | EV_PERSIST, on_wake, this);
    event_priority_set(wake_ev_, kWorkerPriority);
    event_add(wake_ev_, nullptr);
    if (rt_.handover) {
        handover_ev_ = event_new(base_, rt_.handover.get(), EV_READ | EV_PERSIST, on_handover, this);
        event_add(handover_ev_, nullptr);
    }
    if (!rt_.access_log_path.empty()) access_log_.open(rt_.access_log_path, &seg_.header().access_log);
    tick_ev_ = event_new(base_, -1, EV_PERSIST, on_tick, this);
    // A moved access log must be replaced within a second, so look four times a second.
    timeval quarter{0, 250000};
    event_add(tick_ev_, &quarter);
    if (handle_signals) {
        for (int sig : {SIGTERM, SIGINT, SIGQUIT, SIGUSR1}) {
            event* e = evsignal_new(base_, sig, on_signal, this);
            event_add(e, nullptr);
            signal_evs_.push_back(e);
        }
        sigset_t unblock;
        sigemptyset(&unblock);
        sigprocmask(SIG_SETMASK, &unblock, nullptr);
        signal(SIGPIPE, SIG_IGN);
        signal(SIGHUP, SIG_IGN);
    }
    // Hand-offs may have been made to this index while it was down.
    scan_slots();
    if (!rt_.link_address.empty()) link_connect();
    return true;
}

void Acceptor::adopt(int fd) {
    graveyard_.clear();
    sockaddr_storage peer{};
    socklen_t plen = sizeof peer;
    getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &plen);
    set_nonblocking(fd);
    seg_.header().stats.connections_total.fetch_add(1, std::memory_order_relaxed);
    Conn& c = add_conn(fd, peer);
    conn_readable(c);
}

size_t Acceptor::open_connections() const { return conns_.size(); }

size_t Acceptor::leases_held() const {
    size_t n = 0;
    for (const auto& l : leases_) n += l != nullptr;
    return n;
}

// ---- accepting ---------------------------------------------------------------

void Acceptor::on_accept(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<Acceptor*>(arg);
    self->graveyard_.clear();
    self->accept_ready();
}

void Acceptor::accept_ready() {
    GlobalStats& gs = seg_.header().stats;
    for (int i = 0; i < kAcceptBatch && !stopping_; ++i) {
        sockaddr_storage peer{};
        socklen_t plen = sizeof peer;
        int fd = accept4(rt_.listen_fd.get(), reinterpret_cast<sockaddr*>(&peer), &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE)
                log::error("accept: out of file descriptors (%s); raise the limit (ulimit -n)", strerror(errno));
            return;  // EAGAIN: another acceptor took it, or nothing left
        }
        if (gs.connections_active.load(std::memory_order_relaxed) >= rt_.config.limits.max_connections) {
            gs.connections_refused.fetch_add(1, std::memory_order_relaxed);
            std::string f = error_frame(ErrorType::Server, 0,
                                        "too many connections (limit " +
                                            std::to_string(rt_.config.limits.max_connections) +
                                            ", limits.max_connections)");
            [[maybe_unused]] ssize_t n = ::send(fd, f.data(), f.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
            ::close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        gs.connections_total.fetch_add(1, std::memory_order_relaxed);
        Conn& c = add_conn(fd, peer);
        // Most clients send the request with the connect; try it now.
        conn_readable(c);
    }
}

Acceptor::Conn& Acceptor::add_conn(int fd, const sockaddr_storage& peer) {
    auto c = std::make_unique<Conn>();
    c->owner = this;
    c->id = conn_prefix_ | (next_conn_++ & 0xFFFFFFFF);
    c->fd.reset(fd);
    c->admin_ok = is_loopback(peer);
    if (!c->admin_ok) {
        std::string p = peer_text(peer);
        for (const auto& a : rt_.config.admin_allow)
            if (a == p) c->admin_ok = true;
    }
    c->accepted_us = now_us();
    c->last_active_us = monotonic_us();
    c->rev = event_new(base_, fd, EV_READ | EV_PERSIST, on_conn_read, c.get());
    c->wev = event_new(base_, fd, EV_WRITE | EV_PERSIST, on_conn_write, c.get());
    seg_.header().stats.connections_active.fetch_add(1, std::memory_order_relaxed);
    seg_.acceptor(index_).connections.fetch_add(1, std::memory_order_relaxed);
    Conn& ref = *c;
    conns_.emplace(c->id, std::move(c));
    set_reading(ref, true);
    return ref;
}

// ---- handing connections to the next generation ---------------------------------------

void Acceptor::on_handover(evutil_socket_t fd, short, void* arg) {
    auto* self = static_cast<Acceptor*>(arg);
    self->graveyard_.clear();
    for (int i = 0; i < kAcceptBatch; ++i) {
        char byte;
        std::vector<int> fds;
        if (recv_with_fds(fd, &byte, 1, fds) <= 0) return;
        for (int conn_fd : fds) {
            set_nonblocking(conn_fd);
            sockaddr_storage peer{};
            socklen_t plen = sizeof peer;
            getpeername(conn_fd, reinterpret_cast<sockaddr*>(&peer), &plen);
            Conn& c = self->add_conn(conn_fd, peer);
            self->conn_readable(c);  // the client may have sent a request meanwhile
        }
    }
}

// While stopping, passes every connection that is between requests (nothing read,
// nothing to write) to the successor generation; returns false when there is none.
void Acceptor::hand_over_idle() {
    uint64_t successor = seg_.header().successor.load();
    if (successor == 0) return;
    if (!handover_out_) {
        handover_out_.reset(connect_abstract(rt_.ipc.handover(successor), SOCK_DGRAM));
        if (!handover_out_) {
            log::warn("cannot reach generation %llu to hand connections over: %s", (unsigned long long)successor,
                      strerror(errno));
            return;
        }
    }
    std::vector<Conn*> idle;
    for (auto& [id, c] : conns_)
        if (!c->dead && c->state == Conn::State::Idle && c->in_start == c->in.size() &&
            c->out_start == c->out.size() && !c->eof && !c->closing && !c->from_link)
            idle.push_back(c.get());
    // Many descriptors per datagram: the successor's queue holds only a few datagrams.
    for (size_t at = 0; at < idle.size(); at += kHandoverBatch) {
        size_t n = std::min(idle.size() - at, kHandoverBatch);
        int fds[kHandoverBatch];
        for (size_t k = 0; k < n; ++k) fds[k] = idle[at + k]->fd.get();
        if (send_with_fds(handover_out_.get(), "c", fds, n) < 0) {
            // The successor's queue is full: try again shortly.
            timeval soon{0, 5000};
            evtimer_add(retry_ev_, &soon);
            return;
        }
        for (size_t k = 0; k < n; ++k) {
            Conn* c = idle[at + k];
            // The successor owns the socket now; closing our descriptor leaves it open.
            seg_.header().stats.connections_active.fetch_sub(1, std::memory_order_relaxed);
            seg_.acceptor(index_).connections.fetch_sub(1, std::memory_order_relaxed);
            c->handed_over = true;
            close_conn(*c);
        }
    }
}

// ---- reading and framing --------------------------------------------------------

void Acceptor::on_conn_read(evutil_socket_t, short, void* arg) {
    auto* c = static_cast<Conn*>(arg);
    c->owner->graveyard_.clear();
    c->owner->conn_readable(*c);
}

void Acceptor::set_reading(Conn& c, bool on) {
    if (on == c.reading) return;
    c.reading = on;
    if (on) event_add(c.rev, nullptr);
    else event_del(c.rev);
}

void Acceptor::conn_readable(Conn& c) {
    if (c.in_start > 0 && (c.in_start == c.in.size() || c.in_start > (1u << 20))) {
        c.in.erase(0, c.in_start);
        c.in_start = 0;
    }
    // The buffer grows with what arrives, never with what a header announces (a client
    // could announce max_frame and trickle). Read what the socket holds, up to kReadRounds chunks, before
    // going back to the loop.
    bool got = false;
    for (int round = 0; round < kReadRounds; ++round) {
        // Bound what one connection buffers: one whole frame beyond the one in progress.
        if (c.in.size() - c.in_start > max_frame_ + 2 * bert::kFrameHeader) {
            set_reading(c, false);
            break;
        }
        ssize_t n = ::recv(c.fd.get(), read_buf_.data(), read_buf_.size(), 0);
        if (n > 0) {
            c.in.append(read_buf_.data(), size_t(n));
            got = true;
            if (size_t(n) < read_buf_.size()) break;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) break;
        // EOF or error: answer what is already here, then close.
        c.eof = true;
        set_reading(c, false);
        if (n < 0) {
            close_conn(c);
            return;
        }
        break;
    }
    if (!got && !c.eof) return;
    if (got) c.last_active_us = monotonic_us();
    after_input(c);
}

// Handles buffered frames; closes a connection whose client is done and answered.
void Acceptor::after_input(Conn& c) {
    process_input(c);
    if (!c.dead && c.eof && c.state == Conn::State::Idle && c.out_start == c.out.size()) close_conn(c);
    maybe_exit();
}

void Acceptor::process_input(Conn& c) {
    while (c.state == Conn::State::Idle && !c.closing && !c.dead) {
        if (c.out.size() - c.out_start > kOutHighWater) {
            c.out_paused = true;  // flush() resumes once the client has read it all
            set_reading(c, false);
            return;
        }
        std::string_view buf(c.in.data() + c.in_start, c.in.size() - c.in_start);
        bert::FrameScan fs = bert::scan_frame(buf, max_frame_);
        if (fs.state == bert::FrameScan::State::TooLarge) {
            seg_.header().stats.protocol_errors.fetch_add(1, std::memory_order_relaxed);
            send_owned(c, error_frame(ErrorType::Protocol, 1,
                                      "frame of " + std::to_string(fs.length) + " bytes is over the limit of " +
                                          std::to_string(max_frame_) + " bytes (limits.max_frame)"));
            c.closing = true;  // the stream cannot be resynchronised
            set_reading(c, false);
            c.in.clear();
            c.in_start = 0;
            flush(c);
            return;
        }
        if (fs.state == bert::FrameScan::State::NeedMore) {
            if (c.eof && !buf.empty()) {
                seg_.header().stats.protocol_errors.fetch_add(1, std::memory_order_relaxed);
                send_owned(c, error_frame(ErrorType::Protocol, buf.size() < bert::kFrameHeader ? 1 : 2,
                                          "connection closed inside a frame (" + std::to_string(buf.size()) +
                                              " bytes of an incomplete frame)"));
                c.in.clear();
                c.in_start = 0;
            }
            if (!c.eof) set_reading(c, true);
            return;
        }
        c.frame_len = bert::kFrameHeader + fs.length;
        std::string_view payload = buf.substr(bert::kFrameHeader, fs.length);
        if (handle_frame(c, payload)) c.in_start += c.frame_len;
    }
    // A busy connection keeps its read event: a client that waits for its answer
    // sends nothing, and toggling the event would cost two epoll_ctl calls a request.
    // conn_readable stops reading once a whole frame beyond the current one is buffered.
}

bool Acceptor::handle_frame(Conn& c, std::string_view payload) {
    bert::Peek pk;
    if (!bert::peek(payload, pk)) {
        seg_.header().stats.protocol_errors.fetch_add(1, std::memory_order_relaxed);
        bert::Term t;
        bert::DecodeError err = bert::decode(payload, t);
        if (err)
            send_owned(c, error_frame(ErrorType::Protocol, 2, "unable to read data: " + err.message));
        else
            send_owned(c, error_frame(ErrorType::Protocol, 0,
                                      "not a BERT-RPC request: expected {call, Module, Function, Arguments}, "
                                      "{cast, ...} or {info, Command, Options}"));
        return true;
    }
    if (pk.kind == bert::Peek::Kind::Info) {
        // Infos are small and rare: decode them whole, so a malformed one is answered.
        bert::Term info;
        if (bert::DecodeError err = bert::decode(payload, info)) {
            seg_.header().stats.protocol_errors.fetch_add(1, std::memory_order_relaxed);
            send_owned(c, error_frame(ErrorType::Protocol, 2, "unable to read data: " + err.message));
            return true;
        }
        if (pk.module == "priority") {
            // {info, priority, [low]} (the spec) or {info, priority, low} (Ernie's README).
            const bert::Term& o = info[2];
            const bert::Term* v = o.is_list() && o.size() == 1 ? &o[0] : &o;
            if (v->is_atom("low")) c.high = false;
            else if (v->is_atom("high")) c.high = true;
        }
        return true;  // other info commands are ignored, as the spec says
    }
    c.cast = pk.kind == bert::Peek::Kind::Cast;
    RequestInfo& r = c.req;
    r.arrived_us = monotonic_us();
    r.started_us = r.arrived_us;
    r.high = c.high;
    c.high = true;  // priority applies to the next request only
    r.native = false;
    if (access_log_.enabled()) {
        r.arrived_wall_us = now_us();
        r.text.clear();
        bert::Term t;
        if (bert::decode(payload, t)) r.text = "<undecodable>";
        else bert::print(t, r.text, kLogRequestBytes);
    }
    if (pk.module == "__admin__") {
        count_request(-1, r, -1);
        handle_admin(c, pk, payload);
        log_request(r, -1);
        return true;
    }
    if (!c.from_link && !rt_.native_index.empty()) {
        auto nat = rt_.native_index.find(pk.module);
        if (nat != rt_.native_index.end()) {
            bool has_external = rt_.module_index.contains(pk.module);
            r.native = true;
            send_native(c, payload, nat->second, has_external);
            return false;  // the link answers, or the wait for it ends
        }
    }
    return route_external(c, payload);
}

// Serves a request on the external module of its name: a slot now, or a place in
// the module's queue. Returns what handle_frame returns.
bool Acceptor::route_external(Conn& c, std::string_view payload) {
    bert::Peek pk;
    bert::peek(payload, pk);
    RequestInfo& r = c.req;
    r.native = false;
    auto it = rt_.module_index.find(pk.module);
    if (it == rt_.module_index.end()) {
        std::string msg = "No such module '" + std::string(pk.module) + "'";
        seg_.header().stats.unknown_module.fetch_add(1, std::memory_order_relaxed);
        count_request(-1, r, int(ErrorType::Server));
        send_owned(c, error_frame(ErrorType::Server, 1, msg));
        log_request(r, int(ErrorType::Server));
        return true;
    }
    c.module = it->second;
    ModuleShared& ms = seg_.module(c.module);
    r.queued_high = ms.high.count;  // a racy read is fine for the log
    r.queued_low = ms.low.count;
    uint32_t slot = 0;
    switch (seg_.lease_or_enqueue(c.module, int32_t(index_), c.id, r.high, now_us(), slot)) {
        case Segment::Lease::Granted:
            start_on_slot(c, slot);
            return false;  // start_on_slot consumed the frame
        case Segment::Lease::Queued:
            c.state = Conn::State::Waiting;
            return false;
        case Segment::Lease::QueueFull:
            count_request(int32_t(c.module), r, int(ErrorType::Server));
            send_owned(c, error_frame(ErrorType::Server, 0,
                                      "queue of module '" + rt_.modules[c.module].name + "' is full (limit " +
                                          std::to_string(rt_.config.limits.max_queue) + ", limits.max_queue)"));
            log_request(r, int(ErrorType::Server));
            return true;
    }
    return true;
}

void Acceptor::handle_admin(Conn& c, const bert::Peek& pk, std::string_view payload) {
    if (!c.admin_ok) {
        send_owned(c, error_frame(ErrorType::Server, 0,
                                  "__admin__ calls are allowed only from loopback or admin_allow addresses"));
        return;
    }
    send_owned(c, admin::call(seg_, pk, payload));
}

// ---- talking to a worker ---------------------------------------------------------

void Acceptor::start_on_slot(Conn& c, uint32_t slot) {
    auto l = std::make_unique<Lease>();
    l->owner = this;
    l->slot = slot;
    l->fd = rt_.slots[slot].server_end.get();
    l->conn = &c;
    l->conn_id = c.id;
    l->module = c.module;
    l->cast = c.cast;
    const char* req = c.in.data() + c.in_start;
    size_t len = c.frame_len;
    ssize_t n = ::send(l->fd, req, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) n = 0;  // EAGAIN: the socket buffer is full; the rest goes out when writable
    if (size_t(n) < len) {
        // Keep our own copy: the connection's buffer moves on before the worker takes the rest.
        l->pending.assign(req + n, len - size_t(n));
        l->writing = true;
    }
    c.in_start += len;
    c.state = Conn::State::Busy;
    c.req.started_us = monotonic_us();
    l->ev = event_new(base_, l->fd, EV_READ | EV_PERSIST | (l->writing ? EV_WRITE : 0), on_lease_io, l.get());
    event_priority_set(l->ev, kWorkerPriority);
    event_add(l->ev, nullptr);
    const ModuleConfig* mc = rt_.modules[c.module].config;
    if (mc->timeout > 0) {
        l->timer = evtimer_new(base_, on_lease_timeout, l.get());
        timeval tv{time_t(mc->timeout), suseconds_t((mc->timeout - double(time_t(mc->timeout))) * 1e6)};
        evtimer_add(l->timer, &tv);
    }
    Lease& ref = *l;
    leases_[slot] = std::move(l);
    if (c.cast) {
        // A cast is answered at once; the worker still runs it on this slot, and
        // the cast is counted and logged when the worker is done.
        ref.conn = nullptr;
        ref.req = std::move(c.req);
        send(c, noreply_frame());
        conn_ready(c);
    }
}

void Acceptor::on_lease_io(evutil_socket_t, short what, void* arg) {
    auto* l = static_cast<Lease*>(arg);
    l->owner->graveyard_.clear();
    l->owner->lease_io(*l, what);
}

void Acceptor::lease_io(Lease& l, short what) {
    if ((what & EV_WRITE) && l.writing) {
        ssize_t n = ::send(l.fd, l.pending.data() + l.pending_off, l.pending.size() - l.pending_off,
                           MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) l.pending_off += size_t(n);
        if (l.pending_off == l.pending.size()) {
            l.writing = false;
            std::string().swap(l.pending);
            event_del(l.ev);
            event_assign(l.ev, base_, l.fd, EV_READ | EV_PERSIST, on_lease_io, &l);
            event_priority_set(l.ev, kWorkerPriority);
            event_add(l.ev, nullptr);
        }
    }
    if (!(what & EV_READ)) return;
    bert::FrameScan fs;
    for (;;) {
        ssize_t n = ::recv(l.fd, read_buf_.data(), read_buf_.size(), MSG_DONTWAIT);
        if (n <= 0) {
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
            fail_lease(l, "lost the connection to the handler worker");
            return;
        }
        l.reply.append(read_buf_.data(), size_t(n));
        fs = bert::scan_frame(l.reply, max_frame_);
        if (fs.state == bert::FrameScan::State::TooLarge) {
            fail_lease(l, "the handler's answer is over the limit of " + std::to_string(max_frame_) +
                              " bytes (limits.max_frame)");
            return;
        }
        if (fs.state == bert::FrameScan::State::Complete) break;
        if (l.reply.size() >= bert::kFrameHeader && l.reply.capacity() < bert::kFrameHeader + fs.length)
            l.reply.reserve(bert::kFrameHeader + fs.length);
    }
    size_t total = bert::kFrameHeader + fs.length;
    std::string_view payload(l.reply.data() + bert::kFrameHeader, fs.length);
    bool ok = fs.length > 0 && static_cast<unsigned char>(payload[0]) == bert::kVersion;
    if (l.reply.size() > total) ok = false;  // a worker that says more than one answer is out of step
    if (!ok) {
        fail_lease(l, "the handler sent an answer that is not a BERT term");
        return;
    }
    finish_lease(l, payload);
}

void Acceptor::on_lease_timeout(evutil_socket_t, short, void* arg) {
    auto* l = static_cast<Lease*>(arg);
    Acceptor* self = l->owner;
    self->graveyard_.clear();
    const ModuleConfig* mc = self->rt_.modules[l->module].config;
    char secs[32];
    snprintf(secs, sizeof secs, "%g", mc->timeout);
    self->fail_lease(*l, "the handler for '" + mc->name + "' did not answer within " + secs + " s (timeout)");
}

// The worker can no longer be trusted: answer the client, and have the master replace it.
void Acceptor::fail_lease(Lease& l, const std::string& why) {
    uint32_t slot = l.slot;
    Slot& s = seg_.slot(slot);
    int32_t pid = s.pid.load();
    s.retire.store(1);
    if (pid > 0) kill(pid, SIGKILL);
    log::warn("worker of '%s' (slot %u): %s", rt_.modules[l.module].name.c_str(), slot, why.c_str());
    Conn* c = l.conn;
    uint32_t module = l.module;
    constexpr int et = int(ErrorType::Server);
    if (l.cast) {
        count_request(int32_t(module), l.req, et);
        log_request(l.req, et);
    }
    leases_[slot].reset();
    seg_.mark_reaping(slot);
    poke_master();
    if (c) {
        count_request(int32_t(module), c->req, et);
        send_owned(*c, error_frame(ErrorType::Server, 0, why));
        log_request(c->req, et);
        conn_ready(*c);
        if (!c->dead) after_input(*c);
    }
}

void Acceptor::finish_lease(Lease& l, std::string_view payload) {
    Conn* c = l.conn;
    uint32_t slot = l.slot;
    int et = answer_error_type(payload);
    if (l.cast) {
        count_request(int32_t(l.module), l.req, et);
        log_request(l.req, et);
    }
    // The reply buffer holds exactly the frame: it goes to the connection without a copy.
    std::string frame = std::move(l.reply);
    if (c) count_request(int32_t(l.module), c->req, et);  // stats never lag a client
    seg_.slot(slot).served.fetch_add(1, std::memory_order_relaxed);
    leases_[slot].reset();
    // The worker goes back (or to the next waiter) before the answer leaves, so the
    // client's next request finds it free.
    give_back(slot);
    if (c) {
        send_owned(*c, std::move(frame));
        log_request(c->req, et);
        conn_ready(*c);
        if (!c->dead) after_input(*c);
    }
}

void Acceptor::give_back(uint32_t slot) {
    int32_t next = seg_.release(slot);
    if (next == -2) poke_master();
    else if (next == int32_t(index_)) take_handoff(slot);
    else if (next >= 0) wake(next);
}

// A slot was passed to this acceptor for one of its waiting connections.
void Acceptor::take_handoff(uint32_t slot) {
    uint64_t conn_id;
    if (!seg_.owned_by(slot, int32_t(index_), conn_id)) return;
    auto it = conns_.find(conn_id);
    if (it != conns_.end() && !it->second->dead && it->second->state == Conn::State::Waiting) {
        Conn& c = *it->second;
        start_on_slot(c, slot);
        if (c.state == Conn::State::Idle) after_input(c);
        return;
    }
    give_back(slot);  // the client left while it waited
}

void Acceptor::scan_slots() {
    for (uint32_t i = 0; i < seg_.nslots(); ++i) {
        Slot& s = seg_.slot(i);
        uint32_t st = s.state.load(std::memory_order_acquire);
        if (leases_[i]) {
            if (st == uint32_t(SlotState::Dead)) {
                Lease& l = *leases_[i];
                std::string name = rt_.modules[l.module].name;
                fail_lease(l, "the handler worker for '" + name + "' exited while serving this request");
            }
        } else if (st == uint32_t(SlotState::Leased) && s.owner.load(std::memory_order_relaxed) == int32_t(index_)) {
            take_handoff(i);
        } else if (st == uint32_t(SlotState::Dead) &&
                   s.owner.load(std::memory_order_relaxed) == int32_t(index_)) {
            retry_handoff(i);
        }
    }
}

// A slot was handed to one of our waiting connections, but its worker died before we took
// it. The request never reached that worker, so it does not fail: it waits for another slot,
// and the master replaces the worker.
void Acceptor::retry_handoff(uint32_t dead_slot) {
    uint64_t conn_id = seg_.slot(dead_slot).conn.load();
    seg_.mark_reaping(dead_slot);
    poke_master();
    auto it = conns_.find(conn_id);
    if (it == conns_.end() || it->second->dead || it->second->state != Conn::State::Waiting) return;
    Conn& c = *it->second;
    uint32_t slot = 0;
    switch (seg_.lease_or_enqueue(c.module, int32_t(index_), c.id, c.req.high, now_us(), slot)) {
        case Segment::Lease::Granted:
            start_on_slot(c, slot);
            if (c.state == Conn::State::Idle) after_input(c);
            return;
        case Segment::Lease::Queued:
            return;
        case Segment::Lease::QueueFull:
            count_request(int32_t(c.module), c.req, int(ErrorType::Server));
            send_owned(c, error_frame(ErrorType::Server, 0,
                                      "queue of module '" + rt_.modules[c.module].name + "' is full (limit " +
                                          std::to_string(rt_.config.limits.max_queue) +
                                          ", limits.max_queue)"));
            log_request(c.req, int(ErrorType::Server));
            c.in_start += c.frame_len;
            conn_ready(c);
            if (!c.dead) after_input(c);
            return;
    }
}

void Acceptor::on_wake(evutil_socket_t fd, short, void* arg) {
    uint64_t v;
    [[maybe_unused]] ssize_t n = ::read(fd, &v, sizeof v);
    auto* self = static_cast<Acceptor*>(arg);
    self->graveyard_.clear();
    self->scan_slots();
}

void Acceptor::wake(int32_t acceptor) {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(rt_.acceptor_wake[size_t(acceptor)].get(), &one, sizeof one);
}

void Acceptor::poke_master() {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(rt_.master_wake.get(), &one, sizeof one);
}

// ---- finishing requests and writing -----------------------------------------------

// Counts a finished request (module -1: none, e.g. unknown), before its answer is sent.
void Acceptor::count_request(int32_t module, RequestInfo& r, int error_type) {
    r.finished_us = monotonic_us();
    if (module < 0) return;
    ModuleStats& st = seg_.module(uint32_t(module)).stats;
    st.requests.fetch_add(1, std::memory_order_relaxed);
    if (error_type >= 0) st.errors[error_type].fetch_add(1, std::memory_order_relaxed);
    st.latency.record(uint64_t(r.finished_us - r.arrived_us));
}

// Writes a counted request's access-log line, after its answer is on its way.
void Acceptor::log_request(const RequestInfo& r, int error_type) {
    if (access_log_.enabled()) {
        int64_t done = r.finished_us;
        AccessRecord rec;
        rec.ok = error_type < 0;
        rec.arrived_us = r.arrived_wall_us;
        rec.wait_us = r.started_us - r.arrived_us;
        rec.run_us = done - r.started_us;
        rec.queued_high = r.queued_high;
        rec.queued_low = r.queued_low;
        rec.native = r.native;
        rec.high = r.high;
        rec.request = r.text;
        access_log_.write(rec);
    }
}

// The connection may read its next request.
void Acceptor::conn_ready(Conn& c) {
    c.state = Conn::State::Idle;
    c.last_active_us = monotonic_us();
    if (!c.eof && !c.closing && !c.dead) set_reading(c, true);
}

void Acceptor::send(Conn& c, std::string_view frame) {
    if (c.dead) return;
    if (c.out_start == c.out.size()) {
        c.out.clear();
        c.out_start = 0;
    }
    c.out.append(frame);
    flush(c);
}

void Acceptor::send_owned(Conn& c, std::string&& frame) {
    if (c.dead) return;
    if (c.out_start == c.out.size()) {
        c.out = std::move(frame);
        c.out_start = 0;
        flush(c);
    } else {
        send(c, frame);
    }
}

void Acceptor::flush(Conn& c) {
    while (c.out_start < c.out.size()) {
        ssize_t n = ::send(c.fd.get(), c.out.data() + c.out_start, c.out.size() - c.out_start, MSG_NOSIGNAL);
        if (n > 0) {
            c.out_start += size_t(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            event_add(c.wev, nullptr);
            return;
        }
        close_conn(c);  // the client is gone
        return;
    }
    event_del(c.wev);
    if (c.out.capacity() > kKeepBuffer) std::string().swap(c.out);  // do not keep a big answer's buffer
    c.out_start = c.out.size();
    if (c.closing || (c.eof && c.state == Conn::State::Idle && c.in_start == c.in.size())) {
        close_conn(c);
    } else if (c.out_paused) {
        c.out_paused = false;
        if (!c.eof) set_reading(c, true);
        after_input(c);
    }
}

void Acceptor::on_conn_write(evutil_socket_t, short, void* arg) {
    auto* c = static_cast<Conn*>(arg);
    Acceptor* self = c->owner;
    self->graveyard_.clear();
    self->flush(*c);
    self->maybe_exit();
}

// Closes now, frees later: callers up the stack may still hold `c`.
void Acceptor::close_conn(Conn& c) {
    if (c.dead) return;
    c.dead = true;
    uint64_t id = c.id;
    // A request on a worker outlives its client; the answer is read and dropped.
    for (auto& l : leases_)
        if (l && l->conn == &c) l->conn = nullptr;
    if (c.rev) event_del(c.rev);
    if (c.wev) event_del(c.wev);
    c.fd.reset();
    if (!c.handed_over) {
        GlobalStats& gs = seg_.header().stats;
        gs.connections_active.fetch_sub(1, std::memory_order_relaxed);
        gs.connections_completed.fetch_add(1, std::memory_order_relaxed);
        seg_.acceptor(index_).connections.fetch_sub(1, std::memory_order_relaxed);
    }
    auto it = conns_.find(id);
    graveyard_.push_back(std::move(it->second));
    conns_.erase(it);
}

// ---- housekeeping -------------------------------------------------------------------

void Acceptor::on_tick(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<Acceptor*>(arg);
    self->graveyard_.clear();
    int64_t now = monotonic_us();
    auto idle_limit = int64_t(self->rt_.config.limits.idle_timeout * 1e6);
    std::vector<Conn*> idle;
    for (auto& [id, c] : self->conns_) {
        if (c->state != Conn::State::Idle) continue;
        if (idle_limit > 0 && now - c->last_active_us > idle_limit) idle.push_back(c.get());
        bool rested = now - c->last_active_us > kShrinkIdleUs;
        if (rested && c->in_start == c->in.size() && c->in.capacity() > kKeepBuffer) {
            std::string().swap(c->in);
            c->in_start = 0;
        }
    }
    for (Conn* c : idle) self->close_conn(*c);
    self->access_log_.reopen_if_moved();
    if (!self->rt_.link_address.empty() && !self->link_fd_ && !self->stopping_) self->link_connect();
    // A wake-up may have been lost if an acceptor died between popping a waiter and waking us.
    self->scan_slots();
    self->maybe_exit();
}

void Acceptor::on_signal(evutil_socket_t sig, short, void* arg) {
    auto* self = static_cast<Acceptor*>(arg);
    if (sig == SIGUSR1) {
        self->access_log_.reopen();
        log::reopen();
        return;
    }
    self->begin_shutdown(sig == SIGQUIT);
}

void Acceptor::begin_shutdown(bool graceful) {
    if (!graceful) {
        event_base_loopbreak(base_);
        return;
    }
    stopping_ = true;
    event_del(accept_ev_);
    retry_ev_ = evtimer_new(base_, [](evutil_socket_t, short, void* arg) {
        static_cast<Acceptor*>(arg)->maybe_exit();
    }, this);
    maybe_exit();
}

// While stopping: idle connections go to the successor (or are closed when there is
// none), and the loop ends once no request is in flight.
void Acceptor::maybe_exit() {
    if (!stopping_) return;
    hand_over_idle();
    if (seg_.header().successor.load() == 0) {
        std::vector<Conn*> idle;
        for (auto& [id, c] : conns_)
            if (!c->dead && c->state == Conn::State::Idle && c->out_start == c->out.size()) idle.push_back(c.get());
        for (Conn* c : idle) close_conn(*c);
    }
    // Leases of casts outlive their connections: their workers are still working.
    bool busy = !conns_.empty() || !native_.empty() || !link_parked_.empty();
    for (auto& l : leases_)
        if (l) busy = true;
    if (!busy) event_base_loopbreak(base_);
}

}  // namespace bertd
