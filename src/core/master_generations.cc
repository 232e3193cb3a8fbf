// master_generations.cc: one configuration's life in the master: its segment, slot
// sockets and children are built, started, tended while it serves, and let go after a
// reload or at stop. It reads no client byte and never blocks on a child.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "core/master.h"
#include "core/notify.h"
#include "io/unix.h"
#include "log/log.h"
#include "net/acceptor.h"

namespace bertd {

namespace {
constexpr int64_t kHealthyUs = 1'000'000;  // an acceptor or worker that lived this long did not fail
constexpr int64_t kBackoffCapUs = 5'000'000;
constexpr int kFailingAfter = 3;  // workers in a row dying young make a module "failing"

unsigned ncpus() {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? unsigned(n) : 1;
}

// External modules get slots and queues; native ones an entry for their stats only.
uint32_t register_modules(Runtime& rt, std::vector<const ModuleConfig*>& natives) {
    uint32_t nslots = 0;
    for (const auto& m : rt.config.modules) {
        if (m.type == ModuleConfig::Type::Native) natives.push_back(&m);
        if (m.type != ModuleConfig::Type::External) continue;
        ModuleRuntime mr;
        mr.name = m.name;
        mr.index = uint32_t(rt.modules.size());
        mr.config = &m;
        rt.module_index[m.name] = mr.index;
        rt.modules.push_back(mr);
        nslots += uint32_t(m.count);
    }
    return nslots;
}

void fill_segment(Runtime& rt, const std::vector<const ModuleConfig*>& natives) {
    Segment& seg = *rt.seg;
    seg.header().master_pid = getpid();
    seg.header().stats.started_us = now_us();
    seg.header().stats.generation = rt.generation;
    uint32_t slot = 0;
    for (const auto& mr : rt.modules) {
        ModuleShared& ms = seg.module(mr.index);
        ms.first_slot = slot;
        ms.nslots = uint32_t(mr.config->count);
        snprintf(ms.name, sizeof ms.name, "%s", mr.name.c_str());
        for (int i = 0; i < mr.config->count; ++i, ++slot) seg.slot(slot).module = mr.index;
    }
    for (size_t i = 0; i < natives.size(); ++i) {
        uint32_t idx = uint32_t(rt.modules.size() + i);
        snprintf(seg.module(idx).name, sizeof seg.module(idx).name, "%s", natives[i]->name.c_str());
        rt.native_index[natives[i]->name] = idx;
    }
}

// Carries the counters an operator watches across a reload.
void carry_stats(Segment& from, Segment& to) {
    GlobalStats& a = from.header().stats;
    GlobalStats& b = to.header().stats;
    b.connections_total = a.connections_total.load();
    b.connections_completed = a.connections_completed.load() + a.connections_active.load();
    b.connections_refused = a.connections_refused.load();
    b.protocol_errors = a.protocol_errors.load();
    b.unknown_module = a.unknown_module.load();
    b.access_log_lost = a.access_log_lost.load();
    b.callbacks_ok = a.callbacks_ok.load();
    b.callbacks_failed = a.callbacks_failed.load();
    b.streams_in = a.streams_in.load();
    b.streams_out = a.streams_out.load();
    b.acceptor_restarts = a.acceptor_restarts.load();
    b.worker_restarts = a.worker_restarts.load();
    b.started_us = a.started_us.load();
    for (uint32_t i = 0; i < to.nmodules(); ++i)
        for (uint32_t j = 0; j < from.nmodules(); ++j) {
            ModuleShared& x = from.module(j);
            ModuleShared& y = to.module(i);
            if (x.name[0] == 0 || (x.nslots == 0) != (y.nslots == 0) || strcmp(x.name, y.name) != 0) continue;
            for (int p : {kHigh, kLow}) {
                y.stats.requests[p] = x.stats.requests[p].load();
                for (int t = 0; t < kErrorTypes; ++t) y.stats.errors[p][t] = x.stats.errors[p][t].load();
            }
        }
}
}  // namespace

// ---- building and starting -----------------------------------------------------------

std::unique_ptr<Master::Generation> Master::build_generation(Config config, uint64_t number) {
    auto g = std::make_unique<Generation>();
    Runtime& rt = g->rt;
    rt.config = std::move(config);
    rt.generation = number;
    Config& c = rt.config;
    if (c.acceptors == 0) c.acceptors = int(ncpus());
    rt.access_log_path = c.access_log;
    std::vector<ListenConfig> entries = listen_entries(c);
    for (size_t i = 0; i < listen_.size(); ++i) {
        ListenRuntime& l = rt.listeners.emplace_back();
        l.fd.reset(listen_.dup(i));
        for (size_t m = 1; m < listen_.members(i); ++m) l.more.emplace_back(listen_.dup(i, m));
        for (const Fd& fd : l.more)
            if (!fd) l.fd.reset();
        if (!l.fd) throw std::runtime_error(std::string("cannot share a listen socket: ") + strerror(errno));
        l.name = listen_.name(i);
        l.proxy_protocol = i < entries.size() && entries[i].proxy_protocol;
    }
    if (metrics_listen_.size()) rt.metrics_fd.reset(metrics_listen_.dup(0));
    std::vector<const ModuleConfig*> natives;
    uint32_t nslots = register_modules(rt, natives);
    size_t nmods = rt.modules.size() + natives.size();
    rt.ipc = ipc_;
    std::vector<size_t> caches;  // external modules come first in the segment's module table
    for (const auto& mr : rt.modules) caches.push_back(mr.config->cache_size);
    rt.seg = Segment::create(ipc_.segment(number), uint32_t(std::max<size_t>(nmods, 1)), std::max<uint32_t>(nslots, 1),
                             uint32_t(c.acceptors), uint32_t(c.limits.max_queue), caches);
    fill_segment(rt, natives);
    if (id_.enabled) rt.link_address = ipc_.link();
    rt.slots.resize(nslots);
    make_slots(*g);
    g->quick_exits.resize(rt.modules.size());
    return g;
}

// The slot sockets, the wake-up eventfds and the hand-over socket.
void Master::make_slots(Generation& g) {
    Runtime& rt = g.rt;
    for (auto& s : rt.slots)
        if (!slot_socketpair(s)) throw std::runtime_error(std::string("socketpair: ") + strerror(errno));
    for (int i = 0; i < rt.config.acceptors; ++i) {
        rt.acceptor_wake.emplace_back(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
        int cv[2];
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, cv) != 0)
            throw std::runtime_error(std::string("socketpair: ") + strerror(errno));
        rt.control_master.emplace_back(cv[0]);
        rt.control_acceptor.emplace_back(cv[1]);
    }
    rt.master_wake.reset(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    // Where the previous generation's idle connections arrive after a reload.
    rt.handover.reset(bind_abstract(ipc_.handover(rt.generation), SOCK_DGRAM));
    if (!rt.handover) throw std::runtime_error(std::string("handover socket: ") + strerror(errno));
    pass_credentials(rt.handover.get());  // from its first datagram on: acceptors check who sent each
}

void Master::start_generation(Generation& g) {
    uint64_t n = g.rt.generation;
    for (uint32_t i = 0; i < g.rt.slots.size(); ++i)
        g.workers.push_back(&children_.add(ChildKind::Worker, n, i, true));
    for (uint32_t i = 0; i < uint32_t(g.rt.config.acceptors); ++i)
        g.acceptors.push_back(&children_.add(ChildKind::Acceptor, n, i, true));
    for (uint32_t i = 0; i < g.acceptors.size(); ++i) spawn_acceptor(g, i);
    tend(g);  // starts every worker
    log::info("generation %llu: listening on %s with %zu acceptors and %zu worker slots",
              (unsigned long long)n, listen_text(g.rt.config).c_str(), g.acceptors.size(), g.workers.size());
}

Master::Generation* Master::generation(uint64_t number) {
    for (auto& g : gens_)
        if (g->rt.generation == number) return g.get();
    return nullptr;
}

void Master::spawn_acceptor(Generation& g, uint32_t i) {
    Child& a = *g.acceptors[i];
    bool ok = children_.spawn(a, g.rt.config.creds, [&] {
        log::set_role("acceptor " + std::to_string(i));
        close_inherited(&g);
        for (uint32_t j = 0; j < g.rt.control_acceptor.size(); ++j)
            if (j != i) g.rt.control_acceptor[j].reset();
        int status;
        {
            Acceptor acceptor(g.rt, i);
            status = acceptor.run();
        }
        _exit(status);
    });
    if (ok)
        log::debug("acceptor %u of generation %llu started (pid %d)", i, (unsigned long long)g.rt.generation,
                   a.pid);
}

// A slot's socketpair: the server end non-blocking, and saying who wrote each chunk.
bool Master::slot_socketpair(SlotRuntime& s) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return false;
    set_nonblocking(sv[0]);
    pass_credentials(sv[0]);
    s.server_end.reset(sv[0]);
    s.worker_end.reset(sv[1]);
    return true;
}

// A new worker on a slot that had one gets a fresh socketpair, so nothing the old one left
// (bytes in flight, or a process that kept its fds 3 and 4) can reach the new one or its
// clients. Every acceptor gets the new server end before the slot can be leased.
void Master::renew_slot_socket(Generation& g, uint32_t slot) {
    SlotRuntime& sr = g.rt.slots[slot];
    if (!slot_socketpair(sr)) {
        log::error("slot %u keeps its socket (socketpair: %s); draining it", slot, strerror(errno));
        drain(sr.server_end.get());
        drain(sr.worker_end.get());
        return;
    }
    ++sr.epoch;
    g.rt.seg->slot(slot).epoch.store(sr.epoch);
    std::string msg = slot_change(slot, sr.epoch);
    int fd = sr.server_end.get();
    for (uint32_t i = 0; i < g.acceptors.size(); ++i) {
        Child& a = *g.acceptors[i];
        if (!a.pid) continue;  // one started later is forked with the current sockets
        if (send_with_fds(g.rt.control_master[i].get(), msg, &fd, 1) != ssize_t(msg.size())) {
            log::error("acceptor %u did not take slot %u's new socket (%s); restarting it", i, slot, strerror(errno));
            Children::kill(a, SIGKILL);
        }
    }
}

void Master::start_worker(Generation& g, uint32_t slot) {
    Segment& seg = *g.rt.seg;
    Slot& s = seg.slot(slot);
    const ModuleRuntime& mr = g.rt.modules[s.module];
    SlotRuntime& sr = g.rt.slots[slot];
    if (s.started_us.load() != 0) renew_slot_socket(g, slot);  // not the slot's first worker
    s.answerer = 0;
    std::string line = worker_shell_line(mr.config->command);
    int sock = sr.worker_end.get();
    Child& w = *g.workers[slot];
    Fd err_read, err_write;
    stderr_pipe(err_read, err_write);
    bool ok = children_.spawn(w, mr.config->creds, [&] {
        if (err_write) dup2(err_write.get(), 2);
        give_worker_its_slot(sock);
        exec_shell(line, 5);
    });
    if (!ok) return;
    w.output.attach(std::move(err_read));
    s.pid = w.pid;
    s.retire = 0;
    s.started_us = now_us();
    log::debug("worker for '%s' started on slot %u (pid %d)", mr.name.c_str(), slot, w.pid);
    wake_acceptor(g, seg.release(slot));
}

void Master::wake_acceptor(Generation& g, int32_t i) {
    if (i < 0 || size_t(i) >= g.rt.acceptor_wake.size()) return;
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(g.rt.acceptor_wake[size_t(i)].get(), &one, sizeof one);
}

// ---- deaths and tending -----------------------------------------------------------------

// Each line a worker writes on stderr goes to the error log (level 2, notices), and
// the last few are kept for the report if it dies young.
void Master::relay_output(Child& c, pid_t pid) {
    std::string who = "the companion Erlang VM";
    if (c.kind == ChildKind::Worker) {
        Generation* g = generation(c.generation);
        if (!g) return c.output.close();
        who = "worker " + std::to_string(pid) + " for '" +
              g->rt.modules[g->rt.seg->slot(c.index).module].name + "'";
    }
    c.output.pump(
        [&](std::string_view line) { log::info("%s: %.*s", who.c_str(), int(line.size()), line.data()); });
}

void Master::worker_exited(Generation& g, Child& w, pid_t pid, int status) {
    Segment& seg = *g.rt.seg;
    Slot& s = seg.slot(w.index);
    relay_output(w, pid);  // what it wrote before it went
    w.output.close();
    bool expected = w.term_sent_us != 0 || !w.respawn;
    int64_t now = monotonic_us();
    if (expected) {
        w.backoff.reset(now);
    } else if (now - w.started_us < kHealthyUs && !s.retire.load()) {
        worker_died_young(g, w, pid, status);
        w.backoff.failed(w.started_us, now, kHealthyUs, kBackoffCapUs);
    } else {
        log::warn("worker %d for '%s' (slot %u) %s", pid, g.rt.modules[s.module].name.c_str(), w.index,
                  describe_status(status).c_str());
        if (now - w.started_us >= kHealthyUs) module_healthy(g, s.module);
        w.backoff.failed(w.started_us, now, kHealthyUs, kBackoffCapUs);
    }
    s.pid = 0;
    s.restarts.fetch_add(1);
    seg.header().stats.worker_restarts.fetch_add(1);
    wake_acceptor(g, seg.worker_died(w.index));
}

// Died within its first second, unasked: said with its last words on stderr. After a
// few in a row the module is failing: the log says so, and stats and the error answers
// clients get name the reason (the segment's failure note).
void Master::worker_died_young(Generation& g, Child& w, pid_t pid, int status) {
    uint32_t m = g.rt.seg->slot(w.index).module;
    const std::string& name = g.rt.modules[m].name;
    std::string how = describe_status(status);
    std::string tail = w.output.tail();
    std::string words = tail.empty() ? "it wrote nothing on stderr" : "its last lines on stderr: " + tail;
    log::error("worker %d for '%s' %s within its first second; %s", pid, name.c_str(), how.c_str(),
               words.c_str());
    if (++g.quick_exits[m] < kFailingAfter) return;
    std::string why =
        "its workers exit within a second of starting (" + how + (tail.empty() ? "" : ": " + tail) + ")";
    g.rt.seg->set_module_failure(m, why);
    if (g.quick_exits[m] == kFailingAfter)
        log::error("module '%s' is failing: %s", name.c_str(), why.c_str());
}

// A worker of `module` lived past its first second: the module works (again).
void Master::module_healthy(Generation& g, uint32_t module) {
    if (g.quick_exits[module] >= kFailingAfter) {
        g.rt.seg->set_module_failure(module, "");
        log::info("module '%s' works again", g.rt.modules[module].name.c_str());
    }
    g.quick_exits[module] = 0;
}

void Master::acceptor_exited(Generation& g, Child& a, int status) {
    if (!a.respawn) return;
    log::error("acceptor %u %s; restarting it", a.index, describe_status(status).c_str());
    Segment& seg = *g.rt.seg;
    seg.header().stats.acceptor_restarts.fetch_add(1);
    // Its requests in flight are lost with it; their workers may be mid-answer, so
    // they are replaced rather than handed on with stale bytes.
    for (uint32_t s = 0; s < seg.nslots(); ++s) {
        Slot& sl = seg.slot(s);
        uint32_t st = sl.state.load();
        if ((st == uint32_t(SlotState::Leased) || st == uint32_t(SlotState::Dead)) &&
            sl.owner.load() == int32_t(a.index)) {
            sl.retire = 1;
            seg.mark_reaping(s);
        }
    }
    a.backoff.failed(a.started_us, monotonic_us(), kHealthyUs, kBackoffCapUs);
}

// Restarts what died and replaces retired workers (where the generation serves), and
// asks retired workers to go (everywhere), killing those that outstay their grace.
void Master::tend(Generation& g) {
    Segment& seg = *g.rt.seg;
    int64_t now = monotonic_us();
    bool serving = this->serving() && g.phase == Generation::Phase::Serving;
    for (uint32_t i = 0; i < g.workers.size(); ++i) {
        Child& w = *g.workers[i];
        Slot& s = seg.slot(i);
        uint32_t st = s.state.load();
        if (serving && st == uint32_t(SlotState::Idle) && s.retire.load() && w.pid) {
            seg.mark_reaping(i);  // reload-handlers: an idle worker goes at once
            st = uint32_t(SlotState::Reaping);
        }
        if (w.pid && g.quick_exits[s.module] && now - w.started_us >= kHealthyUs) module_healthy(g, s.module);
        if (st != uint32_t(SlotState::Reaping)) continue;
        if (w.pid) {
            if (!Children::ask_to_go(w, now) && now - w.term_sent_us > kRetireGraceUs)
                Children::kill(w, SIGKILL);
        } else if (w.respawn && now >= w.backoff.retry_at_us) {
            start_worker(g, i);
        }
    }
    for (Child* a : g.acceptors)
        if (a->respawn && !a->pid && now >= a->backoff.retry_at_us) spawn_acceptor(g, a->index);
}

// A generation that no longer serves: once its acceptors are gone nothing can reach
// its workers, so those are asked to go; past its deadline, what is left is killed.
// True once none of its children runs.
bool Master::wind_down(Generation& g, int64_t now) {
    bool acceptors = false, workers = false;
    for (Child* a : g.acceptors) acceptors |= a->pid != 0;
    for (Child* w : g.workers) workers |= w->pid != 0;
    if (!acceptors && !g.workers_told) {
        for (Child* w : g.workers) Children::ask_to_go(*w, now);
        g.workers_told = true;
    }
    if (now > g.drain_deadline_us) {
        for (Child* a : g.acceptors) Children::kill(*a, SIGKILL);
        for (Child* w : g.workers) Children::kill(*w, SIGKILL);
    }
    return !acceptors && !workers;
}

void Master::retire_old_generations() {
    int64_t now = monotonic_us();
    for (size_t i = 0; i + 1 < gens_.size();) {
        Generation& g = *gens_[i];
        if (!wind_down(g, now)) {
            ++i;
            continue;
        }
        log::info("generation %llu finished", (unsigned long long)g.rt.generation);
        g.rt.seg->remove();
        children_.forget_generation(g.rt.generation);
        gens_.erase(gens_.begin() + long(i));
    }
}

void Master::stop_generation(Generation& g, int64_t deadline_us) {
    if (g.phase == Generation::Phase::Draining) {
        g.drain_deadline_us = std::min(g.drain_deadline_us, deadline_us);
    } else {
        g.phase = Generation::Phase::Draining;
        g.drain_deadline_us = deadline_us;
    }
    for (Child* c : g.acceptors) c->respawn = false;
    for (Child* c : g.workers) c->respawn = false;
}

// ---- reloads --------------------------------------------------------------------------------

// SIGHUP: the file is read again and a new generation built from it; only once that
// worked does it serve, while the old one finishes its requests and goes.
void Master::reload_config() {
    notify::reloading("reloading " + opts_.config);
    std::unique_ptr<Generation> g;
    try {
        Config c = load_config(opts_.config);
        apply_overrides(opts_, c);
        resolve_users(c);  // the new generation runs as this file's user
        give_file(c.access_log, c.creds);
        if (!id_.enabled) {
            // The first native module (or erlang section) arrives with this reload: bertd's
            // identity is decided now, and kept for the server's life like any other.
            id_ = erl::resolve_identity(opts_, c);
            start_erlang();
        }
        open_listen_socket(c);  // keeps the sockets whose address stays; all or nothing
        g = build_generation(std::move(c), next_generation_);
    } catch (const std::exception& e) {
        log::error("reload refused, still serving the previous configuration: %s", e.what());
        notify::ready(std::string("reload refused (") + e.what() + "); " + status_line(current().rt));
        return;
    }
    ++next_generation_;
    Generation& old = current();
    carry_stats(*old.rt.seg, *g->rt.seg);
    gens_.push_back(std::move(g));
    Generation& fresh = current();
    start_generation(fresh);
    log::info("configuration reloaded: generation %llu serves, generation %llu finishes its requests",
              (unsigned long long)fresh.rt.generation, (unsigned long long)old.rt.generation);
    if (id_.enabled) erlang_reloaded(fresh.rt.config);
    notify::ready(status_line(fresh.rt));
    // The old acceptors stop accepting, finish what they hold, and pass each idle
    // connection to the new generation, so a client never sees its connection drop. Every
    // draining generation hands to the newest: one that is itself about to go would take
    // connections it may exit before it reads.
    for (auto& d : gens_)
        if (d.get() != &fresh) d->rt.seg->header().successor = fresh.rt.generation;
    stop_generation(old, monotonic_us() + kDrainUs);
    for (Child* a : old.acceptors) Children::kill(*a, SIGQUIT);
}

void Master::reload_handlers() {
    log::info("reloading handlers: every worker is replaced after its current request");
    Segment& seg = *current().rt.seg;
    for (uint32_t i = 0; i < seg.nslots(); ++i) seg.slot(i).retire = 1;
}

}  // namespace bertd
