// loops.cc: calls and messages from Erlang nodes wait in fair queues (fair.h), one
// per target module or registered name, and run on loop connections: socketpairs
// whose other end an acceptor serves like a client, with queues, priorities, stats
// and the access log, but never routed to native modules. One key runs a bounded
// number at once and holds a bounded number waiting, so a slow handler or a flood to
// one name never holds up the rest, and memory stays bounded. Nothing here waits.
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>

#include "bert/codec.h"
#include "bert/frame.h"
#include "erl/link.h"
#include "erl/proto.h"
#include "erl/terms.h"
#include "io/unix.h"
#include "log/log.h"

namespace bertd::erl {

namespace {
constexpr size_t kMaxLoops = 64;
constexpr size_t kMaxCap = 16;
constexpr size_t kQueuesPerLimit = 16;  // all queues together hold at most this many times erlang.max_queue
}  // namespace

// A module's workers, and one more waiting in its shared queue so that a worker
// that finishes finds the next request at once.
size_t Link::cap_of(const std::string& module) const {
    const ModuleConfig* m = config_.find_module(module, ModuleConfig::Type::External);
    size_t workers = m ? size_t(m->count) : 1;
    return std::clamp<size_t>(workers + 1, 2, kMaxCap);
}

void Link::start_ext(std::unique_ptr<ExtCall> call) {
    if (ext_queues_.can_start(call->key, call->cap)) {
        if (LoopConn* l = any_loop()) {
            ext_queues_.started(call->key, call->cap);
            run_on(*l, std::move(call));
            return;
        }
        bool possible = false;
        for (auto& [id, s] : streams_)
            possible |= !s->dead && (s->kind == Stream::Kind::Loop ||
                                     (s->kind == Stream::Kind::Acceptor && static_cast<AccConn&>(*s).hello));
        if (!possible) {
            finish_ext(*call, nullptr, "bertd has no acceptor ready to run " + call->what);
            return;
        }
    }
    // Keys are module names Erlang nodes choose: all the queues together are bounded too.
    size_t limit = config_.erlang.max_queue;
    bool room = ext_queues_.waiting() < limit * kQueuesPerLimit;
    std::string key = call->key;
    if (room && ext_queues_.push(key, call->cap, limit, std::move(call))) return;
    std::string why = room ? std::to_string(limit) + " wait already (erlang.max_queue)"
                           : std::to_string(ext_queues_.waiting()) + " wait for all modules and names (" +
                                 std::to_string(kQueuesPerLimit) + " x erlang.max_queue)";
    if (call->origin == ExtCall::Origin::Message) {
        dropped(Drop::QueueFull, "a message from " + call->node + " for " + call->what + ": " + why);
        return;
    }
    dropped(Drop::QueueFull, "a call from " + call->node + " to " + call->what + ": " + why);
    finish_ext(*call, nullptr, "too many calls from Erlang wait for this module: " + why);
}

// Starts what waits, as long as loop connections can be had.
void Link::pump_ext() {
    while (ext_queues_.waiting() > 0) {
        LoopConn* l = any_loop();
        if (!l) return;
        std::string key;
        std::unique_ptr<ExtCall> call;
        if (!ext_queues_.pop(key, call)) return;
        run_on(*l, std::move(call));
    }
}

void Link::run_on(LoopConn& l, std::unique_ptr<ExtCall> call) {
    l.busy = true;
    l.out += call->frame;
    l.call = std::move(call);
    queue_out(l);
}

Link::LoopConn* Link::any_loop() {
    LoopConn* l = free_loop();
    return l ? l : new_loop();
}

Link::LoopConn* Link::free_loop() {
    for (auto& [id, s] : streams_) {
        if (s->dead || s->kind != Stream::Kind::Loop) continue;
        auto& l = static_cast<LoopConn&>(*s);
        if (!l.busy && !l.closing && l.generation == newest_generation_) return &l;
    }
    return nullptr;
}

// Makes a socketpair and hands one end to an acceptor of the newest generation.
Link::LoopConn* Link::new_loop() {
    size_t loops = 0;
    std::vector<AccConn*> acceptors;
    for (auto& [id, s] : streams_) {
        if (s->dead) continue;
        if (s->kind == Stream::Kind::Loop) ++loops;
        if (s->kind == Stream::Kind::Acceptor) {
            auto& a = static_cast<AccConn&>(*s);
            if (a.hello && a.generation == newest_generation_) acceptors.push_back(&a);
        }
    }
    if (loops >= kMaxLoops) return nullptr;
    // The descriptor must follow everything already queued for that acceptor.
    std::vector<AccConn*> ready;
    for (AccConn* a : acceptors) {
        if (a->out_start != a->out.size()) flush(*a);
        if (!a->dead && a->out_start == a->out.size()) ready.push_back(a);
    }
    acceptors.swap(ready);
    if (acceptors.empty()) return nullptr;
    AccConn& a = *acceptors[next_acceptor_++ % acceptors.size()];
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return nullptr;
    std::string msg;
    linkproto::append(msg, linkproto::Connection, 0, {});
    ssize_t n = send_with_fds(a.fd, msg, &sv[1], 1);
    ::close(sv[1]);
    if (n != ssize_t(msg.size())) {
        // Nothing or part went: the acceptor's stream cannot be trusted to be in step.
        ::close(sv[0]);
        if (n > 0) close_stream(a, "a partial hand-over");
        return nullptr;
    }
    auto l = std::make_unique<LoopConn>();
    l->acceptor = a.id;
    l->generation = a.generation;
    return static_cast<LoopConn*>(add_stream(std::move(l), sv[0]));
}

void Link::loop_readable(LoopConn& l) {
    while (!l.dead) {
        std::string_view buf(l.in.data() + l.in_start, l.in.size() - l.in_start);
        bert::FrameScan fs = bert::scan_frame(buf, config_.limits.max_frame);
        if (fs.state == bert::FrameScan::State::TooLarge) {
            close_stream(l, "an answer over limits.max_frame");
            return;
        }
        if (fs.state != bert::FrameScan::State::Complete) return;
        std::string_view payload = buf.substr(bert::kFrameHeader, fs.length);
        l.in_start += bert::kFrameHeader + fs.length;
        if (!l.busy || !l.call) {
            close_stream(l, "an answer nobody asked for");
            return;
        }
        bert::Term answer;
        auto call = std::move(l.call);
        l.busy = false;
        // An answer costs what term_limits() allow, whatever the worker wrote.
        if (auto e = bert::decode(payload, answer, term_limits()))
            finish_ext(*call, nullptr, "undecodable answer from the handler: " + unreadable(e));
        else
            finish_ext(*call, &answer, "");
        ext_queues_.finished(call->key);
        loop_done(l);
    }
}

void Link::loop_done(LoopConn& l) {
    // An old generation's connection goes once its call is answered; what waits gets
    // one of the newest generation.
    if (l.closing || l.generation != newest_generation_) close_stream(l, "retired");
    pump_ext();
}

// A new generation's acceptors are here: the old generation's loop connections go
// (idle ones now, busy ones after their answer), so its acceptors can finish.
void Link::retire_loops(uint64_t newest) {
    std::vector<LoopConn*> idle;
    for (auto& [id, s] : streams_) {
        if (s->dead || s->kind != Stream::Kind::Loop) continue;
        auto& l = static_cast<LoopConn&>(*s);
        if (l.generation >= newest) continue;
        if (l.busy)
            l.closing = true;
        else
            idle.push_back(&l);
    }
    for (auto* l : idle) close_stream(*l, "retired");
    pump_ext();
}

}  // namespace bertd::erl
