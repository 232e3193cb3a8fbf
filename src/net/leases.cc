// leases.cc: a request's life on a worker slot. The request is written from the
// connection's queue as the socket takes it (no copy while the client waits); the
// answer is read into a buffer that becomes the client's output as it is; the slot
// goes back (or to the next waiter) before the answer leaves, so the client's next
// request finds it free; after the turn's client reads when it would go to another
// acceptor (finish). Worker priority: these events run before new clients are read.
#include "net/leases.h"

#include <errno.h>
#include <signal.h>
#include <sys/socket.h>

#include "bert/frame.h"
#include "core/process.h"
#include "io/clock.h"
#include "io/unix.h"
#include "log/log.h"
#include "net/acceptor.h"
#include "net/conn.h"
#include "net/infos.h"
#include "net/request.h"

namespace bertd {

Leases::Leases(Acceptor& a) : acc_(a) {
    slots_.resize(a.seg().nslots());
    // At the clients' priority, activated after this turn's client events: it runs after them.
    deferred_ev_ = make_event(a.base(), -1, 0, on_deferred, this);
}

Leases::~Leases() = default;

size_t Leases::held() const {
    size_t n = deferred_.size();  // still leased: this acceptor must pass them on before it exits
    for (const auto& l : slots_) n += l && l->req;
    return n;
}

Leases::Lease& Leases::lease_of(uint32_t slot) {
    auto& p = slots_[slot];
    if (!p) {
        p = std::make_unique<Lease>();
        p->owner = this;
        p->slot = slot;
        p->fd = acc_.rt().slots[slot].server_end.get();
        p->io = make_event(acc_.base(), p->fd, EV_READ | EV_PERSIST, on_io, p.get());
        p->timer = make_event(acc_.base(), -1, 0, on_timeout, p.get());
    }
    return *p;
}

void Leases::start(Request& r) {
    uint32_t module = r.route.module;
    ModuleShared& ms = acc_.seg().module(module);
    r.queued_high = ms.high.count;  // a racy read is fine for the log
    r.queued_low = ms.low.count;
    uint32_t slot = 0;
    // While the master says the module's workers cannot start, a request takes a worker
    // that is up or is refused with the reason; it does not wait for one that never comes.
    bool failing = acc_.seg().module_failing(module);
    switch (acc_.seg().lease_or_enqueue(module, int32_t(acc_.index()), r.id, r.high, now_us(), slot, !failing)) {
        case Segment::Grant::Leased: begin(r, slot); return;
        case Segment::Grant::Queued:
            r.stage = Request::Stage::Queued;
            // A cast is answered when it is queued, as when it is leased: {noreply} means
            // "it will run", not "it ran". It waits in the queue with its own copy of the frame.
            // Over the memory budget it keeps its client waiting instead (no copy).
            if (r.cast && r.conn && !r.stream_in && !acc_.conns().over_budget()) acc_.requests().answer_cast(r);
            return;
        case Segment::Grant::QueueFull:
            acc_.requests().complete(
                r, Outcome::error(ErrorType::Server, 0,
                                  "queue of module '" + acc_.rt().modules[module].name + "' is full (limit " +
                                      std::to_string(acc_.rt().config.limits.max_queue) + ", limits.max_queue)"));
            return;
        case Segment::Grant::NoIdle: acc_.requests().complete(r, failing_module(module)); return;
    }
}

Outcome Leases::failing_module(uint32_t module) {
    std::string why = acc_.seg().module_failure(module);
    return Outcome::error(ErrorType::Server, 0,
                          "module '" + acc_.rt().modules[module].name + "' has no worker: " +
                              (why.empty() ? "its workers keep exiting" : why));
}

// Requests that were waiting when their module began to fail are refused with the reason.
void Leases::refuse_waiting_on_failing_modules() {
    Segment& seg = acc_.seg();
    for (uint32_t m = 0; m < seg.nmodules(); ++m) {
        if (!seg.module_failing(m)) continue;
        for (Request* r : acc_.requests().queued_for(m)) acc_.requests().complete(*r, failing_module(m));
    }
}

// ---- the slot's socket: current, clean, and written by the worker alone -------------------

void Leases::read_control() {
    if (acc_.rt().control_acceptor.size() <= acc_.index()) return;  // no master (tests, fuzzing)
    int fd = acc_.rt().control_acceptor[acc_.index()].get();
    for (;;) {
        char buf[64];
        std::vector<int> fds;
        ssize_t n = recv_with_fds(fd, buf, sizeof buf, fds);
        if (n <= 0) return;
        uint32_t slot;
        uint64_t epoch;
        if (fds.size() == 1 && read_slot_change(std::string_view(buf, size_t(n)), slot, epoch) &&
            slot < slots_.size()) {
            renewed(slot, epoch, fds[0]);
            continue;
        }
        for (int f : fds) ::close(f);
        log::error("the master sent a control message this acceptor does not understand");
    }
}

// The slot has a new worker on a new socketpair: the old socket goes, with whatever is in it.
void Leases::renewed(uint32_t slot, uint64_t epoch, int fd) {
    SlotRuntime& sr = acc_.rt().slots[slot];
    if (slots_[slot] && slots_[slot]->req) fault(slot, "its slot was given a new worker during a request");
    // The event goes before its socket: epoll watches the socket the master and the other
    // acceptors still hold, not this descriptor, so closing it first would leave it watched.
    slots_[slot].reset();  // made again, on the new socket, when next leased
    sr.server_end.reset(fd);
    sr.epoch = epoch;
}

// Is this acceptor's socket for the slot the master's current one? The master sends a new
// one before it lets the slot be leased, so it is in the control socket by now.
bool Leases::current(uint32_t slot) {
    uint64_t epoch = acc_.seg().slot(slot).epoch.load(std::memory_order_acquire);
    if (acc_.rt().slots[slot].epoch == epoch) return true;
    read_control();
    if (acc_.rt().slots[slot].epoch == epoch) return true;
    fault(slot, "this acceptor has no current socket for it");
    return false;
}

// Nothing may wait in a slot before its request is written: a frame there is a handler's
// fault (it answered twice, or late, or a process it left wrote it) and must never be
// taken for the next request's answer.
bool Leases::clean(Lease& l) {
    char probe;
    ssize_t n;
    do n = ::recv(l.fd, &probe, 1, MSG_DONTWAIT | MSG_PEEK);
    while (n < 0 && errno == EINTR);
    if (n < 0 && errno == EAGAIN) return true;
    if (n > 0) {
        size_t stale = drain(l.fd);
        fault(l.slot, "it wrote " + std::to_string(stale) +
                          " bytes while no request was outstanding (a second answer, or a late one); dropped");
    } else {
        fault(l.slot, "its socket closed while idle");
    }
    return false;
}

// The slot's answers come from its worker: the process bertd started, or (a shell command
// that forks) the descendant of it that answered first. Anything else is a process the
// worker left behind, writing into another client's request.
bool Leases::from_worker(uint32_t slot, pid_t writer) {
    if (writer == 0) return true;  // the socket does not say (no master set SO_PASSCRED: tests)
    Slot& s = acc_.seg().slot(slot);
    pid_t answerer = s.answerer.load();
    if (answerer != 0) return writer == answerer;
    // The first process to answer after the worker started is its answerer from then on:
    // the worker itself, or what its shell forked. A child the answerer forks later is not.
    pid_t worker = s.pid.load();
    if (writer != worker && !descends_from(writer, worker)) return false;
    s.answerer = writer;
    return true;
}

// The worker can no longer be trusted and the slot holds no request of ours: the master
// replaces the worker (on a fresh socketpair).
void Leases::fault(uint32_t slot, const std::string& why) {
    Segment& seg = acc_.seg();
    Slot& s = seg.slot(slot);
    s.retire.store(1);
    if (int32_t pid = s.pid.load(); pid > 0) kill(pid, SIGKILL);
    log::warn("worker of '%s' (slot %u): %s", acc_.rt().modules[s.module].name.c_str(), slot, why.c_str());
    if (slots_[slot] && slots_[slot]->req) {
        fail(*slots_[slot], why);
        return;
    }
    seg.mark_reaping(slot);
    acc_.poke_master();
}

void Leases::begin(Request& r, uint32_t slot) {
    // A slot passed on by the answer just read from it has nothing more in its socket
    // (finish): only one that sat idle is probed.
    if (!current(slot) || (!lease_of(slot).just_answered && !clean(lease_of(slot)))) {
        // The request never reached that worker: it goes to another slot, or waits.
        r.stage = Request::Stage::New;
        start(r);
        return;
    }
    Lease& l = lease_of(slot);
    l.just_answered = false;
    l.req = &r;
    r.slot = slot;
    r.stage = Request::Stage::OnSlot;
    r.started_us = monotonic_us();
    // What goes to the worker before the request: the client's infos for it.
    l.head.clear();
    l.head_at = 0;
    if (!r.token.empty()) l.head += validation_frame(r.token);
    if (r.stream_in) l.head += stream_info_frame();
    RequestPath& path = acc_.requests();
    if (r.callback) path.as_call(r);          // the worker returns the Result the service gets
    else if (r.stream_in) path.own_frame(r);  // the chunks that follow must be at the queue's front
    r.written = 0;
    rearm(l);
    restart_deadline(l);
    write_more(l);
    if (!l.req) return;  // it failed already
    // A cast is answered at once (unless it was when it queued); the worker still runs it
    // here, and it is counted and logged when the worker is done. A streamed one, once its
    // stream has been read.
    if (r.cast && r.conn && !r.stream_in) path.answer_cast(r);
}

void Leases::restart_deadline(Lease& l) {
    double timeout = acc_.rt().modules[l.req->route.module].config->timeout;
    if (timeout <= 0) return;
    timeval tv{time_t(timeout), suseconds_t((timeout - double(time_t(timeout))) * 1e6)};
    evtimer_add(l.timer.get(), &tv);  // a pending timer starts over
}

void Leases::on_io(evutil_socket_t, short what, void* arg) {
    auto* l = static_cast<Lease*>(arg);
    // An idle slot kept its registration (finish), and another acceptor leased it or its
    // worker wrote while idle: the event goes (what the socket holds is not ours; a next
    // request of ours probes it first, clean()).
    if (!l->req) {
        l->just_answered = false;  // bytes came after the answer: a next request probes first
        l->owner->disarm(*l);
        return;
    }
    if ((what & EV_WRITE) && l->writing) l->owner->write_more(*l);
    if ((what & EV_READ) && l->req && !l->paused) l->owner->read_answer(*l);
}

// What the slot's event waits for: the worker's answer (unless the client of a streamed
// answer must first read what waits for it), and room to write (while the socket is full).
// A slot that goes from one request to the next of this acceptor keeps its registration:
// no epoll_ctl between them.
void Leases::rearm(Lease& l) {
    short what = short((l.paused ? 0 : EV_READ) | (l.writing ? EV_WRITE : 0));
    if (what == l.armed) return;
    event_del(l.io.get());
    l.armed = what;
    if (!what) return;
    event_assign(l.io.get(), acc_.base(), l.fd, what | EV_PERSIST, on_io, &l);
    event_priority_set(l.io.get(), Acceptor::kWorkerPriority);
    event_add(l.io.get(), nullptr);
}

void Leases::set_writing(Lease& l, bool on) {
    if (on == l.writing) return;
    l.writing = on;
    rearm(l);
}

// Sends bytes[at...]; true once they are all gone. A dead worker shows on the read side.
bool Leases::write_some(Lease& l, std::string_view bytes, size_t& at) {
    Flush f = send_some(l.fd, bytes, at);
    if (f != Flush::Done) set_writing(l, f == Flush::Blocked);
    return f == Flush::Done;
}

void Leases::write_more(Lease& l) {
    Request& r = *l.req;
    if (l.head_at < l.head.size() && !write_some(l, l.head, l.head_at)) return;
    if (r.written < r.frame_len) {
        size_t at = r.written;
        bool all = write_some(l, r.frame(), at);
        r.written = uint32_t(at);
        if (!all) return;
        if (!r.conn || r.popped) {  // nobody needs the bytes any more (the log has its text)
            acc_.requests().take_log_text(r);
            acc_.requests().drop_frame(r);
        }
    }
    if (r.in_stream == Request::InStream::Waiting) r.in_stream = Request::InStream::Relaying;
    if (r.in_stream == Request::InStream::Relaying) {
        relay_some(l);
        return;
    }
    set_writing(l, false);
}

void Leases::relay(Request& r) {
    Lease& l = *slots_[r.slot];
    if (l.req == &r && !l.writing) relay_some(l);
}

// The client's chunks go to the worker as they are, from its connection's queue, as fast
// as the worker takes them; the client is read only as fast as that.
void Leases::relay_some(Lease& l) {
    Request& r = *l.req;
    Conn* c = r.conn;
    if (!c) return;  // client_left() deals with it
    const Limits& limits = acc_.rt().config.limits;
    bool moved = false, blocked = false;
    for (;;) {
        std::string_view in = c->in.view();
        if (r.chunk_left == 0) {
            if (in.size() < bert::kFrameHeader) break;
            uint32_t n = bert::scan_frame(in, ~0u).length;
            std::string why;
            if (n > limits.max_frame) why = "a chunk of " + std::to_string(n) + " bytes is over limits.max_frame";
            else if (limits.max_stream && r.stream_bytes + n > limits.max_stream)
                why = "the stream is over limits.max_stream (" + std::to_string(limits.max_stream) + " bytes)";
            if (!why.empty()) {
                c->closing = true;  // its chunks cannot be told from what follows: the connection ends
                fail(l, "streamed request: " + why, ErrorType::Protocol);
                return;
            }
            r.chunk_left = bert::kFrameHeader + n;
            r.stream_bytes += n;
            r.stream_ending = n == 0;
        }
        size_t want = size_t(std::min<uint64_t>(r.chunk_left, in.size()));
        if (want == 0) break;
        size_t sent = 0;
        bool all = write_some(l, in.substr(0, want), sent);
        c->in.consume(sent);
        r.chunk_left -= sent;
        moved |= sent > 0;
        if (!all) {
            blocked = true;
            break;
        }
        if (r.chunk_left == 0 && r.stream_ending) {
            r.in_stream = Request::InStream::Done;
            acc_.seg().header().stats.streams_in.fetch_add(1, std::memory_order_relaxed);
            set_writing(l, false);
            if (r.cast) acc_.requests().answer_cast(r);
            return;
        }
    }
    if (moved) restart_deadline(l);
    if (blocked) return;  // the worker's socket is full (or gone): on with it when it has room
    set_writing(l, false);
    if (c->eof) {
        fail(l, "the client closed the connection inside its streamed request", ErrorType::Protocol);
        return;
    }
    acc_.conns().set_reading(*c, true);
}

void Leases::client_left(Request& r) {
    Lease& l = *slots_[r.slot];
    if (l.req != &r) return;
    if (r.stream_in && r.in_stream != Request::InStream::Done)
        fail(l, "its client left inside a streamed request, which the worker saw cut short");
    else if (l.in_chunks)
        fail(l, "its client left during its streamed answer");
}

void Leases::drained(Request& r) {
    Lease& l = *slots_[r.slot];
    if (l.req != &r || !l.paused) return;
    l.paused = false;
    rearm(l);
}

void Leases::disarm(Lease& l) {
    if (!l.armed) return;
    event_del(l.io.get());
    l.armed = 0;
}

// With keep_event the slot's event stays registered for a next request of this acceptor;
// the caller disarms it if none comes before it returns to the loop.
void Leases::release(Lease& l, bool keep_event) {
    if (!keep_event) disarm(l);
    evtimer_del(l.timer.get());
    l.req = nullptr;
    l.writing = l.paused = false;
    l.head.clear();
    l.answer.clear();
    l.answer_at = 0;
    l.streaming = l.in_chunks = l.overflow = false;
    l.mode = Lease::Mode::Relay;
    l.chunk_left = 0;
    l.streamed = 0;
    l.chunk_head_have = 0;
    std::string().swap(l.gathered);
    if (l.piped) {  // a stream cut off: what the pipe holds goes nowhere, with the pipe
        l.pipe_r.reset();
        l.pipe_w.reset();
        l.piped = 0;
    }
    l.no_splice = false;
    l.cache_info.clear();
    l.answer_type = -1;
}

void Leases::on_timeout(evutil_socket_t, short, void* arg) {
    auto* l = static_cast<Lease*>(arg);
    Leases& self = *l->owner;
    const ModuleConfig* mc = self.acc_.rt().modules[l->req->route.module].config;
    char secs[32];
    snprintf(secs, sizeof secs, "%g", mc->timeout);
    self.fail(*l, "the handler for '" + mc->name + "' did not answer within " + secs + " s (timeout)");
}

// The worker can no longer be trusted: answer the request, and have the master replace it.
void Leases::fail(Lease& l, const std::string& why, ErrorType type) {
    uint32_t slot = l.slot;
    Segment& seg = acc_.seg();
    Slot& s = seg.slot(slot);
    int32_t pid = s.pid.load();
    s.retire.store(1);
    if (pid > 0) kill(pid, SIGKILL);
    Request& r = *l.req;
    log::warn("worker of '%s' (slot %u): %s", acc_.rt().modules[r.route.module].name.c_str(), slot, why.c_str());
    // Inside a streamed answer the client reads chunks: an error frame would pass for one.
    // It gets no more, and the connection ends once what it was sent is flushed.
    bool mid_stream = l.in_chunks && l.mode == Lease::Mode::Relay && r.conn;
    release(l);
    seg.mark_reaping(slot);
    acc_.poke_master();
    if (mid_stream) {
        Conn& c = *r.conn;
        c.closing = true;
        acc_.requests().complete(r, Outcome::frames({}, int(type)));
        acc_.conns().flush(c);  // closes it once what it was sent has gone
        return;
    }
    acc_.requests().complete(r, Outcome::error(type, type == ErrorType::Protocol ? 2 : 0, why));
}

// ---- slots between acceptors -------------------------------------------------------------

void Leases::give_back(uint32_t slot) {
    int32_t next = acc_.seg().release(slot);
    if (next == -2) acc_.poke_master();
    else if (next == int32_t(acc_.index())) take_handoff(slot);
    else if (next >= 0) acc_.wake(next);
}

// A slot was passed to this acceptor for one of its waiting requests.
void Leases::take_handoff(uint32_t slot) {
    uint64_t id;
    if (!acc_.seg().owned_by(slot, int32_t(acc_.index()), id)) return;
    Request* r = acc_.requests().find(id);
    if (r && r->stage == Request::Stage::Queued) {
        begin(*r, slot);
        return;
    }
    give_back(slot);  // the client left while it waited
}

void Leases::scan() {
    pass_deferred();  // they look like hand-offs to this acceptor below
    refuse_waiting_on_failing_modules();
    Segment& seg = acc_.seg();
    auto me = int32_t(acc_.index());
    for (uint32_t i = 0; i < seg.nslots(); ++i) {
        Slot& s = seg.slot(i);
        uint32_t st = s.state.load(std::memory_order_acquire);
        bool mine = s.owner.load(std::memory_order_relaxed) == me;
        if (slots_[i] && slots_[i]->req) {
            if (st == uint32_t(SlotState::Dead)) {
                Lease& l = *slots_[i];
                uint32_t m = l.req->route.module;
                std::string why = seg.module_failure(m);
                fail(l, "the handler worker for '" + acc_.rt().modules[m].name + "' exited while serving this request" +
                            (why.empty() ? "" : " (the module is failing: " + why + ")"));
            }
        } else if (st == uint32_t(SlotState::Leased) && mine) {
            take_handoff(i);
        } else if (st == uint32_t(SlotState::Dead) && mine) {
            retry_handoff(i);
        }
    }
}

// A slot was handed to one of our waiting requests, but its worker died before we took
// it. The request never reached that worker, so it does not fail: it waits for another
// slot, and the master replaces the worker.
void Leases::retry_handoff(uint32_t dead_slot) {
    Segment& seg = acc_.seg();
    uint64_t id = seg.slot(dead_slot).request.load();
    seg.mark_reaping(dead_slot);
    acc_.poke_master();
    Request* r = acc_.requests().find(id);
    if (!r || r->stage != Request::Stage::Queued) return;
    r->stage = Request::Stage::New;
    start(*r);
}

}  // namespace bertd
