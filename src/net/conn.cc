// conn.cc: reading into and writing from a connection's two byte queues. The buffer
// grows with what arrives, never with what a header announces, and at most one
// whole frame beyond the one in flight is buffered; a client that does not read its
// answers stops being served. Nothing here decodes or routes: whole frames go to
// RequestPath::serve.
#include "net/conn.h"

#include <errno.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "bert/frame.h"
#include "io/address.h"
#include "io/clock.h"
#include "io/unix.h"
#include "log/log.h"
#include "net/acceptor.h"
#include "net/answers.h"
#include "net/leases.h"
#include "net/request.h"

namespace bertd {

namespace {
constexpr int kReadRounds = 16;  // at most 16 scratch buffers (1 MiB) from one connection per wake-up
// An answer's buffer above this size is freed once sent, so a connection holds no memory of
// its largest answer.
constexpr size_t kKeepBuffer = 4096;
// Past this much of one frame, the input buffer grows ahead of what arrives, to kGrowAhead
// times what it holds (or the whole frame, when less): a big frame is copied three times, not
// once per doubling, and the room taken stays within kGrowAhead times the bytes charged to
// limits.max_buffered. A header alone reserves nothing, and a header announcing 32 MiB with
// 1 MiB behind it reserves 4 MiB, not 32 (many such connections would take their frames'
// room, uncounted).
constexpr size_t kGrowWhole = 1u << 20;
constexpr size_t kGrowAhead = 4;
// After this much rest both queues are freed whole (ByteQueue::release): a busy connection
// keeps its buffers, an idle one holds none.
constexpr int64_t kShrinkIdleUs = 1'000'000;
// A streamed request's chunks wait in the connection's queue for the worker to take them:
// past this much, the client is not read until the worker has taken some (Leases::relay_some).
constexpr size_t kStreamInHighWater = 1u << 20;
constexpr size_t kStreamRead = 256u << 10;  // one read of a streamed request's chunks
constexpr uint32_t kClientLines = 32;  // error-log lines about clients, per 10 s and acceptor

// limits.max_buffered when the config leaves it to the machine: a quarter of the RAM,
// shared by the acceptors.
size_t default_budget(size_t acceptors) {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    size_t ram = pages > 0 && page > 0 ? size_t(pages) * size_t(page) : size_t(4) << 30;
    return ram / 4 / std::max<size_t>(acceptors, 1);
}

}  // namespace

// ---- PeerAddress -----------------------------------------------------------------------

void PeerAddress::set(const sockaddr_storage& s) {
    bytes = sockaddr_in6{};
    size_t n = s.ss_family == AF_INET6 ? sizeof(sockaddr_in6)
               : s.ss_family == AF_INET ? sizeof(sockaddr_in)
                                        : sizeof(sa_family_t);
    memcpy(&bytes, &s, n);
}

sockaddr_storage PeerAddress::get() const {
    sockaddr_storage s{};
    memcpy(&s, &bytes, sizeof bytes);
    return s;
}

// Made when it is needed (a log line) rather than kept by every idle connection.
std::string Conn::client_text() const { return endpoint_text(client.get()); }

// ---- ByteQueue -------------------------------------------------------------------------

void ByteQueue::append(std::string_view s) {
    Block& b = block();
    if (b.buf.size() - b.end < s.size()) b.buf.resize(b.end);  // the room is too small: grow as a string does
    if (b.buf.size() == b.end) {
        if (b.buf.capacity() - b.end < s.size()) drop_room();  // a new buffer: the spare's room goes
        b.buf.append(s);
    } else {
        std::memcpy(b.buf.data() + b.end, s.data(), s.size());
    }
    b.end += s.size();
    filled(s.size());
}

void ByteQueue::append(std::string&& s) {
    if (!empty()) {
        append(std::string_view(s));
        return;
    }
    drop_room();
    charge(s.size());
    Block& b = block();
    b.buf = std::move(s);
    b.start = 0;
    b.end = b.buf.size();
}

char* ByteQueue::tail(size_t n) {
    Block& b = block();
    if (b.buf.capacity() < b.end + n) drop_room();  // a new buffer: the spare's room goes
    if (b.buf.size() - b.end < n) b.buf.resize(b.end + n);  // cleared once; kept as room after
    return b.buf.data() + b.end;
}

void ByteQueue::consume(size_t n) {
    n = std::min(n, size());
    if (n == 0) return;
    discharge(n);
    b_->start += n;
    if (b_->start == b_->end) b_->start = b_->end = 0;
}

void ByteQueue::clear() { drop_all(); }

std::string ByteQueue::drop_all() {
    drop_room();
    discharge(size());
    std::string buf = b_ ? std::move(b_->buf) : std::string();
    b_.reset();
    return buf;
}

void ByteQueue::expect(size_t bytes, SpareBuffers* spares, bool only_spare) {
    Block& b = block();
    if (b.buf.capacity() >= b.start + bytes) return;
    size_t before = b.buf.capacity();
    bool spare = spares && spares->reserve(b.buf, b.start + bytes, monotonic_us(), only_spare);
    if (!spares) b.buf.reserve(b.start + bytes);
    if (b.buf.capacity() == before) return;
    drop_room();  // a fresh buffer's room is not memory in use until written; a spare's is
    if (spare) charge(b.room = b.buf.capacity() - b.end);
}

Flush ByteQueue::flush_to(int fd) {
    if (empty()) return Flush::Done;
    size_t sent = 0;
    Flush f = send_some(fd, {b_->buf.data() + b_->start, size()}, sent);
    consume(sent);
    return f;
}

void ByteQueue::compact() {
    if (b_ && b_->start > (1u << 20)) {  // (an empty queue starts at 0 already)
        std::memmove(b_->buf.data(), b_->buf.data() + b_->start, b_->end - b_->start);
        b_->end -= b_->start;
        b_->start = 0;
    }
}

std::string ByteQueue::shed(size_t keep) {
    if (!b_ || !empty() || b_->buf.capacity() <= keep) return {};
    drop_room();
    b_->start = b_->end = 0;
    return std::exchange(b_->buf, std::string());
}

// ---- the table -------------------------------------------------------------------------

Connections::Connections(Acceptor& a) : acc_(a) {
    const Config& config = a.rt().config;
    budget_ = config.limits.max_buffered ? config.limits.max_buffered
                                         : default_budget(size_t(std::max(config.acceptors, 1)));
    // Closed connections are freed here, in a callback of its own: nothing up the stack
    // can still hold one then. It runs at the clients' priority, in the same loop turn.
    reap_ev_ = make_event(a.base(), -1, 0, on_reap, this);
    kick_ev_ = make_event(a.base(), -1, 0, on_kick, this);
}

Connections::~Connections() {
    slots_.clear();
    graveyard_.clear();
}

Conn& Connections::add(int fd, const sockaddr_storage& peer) {
    auto c = std::make_unique<Conn>();
    c->owner = &acc_;
    uint32_t slot = uint32_t(slots_.size());
    if (!free_.empty()) {
        slot = free_.back();
        free_.pop_back();
    } else {
        slots_.emplace_back();
    }
    c->id = uint64_t(++added_) << 32 | slot;
    c->fd.reset(fd);
    c->in.charge_to(&buffered_);
    c->out.charge_to(&buffered_);
    c->client.set(peer);
    c->admin_ok = is_loopback(peer) || is_unix(peer);  // a unix socket's file mode says who connects
    if (!c->admin_ok) {
        std::string p = address_text(peer);
        for (const auto& a : acc_.rt().config.admin_allow)
            if (a == p) c->admin_ok = true;
    }
    c->last_active_us = monotonic_us();
    // Edge-triggered: a read that stops before EAGAIN (a short read drained the socket; any
    // other stop is kicked or waits for set_reading) and a write that blocked wait for the
    // next edge, and pausing either direction costs no system call.
    c->io.assign(acc_.base(), fd, EV_READ | EV_WRITE | EV_CLOSED | EV_PERSIST | EV_ET, on_io, c.get());
    event_add(c->io.get(), nullptr);
    acc_.seg().header().stats.connections_active.fetch_add(1, std::memory_order_relaxed);
    acc_.seg().acceptor(acc_.index()).connections.fetch_add(1, std::memory_order_relaxed);
    Conn& ref = *c;
    slots_[slot] = std::move(c);
    ++live_;
    ref.reading = true;
    return ref;
}

Conn* Connections::find(uint64_t id) {
    uint32_t slot = uint32_t(id);
    Conn* c = slot < slots_.size() ? slots_[slot].get() : nullptr;
    return c && c->id == id && !c->dead ? c : nullptr;
}

void Connections::on_io(evutil_socket_t, short what, void* arg) {
    auto* c = static_cast<Conn*>(arg);
    Acceptor& a = *c->owner;
    if ((what & EV_WRITE) && c->writing) {
        a.conns().flush(*c);
        a.maybe_exit();
    }
    // A shut-down side comes with the bytes before it in one edge: only reading to the end shows it.
    if (what & EV_CLOSED) c->hup = true;
    if ((what & (EV_READ | EV_CLOSED)) && c->reading && !c->dead) a.conns().read(*c);
}

void Connections::kick(Conn& c) {
    kicks_.push_back(c.id);
    event_active(kick_ev_.get(), EV_TIMEOUT, 0);
}

void Connections::on_kick(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<Connections*>(arg);
    for (uint64_t id : std::exchange(self->kicks_, {}))
        if (Conn* c = self->find(id); c && c->reading) self->read(*c);
}

void Connections::on_reap(evutil_socket_t, short, void* arg) {
    static_cast<Connections*>(arg)->graveyard_.clear();
}

void Connections::set_reading(Conn& c, bool on) {
    if (on == c.reading) return;
    c.reading = on;
    if (on) kick(c);  // what arrived while it was off came with an edge that went unread
}

// One read from the client into c.in. A streamed request's chunks are read straight into the
// queue the worker is written from (no copy between), in bigger reads; other bytes through the
// acceptor's buffer, so that idle connections keep no room. `want`: what the read asked for.
ssize_t Connections::receive(Conn& c, bool relaying, size_t& want) {
    std::string& buf = acc_.scratch();
    want = relaying ? kStreamRead : buf.size();
    char* into = relaying ? c.in.tail(want) : buf.data();
    ssize_t n = ::recv(c.fd.get(), into, want, 0);
    if (n <= 0) return n;
    if (relaying) {
        c.in.commit(size_t(n));
        return n;
    }
    c.in.append(std::string_view(buf.data(), size_t(n)));
    // A frame that has come this far is really coming: room ahead for more of it. Before
    // that, a big frame's room comes from a spare buffer if there is one (no new memory for
    // bytes a client may never send, and none of a fresh buffer's page faults).
    if (c.in.size() >= bert::kFrameHeader && c.in.capacity() < SpareBuffers::kBig + bert::kFrameHeader) {
        bert::FrameScan fs = bert::scan_frame(c.in.view(), acc_.max_frame());
        if (fs.state == bert::FrameScan::State::NeedMore && fs.length >= SpareBuffers::kBig)
            c.in.expect(bert::kFrameHeader + fs.length, &acc_.spares(), true);
    }
    if (c.in.size() >= kGrowWhole) {
        bert::FrameScan fs = bert::scan_frame(c.in.view(), acc_.max_frame());
        if (fs.state == bert::FrameScan::State::NeedMore)
            c.in.expect(std::min<size_t>(bert::kFrameHeader + fs.length, kGrowAhead * c.in.size()), &acc_.spares());
    }
    return n;
}

void Connections::read(Conn& c) {
    if (over_budget()) {
        relieve();  // may refuse this very connection's unfinished frame
        if (c.dead || c.closing) return;
        if (over_budget()) {
            pause(c);
            return;
        }
    }
    c.in.compact();  // requests find their frame from the queue's front, so moving it is safe
    bool relaying = c.request && (c.request->in_stream == Request::InStream::Waiting ||
                                  c.request->in_stream == Request::InStream::Relaying);
    size_t limit = relaying ? kStreamInHighWater : acc_.max_frame() + 2 * bert::kFrameHeader;
    bool got = false;
    for (int round = 0; round < kReadRounds; ++round) {
        // Bound what one connection buffers: one whole frame beyond the one in flight, or a
        // streamed request's chunks up to the high-water mark.
        if (c.in.size() > limit) {
            set_reading(c, false);
            break;
        }
        if (round == kReadRounds - 1) {
            kick(c);  // the others' turn first; on with this one in a moment
            break;
        }
        if (over_budget()) {
            pause(c);
            break;
        }
        size_t want = 0;
        ssize_t n = receive(c, relaying, want);
        if (n > 0) {
            got = true;
            if (size_t(n) < want && !c.hup) break;  // drained: the next bytes bring an edge
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) break;
        // EOF or error: answer what is already here, then close.
        c.eof = true;
        set_reading(c, false);
        if (n < 0) {
            close(c);
            return;
        }
        break;
    }
    if (!got && !c.eof) return;
    if (got) c.last_active_us = monotonic_us();
    serve(c);
    if (over_budget()) relieve();
}

void Connections::resume(Conn& c) {
    if (!paused_.empty() && held() < resume_mark()) resume_paused();
    if (c.dead) return;
    c.last_active_us = monotonic_us();
    if (c.serving) return;  // serve()'s own loop goes on
    if (!c.eof && !c.closing && !c.out_paused) set_reading(c, true);
    serve(c);
}

void Connections::serve(Conn& c) {
    acc_.requests().serve(c);
    if (!c.dead && c.eof && c.idle() && c.out.empty()) close(c);
    acc_.maybe_exit();
}

void Connections::send(Conn& c, std::string&& frame) {
    if (c.dead) return;
    c.out.append(std::move(frame));
    flush(c);
}

void Connections::relay(Conn& c, std::string_view a, std::string_view b) {
    if (c.dead) return;
    bool failed = false;
    if (!c.writing) {  // else the socket is full: the next edge flushes the queue
        std::string_view q = c.out.view();
        iovec iov[3] = {{const_cast<char*>(q.data()), q.size()},
                        {const_cast<char*>(a.data()), a.size()},
                        {const_cast<char*>(b.data()), b.size()}};
        msghdr m{};
        m.msg_iov = iov;
        m.msg_iovlen = 3;
        while (iov[0].iov_len + iov[1].iov_len + iov[2].iov_len > 0) {
            ssize_t n = ::sendmsg(c.fd.get(), &m, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) {
                c.writing = errno == EAGAIN;
                failed = !c.writing;
                break;
            }
            for (auto& v : iov) {
                size_t take = std::min(size_t(n), v.iov_len);
                v.iov_base = static_cast<char*>(v.iov_base) + take;
                v.iov_len -= take;
                n -= ssize_t(take);
            }
        }
        c.out.consume(q.size() - iov[0].iov_len);
        a = a.substr(a.size() - iov[1].iov_len);
        b = b.substr(b.size() - iov[2].iov_len);
    }
    if (failed) {
        close(c);  // the client is gone
        return;
    }
    c.out.append(a);
    c.out.append(b);
    if (!c.writing) flush(c);  // all of it went: what a finished flush does (nothing is written)
}

void Connections::flush(Conn& c) {
    if (c.dead) return;
    // A relayed answer's bytes in its lease's pipe go first: the rest was queued after them.
    bool relaying = c.request && c.request->stage == Request::Stage::OnSlot;
    Flush f = relaying ? acc_.leases().flush_pipe(*c.request) : Flush::Done;
    if (f == Flush::Done) f = c.out.flush_to(c.fd.get());
    switch (f) {
        case Flush::Blocked: c.writing = true; return;  // on at the next edge
        case Flush::Failed: close(c); return;           // the client is gone
        case Flush::Done: break;
    }
    c.writing = false;
    // A big answer's buffer goes to the spares, for the next big answer.
    if (c.out.capacity() > kKeepBuffer) acc_.spares().give(c.out.shed(kKeepBuffer), monotonic_us());
    // A streamed answer waits for its client to read: it has.
    if (c.request && c.request->stage == Request::Stage::OnSlot) acc_.leases().drained(*c.request);
    if (c.dead) return;
    if (c.closing || (c.eof && c.idle() && c.in.empty())) {
        close(c);
    } else if (c.out_paused) {
        c.out_paused = false;
        if (!c.eof) set_reading(c, true);
        serve(c);
    }
}

void Connections::close(Conn& c) {
    if (c.dead) return;
    c.dead = true;
    // A request on a worker or at the link outlives its client: its answer is dropped.
    if (c.request) {
        say(c, false, "went away with a request in flight; its answer is dropped");
        acc_.requests().orphan(*c.request);
    }
    event_del(c.io.get());
    c.fd.reset();
    int64_t now = monotonic_us();
    acc_.spares().give(c.in.drop_all(), now);  // a big request's or answer's buffer, for the next
    acc_.spares().give(c.out.drop_all(), now);
    if (!c.handed_over) {
        GlobalStats& gs = acc_.seg().header().stats;
        gs.connections_active.fetch_sub(1, std::memory_order_relaxed);
        gs.connections_completed.fetch_add(1, std::memory_order_relaxed);
        acc_.seg().acceptor(acc_.index()).connections.fetch_sub(1, std::memory_order_relaxed);
    }
    uint32_t slot = uint32_t(c.id);
    graveyard_.push_back(std::move(slots_[slot]));
    free_.push_back(slot);
    --live_;
    event_active(reap_ev_.get(), EV_TIMEOUT, 0);
}

// ---- the memory budget ---------------------------------------------------------------

void Connections::pause(Conn& c) {
    if (!c.reading) return;
    set_reading(c, false);
    paused_.push_back(c.id);
}

size_t Connections::held() const { return buffered_ + acc_.spares().bytes(); }

// Unfinished frames can only grow: refusing the ones that have waited longest is what
// gives memory back (complete frames are served and go by themselves). The spares go first.
void Connections::relieve() {
    acc_.spares().clear();
    if (held() < resume_mark()) {
        resume_paused();
        return;
    }
    std::vector<Conn*> partial;
    each([&](Conn& c) {
        if (c.idle() && c.partial_since_us) partial.push_back(&c);
    });
    std::sort(partial.begin(), partial.end(),
              [](const Conn* a, const Conn* b) { return a->partial_since_us < b->partial_since_us; });
    size_t target = resume_mark();
    uint64_t refused = 0;
    for (Conn* c : partial) {
        if (held() < target) break;
        size_t held = c->in.size();
        c->closing = true;
        set_reading(*c, false);
        c->in.consume(held);
        c->partial_since_us = 0;
        std::string why = "frame refused after " + std::to_string(held) +
                          " bytes: the server holds too much for its clients (limits.max_buffered " +
                          std::to_string(budget_) + " bytes)";
        say(*c, true, why);
        send(*c, error_frame(ErrorType::Protocol, 2, std::move(why)));
        ++refused;
    }
    if (refused) {
        acc_.seg().header().stats.protocol_errors.fetch_add(refused, std::memory_order_relaxed);
        log::warn("over limits.max_buffered (%zu bytes): refused %llu unfinished frames", budget_,
                  (unsigned long long)refused);
    }
    if (held() < resume_mark()) resume_paused();
}

void Connections::resume_paused() {
    for (uint64_t id : std::exchange(paused_, {})) {
        Conn* c = find(id);
        if (!c || c->reading || c->eof || c->closing || c->out_paused) continue;
        set_reading(*c, true);  // kicks it: it may hold bytes already
    }
}

void Connections::sweep(int64_t now, int64_t idle_limit_us) {
    std::vector<Conn*> expired;
    each([&](Conn& c) {
        if (!c.idle()) return;
        if (idle_limit_us > 0 && now - c.last_active_us > idle_limit_us) expired.push_back(&c);
        if (now - c.last_active_us > kShrinkIdleUs) {
            c.in.release();
            c.out.release();
        }
    });
    for (Conn* c : expired) {
        if (c->partial_since_us)
            say(*c, true,
                "closed after limits.idle_timeout inside a frame (" + std::to_string(c->in.size()) +
                    " bytes)");
        else
            say(*c, false, "closed after limits.idle_timeout without a request");
        close(*c);
    }
}

void Connections::say(const Conn& c, bool warning, const std::string& what) {
    if (!log::enabled(warning ? log::Warn : log::Info)) return;
    int64_t now = monotonic_us();
    if (now - said_window_us_ >= 10'000'000) said_window_us_ = now, said_ = 0;
    if (said_ >= kClientLines) {
        ++unsaid_;
        return;
    }
    ++said_;
    std::string more =
        unsaid_ ? " (" + std::to_string(std::exchange(unsaid_, 0)) + " such lines left out before)" : "";
    std::string who = c.client_text();
    if (warning)
        log::warn("client %s: %s%s", who.c_str(), what.c_str(), more.c_str());
    else
        log::info("client %s: %s%s", who.c_str(), what.c_str(), more.c_str());
}

}  // namespace bertd
