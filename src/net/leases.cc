// leases.cc: a request's life on a worker slot. The request is written from the
// connection's queue as the socket takes it (no copy while the client waits); the
// answer is read into a buffer that becomes the client's output as it is; the slot
// goes back (or to the next waiter) before the answer leaves, so the client's next
// request finds it free. Worker priority: these events run before new clients are read.
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
#include "net/request.h"

namespace bertd {

Leases::Leases(Acceptor& a) : acc_(a) { slots_.resize(a.seg().nslots()); }

Leases::~Leases() = default;

size_t Leases::held() const {
    size_t n = 0;
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
    switch (acc_.seg().lease_or_enqueue(module, int32_t(acc_.index()), r.id, r.high, now_us(), slot)) {
        case Segment::Grant::Leased: begin(r, slot); return;
        case Segment::Grant::Queued:
            r.stage = Request::Stage::Queued;
            // A cast is answered when it is queued, as when it is leased: {noreply} means
            // "it will run", not "it ran". It waits in the queue with its own copy of the frame.
            // Over the memory budget it keeps its client waiting instead (no copy).
            if (r.cast && r.conn && !acc_.conns().over_budget()) acc_.requests().answer_cast(r);
            return;
        case Segment::Grant::QueueFull:
            acc_.requests().complete(
                r, Outcome::error(ErrorType::Server, 0,
                                  "queue of module '" + acc_.rt().modules[module].name + "' is full (limit " +
                                      std::to_string(acc_.rt().config.limits.max_queue) + ", limits.max_queue)"));
            return;
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
    sr.server_end.reset(fd);
    sr.epoch = epoch;
    slots_[slot].reset();  // made again, on the new socket, when next leased
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
    if (!current(slot) || !clean(lease_of(slot))) {
        // The request never reached that worker: it goes to another slot, or waits.
        r.stage = Request::Stage::New;
        start(r);
        return;
    }
    Lease& l = lease_of(slot);
    l.req = &r;
    l.answer.clear();
    r.stage = Request::Stage::OnSlot;
    std::string_view f = r.frame();
    ssize_t n = ::send(l.fd, f.data(), f.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    // EAGAIN: the socket is full; the rest goes out when it is writable. A dead worker
    // shows as the end of the stream on the read side.
    r.written = n > 0 ? uint32_t(n) : 0;
    l.writing = r.written < r.frame_len;
    r.started_us = monotonic_us();
    event_assign(l.io.get(), acc_.base(), l.fd, EV_READ | EV_PERSIST | (l.writing ? EV_WRITE : 0), on_io, &l);
    event_priority_set(l.io.get(), Acceptor::kWorkerPriority);
    event_add(l.io.get(), nullptr);
    double timeout = acc_.rt().modules[r.route.module].config->timeout;
    if (timeout > 0) {
        timeval tv{time_t(timeout), suseconds_t((timeout - double(time_t(timeout))) * 1e6)};
        evtimer_add(l.timer.get(), &tv);
    }
    // A cast is answered at once (unless it was when it queued); the worker still runs it
    // here, and it is counted and logged when the worker is done.
    if (r.cast && r.conn) acc_.requests().answer_cast(r);
}

void Leases::on_io(evutil_socket_t, short what, void* arg) {
    auto* l = static_cast<Lease*>(arg);
    if ((what & EV_WRITE) && l->writing) l->owner->write_more(*l);
    if ((what & EV_READ) && l->req) l->owner->read_answer(*l);
}

void Leases::write_more(Lease& l) {
    Request& r = *l.req;
    std::string_view rest = r.frame().substr(r.written);
    ssize_t n = ::send(l.fd, rest.data(), rest.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) r.written += uint32_t(n);
    if (r.written < r.frame_len) return;
    l.writing = false;
    if (!r.conn) acc_.requests().drop_frame(r);  // nobody needs the bytes any more
    event_del(l.io.get());
    event_assign(l.io.get(), acc_.base(), l.fd, EV_READ | EV_PERSIST, on_io, &l);
    event_priority_set(l.io.get(), Acceptor::kWorkerPriority);
    event_add(l.io.get(), nullptr);
}

void Leases::read_answer(Lease& l) {
    std::string& buf = acc_.scratch();
    size_t max_frame = acc_.max_frame();
    bert::FrameScan fs;
    for (;;) {
        std::vector<int> fds;
        PeerCred writer;
        ssize_t n = recv_with_fds(l.fd, buf.data(), buf.size(), fds, &writer);
        if (n <= 0) {
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
            fail(l, "lost the connection to the handler worker");
            return;
        }
        for (int f : fds) ::close(f);
        if (!fds.empty() || !from_worker(l.slot, writer.pid)) {
            fail(l, "pid " + std::to_string(writer.pid) + ", not the worker, wrote into its socket (a process it " +
                        "left behind?); the bytes are dropped");
            return;
        }
        l.answer.append(buf.data(), size_t(n));
        fs = bert::scan_frame(l.answer, max_frame);
        if (fs.state == bert::FrameScan::State::TooLarge) {
            fail(l, "the handler's answer is over the limit of " + std::to_string(max_frame) +
                        " bytes (limits.max_frame)");
            return;
        }
        if (fs.state == bert::FrameScan::State::Complete) break;
        if (l.answer.size() >= bert::kFrameHeader && l.answer.capacity() < bert::kFrameHeader + fs.length)
            l.answer.reserve(bert::kFrameHeader + fs.length);
    }
    size_t total = bert::kFrameHeader + fs.length;
    bool ok = fs.length > 0 && static_cast<unsigned char>(l.answer[bert::kFrameHeader]) == bert::kVersion;
    if (l.answer.size() > total) ok = false;  // a worker that says more than one answer is out of step
    if (!ok) {
        fail(l, "the handler sent an answer that is not a BERT term");
        return;
    }
    finish(l);
}

void Leases::release(Lease& l) {
    event_del(l.io.get());
    evtimer_del(l.timer.get());
    l.req = nullptr;
    l.writing = false;
}

void Leases::finish(Lease& l) {
    Request& r = *l.req;
    uint32_t slot = l.slot;
    // The answer buffer holds exactly the frame: it becomes the client's output without a copy.
    std::string frame = std::move(l.answer);
    acc_.seg().slot(slot).served.fetch_add(1, std::memory_order_relaxed);
    release(l);
    give_back(slot);
    acc_.requests().complete(r, Outcome::answer(std::move(frame)));
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
void Leases::fail(Lease& l, const std::string& why) {
    uint32_t slot = l.slot;
    Segment& seg = acc_.seg();
    Slot& s = seg.slot(slot);
    int32_t pid = s.pid.load();
    s.retire.store(1);
    if (pid > 0) kill(pid, SIGKILL);
    Request& r = *l.req;
    log::warn("worker of '%s' (slot %u): %s", acc_.rt().modules[r.route.module].name.c_str(), slot, why.c_str());
    release(l);
    seg.mark_reaping(slot);
    acc_.poke_master();
    acc_.requests().complete(r, Outcome::error(ErrorType::Server, 0, why));
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
    Segment& seg = acc_.seg();
    auto me = int32_t(acc_.index());
    for (uint32_t i = 0; i < seg.nslots(); ++i) {
        Slot& s = seg.slot(i);
        uint32_t st = s.state.load(std::memory_order_acquire);
        bool mine = s.owner.load(std::memory_order_relaxed) == me;
        if (slots_[i] && slots_[i]->req) {
            if (st == uint32_t(SlotState::Dead)) {
                Lease& l = *slots_[i];
                fail(l, "the handler worker for '" + acc_.rt().modules[l.req->route.module].name +
                            "' exited while serving this request");
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
