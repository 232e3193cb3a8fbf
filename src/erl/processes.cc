// processes.cc: bertd's node as the home of processes. Each handler worker's link
// connection gets a pid of bertd's node and a mailbox (bounded by erlang.max_queue);
// workers register names whose messages their module's workers run; a message to a
// name or pid lands there, or is dropped with a counter and a rate-limited log line.
// A pid dies with its connection and is never reused for another: a restarted
// worker's predecessor's messages are dropped, never delivered to it. Never blocks.
#include <cstring>

#include "bert/codec.h"
#include "bert/printer.h"
#include "erl/link.h"
#include "erl/terms.h"
#include "io/unix.h"
#include "log/log.h"

namespace bertd::erl {

namespace {
using bert::Term;
constexpr size_t kGonePidsKept = 4096;
constexpr size_t kSegmentsKept = 4;
constexpr size_t kWorkerMaxDepth = 300;
}  // namespace

uint32_t Link::new_pid_num() {
    for (;;) {
        uint32_t n = (next_pid_++ % 0x7FFFFFF) + 1;
        if (n != cnode_.self().num && !worker_pids_.count(n)) return n;
    }
}

const bert::Pid& Link::pid_of(HandlerConn& h) {
    if (h.pid.num == 0) {
        h.pid = cnode_.self();
        h.pid.num = new_pid_num();
        // Past a wrap of the numbers, the serial still tells two workers apart.
        h.pid.serial = next_pid_ / 0x7FFFFFF + 1;
        worker_pids_[h.pid.num] = h.id;
    }
    return h.pid;
}

std::string Link::who(const bert::Pid& pid) const {
    std::string s =
        "<" + cnode_.name() + "." + std::to_string(pid.num) + "." + std::to_string(pid.serial) + ">";
    if (pid.creation != cnode_.creation()) return s + " (of an earlier run of bertd's Erlang link)";
    auto it = gone_pids_.find(pid.num);
    if (it != gone_pids_.end()) return s + " (" + it->second + ")";
    return s + " (no process of bertd's)";
}

// The worker behind a connection: the peer's pid, or its nearest ancestor, in a
// generation's slot table (a worker's children count as the worker).
bool Link::resolve_worker(HandlerConn& h) {
    if (h.resolved) return !h.module.empty();
    PeerCred pc;
    if (!peer_credentials(h.fd, pc)) return false;
    h.os_pid = pc.pid;
    // Workers start beside the acceptors, whose hello maps a generation's segment: a
    // worker may ask first. The master's newest segment is found in its descriptors.
    pid_t master = 0;
    uint64_t gen = 0;
    std::string newest = IpcNames::newest_segment(master_pid_);
    if (!newest.empty() && IpcNames::parse_segment(newest, master, gen) && !segments_.count(gen))
        open_segment(gen);
    pid_t p = pc.pid;
    for (int depth = 0; p > 1 && depth < 8; ++depth, p = parent_of(p)) {
        for (auto it = segments_.rbegin(); it != segments_.rend(); ++it) {
            Segment& seg = *it->second;
            for (uint32_t m = 0; m < seg.nmodules(); ++m) {
                ModuleShared& ms = seg.module(m);
                for (uint32_t s = ms.first_slot; s < ms.first_slot + ms.nslots && s < seg.nslots(); ++s) {
                    if (seg.slot(s).pid.load() != p) continue;
                    h.module = std::string(ms.name, strnlen(ms.name, sizeof ms.name));
                    h.slot = s;
                    h.resolved = true;
                    return true;
                }
            }
        }
    }
    return false;  // not (yet) in a slot table: asked again next time
}

void Link::handler_register(HandlerConn& h, const Term& req, int64_t until_us) {
    std::string name;
    if (!req.is_tuple(2) || !name_of(req[1], name) || name.empty() || name.size() > 255) {
        handler_error(h.id, "expected {register, Name} with a name of 1 to 255 characters");
        return;
    }
    if (name == "rex" || name == "net_kernel") {
        handler_error(h.id, "'" + name + "' is bertd's own name (rpc and net_adm)");
        return;
    }
    if (auto r = registered_.find(name); r != registered_.end()) {
        handler_error(h.id, "'" + name +
                                "' is registered by bertd's configuration (erlang.registered) for module '" +
                                r->second.module + "'");
        return;
    }
    if (!resolve_worker(h)) {
        // A worker just started may not be in the slot table yet: ask again for a while.
        int64_t now = monotonic_us();
        if (until_us == 0 || now < until_us) {
            pending_registers_.push_back({h.id, req, until_us ? until_us : now + 2'000'000});
            return;
        }
        handler_error(h.id, "only bertd's handler workers can register names (process " +
                                std::to_string(h.os_pid) + " is none)");
        return;
    }
    auto it = process_names_.find(name);
    if (it != process_names_.end() && it->second.module != h.module) {
        handler_error(h.id, "'" + name + "' is registered by module '" + it->second.module + "'");
        return;
    }
    ProcessName& p = process_names_[name];
    if (p.holders.empty())
        log::info("'%s' on %s is registered by module '%s'", name.c_str(), cnode_.name().c_str(),
                  h.module.c_str());
    p.module = h.module;
    if (p.holders.insert(h.id).second) h.names.push_back(name);
    handler_answer(h.id, Term::tuple({Term::atom("reply"), Term::atom("ok")}));
}

void Link::retry_registers() {
    for (auto& p : std::exchange(pending_registers_, {}))
        if (auto* h = static_cast<HandlerConn*>(find(p.handler, Stream::Kind::Handler)))
            handler_register(*h, p.req, p.until_us);
}

bool Link::deliver_to_name(const std::string& name, Term msg, const std::string& from_node) {
    Term m, f, args;
    std::string module;
    if (auto r = registered_.find(name); r != registered_.end()) {
        module = r->second.module;
        m = Term::atom(module);
        f = Term::atom(r->second.function);
        args = Term::list({std::move(msg)});
    } else if (auto p = process_names_.find(name); p != process_names_.end()) {
        module = p->second.module;
        m = Term::atom(module);
        f = Term::atom(kProcessFunction);
        args = Term::list({Term::atom(name), std::move(msg)});
    } else {
        return false;
    }
    // A call nobody waits for, one at a time per name, like an Erlang process: messages to a
    // name run in the order they came, on whichever of the module's workers is free, and the
    // next is sent when this one is done. So a name never holds more than one of the
    // module's workers nor a place in its queue (its own queue here is erlang.max_queue),
    // and a failure comes back to be logged.
    auto call = std::make_unique<ExtCall>();
    call->node = from_node;
    call->frame = request_frame(false, m, f, args);
    call->what = "{" + name + ", " + cnode_.name() + "} ! Msg -> " + describe(m, f, args);
    call->key = "n:" + name;
    call->cap = 1;
    start_ext(std::move(call));
    return true;
}

// ---- messages to pids ----------------------------------------------------------------------

void Link::pid_message(const std::string& from_node, const bert::Pid& to, std::string_view message) {
    const bert::Pid& self = cnode_.self();
    if (to.num == self.num && to.serial == self.serial) {
        reply_message(message);
        return;
    }
    count_inbound(Inbound::Pid);
    if (auto it = worker_pids_.find(to.num); it != worker_pids_.end() && to.creation == cnode_.creation()) {
        auto* h = static_cast<HandlerConn*>(find(it->second, Stream::Kind::Handler));
        if (h && h->pid.serial == to.serial) {
            deliver(*h, std::string(message), from_node);
            return;
        }
    }
    dropped(Drop::DeadPid, "a message from " + from_node + " to " + who(to));
}

void Link::deliver(HandlerConn& h, std::string message, const std::string& from_node) {
    // At most as deep as the Python library reads (the tightest): a message a worker could not
    // read would cost it its connection, and with it its pid.
    bert::Limits limits;
    limits.max_depth = kWorkerMaxDepth;
    Term check;
    if (auto e = bert::decode(message, check, limits)) {
        dropped(Drop::Undecodable, "a message from " + from_node + " to " + who(h.pid) +
                                       " that cannot be decoded (" + e.message + ")");
        return;
    }
    if (h.receiving) {
        answer_message(h, message);
        return;
    }
    if (h.mailbox.size() >= config_.erlang.max_queue) {
        dropped(Drop::QueueFull, "a message from " + from_node + " to the worker " + who(h.pid) + " of '" +
                                     h.module + "': " + std::to_string(h.mailbox.size()) +
                                     " wait unread already (erlang.max_queue)");
        return;
    }
    h.mailbox.push_back(std::move(message));
}

// {reply, {message, Msg}}, Msg's bytes as they came.
void Link::answer_message(HandlerConn& h, std::string_view message) {
    h.receiving = false;
    if (h.has_recv_deadline) {
        recv_deadlines_.erase(h.recv_deadline);
        h.has_recv_deadline = false;
    }
    std::string payload;
    Ext(payload).version().tuple(2).atom("reply").tuple(2).atom("message").raw(message.substr(1));
    bert::append_frame(h.out, payload);
    queue_out(h);
    h.busy = false;
    if (h.in_start < h.in.size()) handler_readable(h);
}

// {recv, Timeout}: Timeout in milliseconds, or infinity.
void Link::handler_recv(HandlerConn& h, const Term& req) {
    bool forever = req.is_tuple(2) && req[1].is_atom("infinity");
    if (!req.is_tuple(2) || (!forever && (!req[1].is_int() || req[1].as_int() < 0))) {
        handler_error(h.id, "expected {recv, Milliseconds | infinity}");
        return;
    }
    pid_of(h);
    if (!h.mailbox.empty()) {
        std::string m = std::move(h.mailbox.front());
        h.mailbox.pop_front();
        answer_message(h, m);
        return;
    }
    if (!forever && req[1].as_int() == 0) {
        handler_answer(h.id, Term::tuple({Term::atom("reply"), Term::atom("timeout")}));
        return;
    }
    h.receiving = true;
    if (!forever) {
        int64_t ms = std::min<int64_t>(req[1].as_int(), int64_t(1) << 40);
        h.recv_deadline = recv_deadlines_.emplace(monotonic_us() + ms * 1000, h.id);
        h.has_recv_deadline = true;
    }
}

void Link::expire_receives(int64_t now) {
    while (!recv_deadlines_.empty() && recv_deadlines_.begin()->first <= now) {
        uint64_t id = recv_deadlines_.begin()->second;
        recv_deadlines_.erase(recv_deadlines_.begin());
        auto* h = static_cast<HandlerConn*>(find(id, Stream::Kind::Handler));
        if (!h) continue;
        h->has_recv_deadline = false;
        if (!h->receiving) continue;
        h->receiving = false;
        handler_answer(id, Term::tuple({Term::atom("reply"), Term::atom("timeout")}));
    }
}

// The connection closed: the worker exited (or gave its connection up).
void Link::handler_gone(HandlerConn& h) {
    std::string what = h.module.empty() ? "a process (os pid " + std::to_string(h.os_pid) + ")"
                                        : "a worker of '" + h.module + "' (slot " + std::to_string(h.slot) +
                                              ", os pid " + std::to_string(h.os_pid) + ")";
    if (h.pid.num) {
        worker_pids_.erase(h.pid.num);
        gone_pids_[h.pid.num] = what + " that has gone";
        while (gone_pids_.size() > kGonePidsKept) gone_pids_.erase(gone_pids_.begin());
        for (size_t i = 0; i < h.mailbox.size(); ++i)
            dropped(Drop::DeadPid, "a message to " + who(h.pid) + ", unread when it went");
        h.mailbox.clear();
    }
    if (h.has_recv_deadline) recv_deadlines_.erase(h.recv_deadline);
    h.has_recv_deadline = false;
    for (const auto& name : h.names) {
        auto it = process_names_.find(name);
        if (it == process_names_.end()) continue;
        it->second.holders.erase(h.id);
        if (!it->second.holders.empty()) continue;
        log::info("'%s' on %s is no longer registered: %s, the last that registered it, has gone",
                  name.c_str(), cnode_.name().c_str(), what.c_str());
        process_names_.erase(it);
    }
    for (const auto& n : h.held) node(n).held_by.erase(h.id);
}

// ---- drops and the shared segment --------------------------------------------------------------

void Link::dropped(Drop why, const std::string& what) {
    if (Segment* s = newest_segment(); s && int(why) < kErlangDropKinds)
        s->header().stats.erlang_dropped[int(why)].fetch_add(1, std::memory_order_relaxed);
    warn_limited(why, "dropped " + what);
}

void Link::count_inbound(Inbound kind) {
    if (Segment* s = newest_segment())
        s->header().stats.erlang_messages[int(kind)].fetch_add(1, std::memory_order_relaxed);
}

// Erlang nodes may send these as fast as they like: a few lines per reason and second.
void Link::warn_limited(Drop why, const std::string& line) {
    uint64_t unlogged = 0;
    if (!drops_.note(why, monotonic_us(), unlogged)) return;
    std::string more =
        unlogged ? " (and " + std::to_string(unlogged) + " more for the same reason since the last such line)"
                 : "";
    log::warn("%s%s", line.c_str(), more.c_str());
}

Segment* Link::newest_segment() {
    auto it = segments_.find(stats_generation_);
    return it == segments_.end() ? nullptr : it->second.get();
}

// Maps a generation's segment (at its acceptors' hello): its slot table tells which
// worker a connection is, and the drop counters go to the newest, carried over from
// the one before.
void Link::open_segment(uint64_t generation) {
    if (segments_.count(generation)) return;
    std::unique_ptr<Segment> seg;
    try {
        seg = Segment::open(ipc_.segment(generation));
    } catch (const std::exception& e) {
        log::warn("cannot map the shared segment of generation %llu: %s", (unsigned long long)generation,
                  e.what());
        return;
    }
    if (generation > stats_generation_) {
        if (Segment* old = newest_segment()) {
            GlobalStats &from = old->header().stats, &to = seg->header().stats;
            for (int k = 0; k < kErlangDropKinds; ++k)
                to.erlang_dropped[k].store(from.erlang_dropped[k].load());
            for (int k = 0; k < kErlangMessageKinds; ++k)
                to.erlang_messages[k].store(from.erlang_messages[k].load());
        }
        stats_generation_ = generation;
    }
    segments_[generation] = std::move(seg);
    while (segments_.size() > kSegmentsKept) segments_.erase(segments_.begin());
}

}  // namespace bertd::erl
