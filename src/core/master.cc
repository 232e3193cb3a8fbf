// master.cc: the master's life in one loop, after nginx's. Signal handlers only
// set flags; the loop sleeps in ppoll (signals are unblocked only there) and acts
// on each flag in a fixed order: reap, stop, reload config, reload handlers,
// reopen logs, then tend every generation. It never touches a client byte.
#include "core/master.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "erl/link.h"
#include "io/unix.h"
#include "log/log.h"
#include "net/acceptor.h"

namespace bertd {

namespace {
volatile sig_atomic_t g_reap, g_terminate, g_quit, g_reload, g_reopen, g_reload_handlers;

void on_signal(int sig) {
    switch (sig) {
        case SIGCHLD: g_reap = 1; break;
        case SIGTERM:
        case SIGINT: g_terminate = 1; break;
        case SIGQUIT: g_quit = 1; break;
        case SIGHUP: g_reload = 1; break;
        case SIGUSR1: g_reopen = 1; break;
        case SIGUSR2: g_reload_handlers = 1; break;
    }
}

constexpr int kSignals[] = {SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2};
constexpr int64_t kStopGraceUs = 10'000'000;   // then stragglers are killed
constexpr int64_t kRetireGraceUs = 2'000'000;  // a retired worker gets this long to exit on SIGTERM
constexpr int64_t kDrainUs = 60'000'000;       // an old generation's longest request, after a reload

int64_t backoff_us(int fails) {
    if (fails <= 1) return 0;
    int64_t d = 100'000LL << std::min(fails - 2, 6);
    return std::min<int64_t>(d, 5'000'000);
}

unsigned ncpus() {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? unsigned(n) : 1;
}

std::string describe_status(int status) {
    if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return std::string("killed by signal ") + strsignal(WTERMSIG(status));
    return "stopped";
}

}  // namespace

void apply_overrides(const Options& o, Config& c) {
    if (o.port >= 0) c.port = o.port;
    if (o.log_level >= 0) c.log_level = o.log_level;
    if (!o.access_log.empty()) c.access_log = o.access_log;
    if (!o.pidfile.empty()) c.pidfile = o.pidfile;
}

Master::Master(Options opts, Config config, int ready_fd)
    : opts_(std::move(opts)), first_config_(std::move(config)), ready_fd_(ready_fd) {}

// ---- set-up ---------------------------------------------------------------------

void Master::open_listen_socket(const Config& c) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV;
    addrinfo* res = nullptr;
    std::string port = std::to_string(c.port);
    if (int rc = getaddrinfo(c.listen.c_str(), port.c_str(), &hints, &res); rc != 0)
        throw std::runtime_error("listen address '" + c.listen + "' (" + c.path +
                                 "): not a numeric IPv4 or IPv6 address: " + gai_strerror(rc));
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 4096) != 0) {
        std::string err = strerror(errno);
        freeaddrinfo(res);
        if (fd >= 0) ::close(fd);
        throw std::runtime_error("cannot listen on " + c.listen + " port " + port + ": " + err +
                                 " (is another server on that port? choose another with -p)");
    }
    freeaddrinfo(res);
    listen_fd_.reset(fd);
    listen_key_ = c.listen + " " + port;
}

std::unique_ptr<Master::Generation> Master::build_generation(Config config, uint64_t number) {
    auto g = std::make_unique<Generation>();
    Runtime& rt = g->rt;
    rt.config = std::move(config);
    rt.generation = number;
    Config& c = rt.config;
    if (c.acceptors == 0) c.acceptors = int(ncpus());
    rt.access_log_path = c.access_log;
    rt.listen_fd.reset(fcntl(listen_fd_.get(), F_DUPFD_CLOEXEC, 3));

    uint32_t nslots = 0;
    for (const auto& m : c.modules) {
        if (m.type != ModuleConfig::Type::External) continue;
        ModuleRuntime mr;
        mr.name = m.name;
        mr.index = uint32_t(rt.modules.size());
        mr.config = &m;
        rt.module_index[m.name] = mr.index;
        rt.modules.push_back(mr);
        nslots += uint32_t(m.count);
    }
    // Native modules get a module entry too, for their stats (no slots, no queue use).
    std::vector<const ModuleConfig*> natives;
    for (const auto& m : c.modules)
        if (m.type == ModuleConfig::Type::Native) natives.push_back(&m);
    size_t nmods = rt.modules.size() + natives.size();
    rt.ipc = ipc_;
    rt.seg = Segment::create(ipc_.segment(number), uint32_t(std::max<size_t>(nmods, 1)), std::max<uint32_t>(nslots, 1),
                             uint32_t(c.acceptors), uint32_t(c.limits.max_queue));
    Segment& seg = *rt.seg;
    seg.header().master_pid = getpid();
    seg.header().stats.started_us = now_us();
    seg.header().stats.generation = number;

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
    if (id_.enabled) rt.link_address = ipc_.link();
    rt.slots.resize(nslots);
    for (auto& s : rt.slots) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
            throw std::runtime_error(std::string("socketpair: ") + strerror(errno));
        s.server_end.reset(sv[0]);
        s.worker_end.reset(sv[1]);
        set_nonblocking(sv[0]);
    }
    for (int i = 0; i < c.acceptors; ++i) rt.acceptor_wake.emplace_back(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    rt.master_wake.reset(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));

    // Where the previous generation's idle connections arrive after a reload.
    rt.handover.reset(bind_abstract(ipc_.handover(number), SOCK_DGRAM));
    if (!rt.handover)
        throw std::runtime_error(std::string("handover socket: ") + strerror(errno));
    pass_credentials(rt.handover.get());  // from its first datagram on: acceptors check who sent each

    g->workers.resize(nslots);
    g->acceptors.resize(size_t(c.acceptors));
    return g;
}

// Carries the counters an operator watches across a reload.
static void carry_stats(Segment& from, Segment& to) {
    GlobalStats& a = from.header().stats;
    GlobalStats& b = to.header().stats;
    b.connections_total = a.connections_total.load();
    b.connections_completed = a.connections_completed.load() + a.connections_active.load();
    b.connections_refused = a.connections_refused.load();
    b.protocol_errors = a.protocol_errors.load();
    b.unknown_module = a.unknown_module.load();
    b.acceptor_restarts = a.acceptor_restarts.load();
    b.worker_restarts = a.worker_restarts.load();
    b.started_us = a.started_us.load();
    for (uint32_t i = 0; i < to.nmodules(); ++i)
        for (uint32_t j = 0; j < from.nmodules(); ++j) {
            ModuleShared& x = from.module(j);
            ModuleShared& y = to.module(i);
            if (x.name[0] == 0 || (x.nslots == 0) != (y.nslots == 0) || strcmp(x.name, y.name) != 0) continue;
            y.stats.requests = x.stats.requests.load();
            for (int t = 0; t < kErrorTypes; ++t) y.stats.errors[t] = x.stats.errors[t].load();
        }
}

void Master::start_generation(Generation& g) {
    for (uint32_t i = 0; i < g.acceptors.size(); ++i) spawn_acceptor(g, i);
    tend(g);  // starts every worker
    log::info("generation %llu: listening on %s port %d with %zu acceptors and %zu worker slots",
              (unsigned long long)g.rt.generation, g.rt.config.listen.c_str(), g.rt.config.port, g.acceptors.size(),
              g.workers.size());
}

void Master::spawn_acceptor(Generation& g, uint32_t i) {
    pid_t pid = fork();
    if (pid < 0) {
        log::error("fork acceptor %u: %s", i, strerror(errno));
        g.acceptors[i].respawn_at_us = monotonic_us() + 1'000'000;
        return;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the master
        for (int s : kSignals) signal(s, SIG_DFL);
        log::set_role("acceptor " + std::to_string(i));
        // Only this generation's parts stay open in the child.
        Runtime* mine = &g.rt;
        for (auto& other : gens_)
            if (&other->rt != mine) {
                other->rt.listen_fd.reset();
                other->rt.slots.clear();
                other->rt.handover.reset();
            }
        listen_fd_.reset();
        if (ready_fd_ >= 0) ::close(ready_fd_);
        for (auto& s : g.rt.slots) s.worker_end.reset();
        int status;
        {
            Acceptor a(g.rt, i);
            status = a.run();
        }
        _exit(status);
    }
    g.acceptors[i].pid = pid;
    g.acceptors[i].started_us = monotonic_us();
    log::debug("acceptor %u of generation %llu started (pid %d)", i, (unsigned long long)g.rt.generation, pid);
}

void Master::start_worker(Generation& g, uint32_t slot) {
    Segment& seg = *g.rt.seg;
    Slot& s = seg.slot(slot);
    const ModuleRuntime& mr = g.rt.modules[s.module];
    // Whatever a dead worker left unread or half-written must not reach the next one.
    size_t stale = drain(g.rt.slots[slot].server_end.get()) + drain(g.rt.slots[slot].worker_end.get());
    if (stale) log::debug("slot %u: drained %zu stale bytes", slot, stale);
    pid_t pid = spawn_worker(mr.config->command, g.rt.slots[slot].worker_end.get());
    WorkerState& w = g.workers[slot];
    if (pid < 0) {
        log::error("fork worker for '%s': %s", mr.name.c_str(), strerror(errno));
        w.respawn_at_us = monotonic_us() + 1'000'000;
        return;
    }
    w.pid = pid;
    w.started_us = monotonic_us();
    w.term_sent_us = 0;
    s.pid = pid;
    s.retire = 0;
    s.started_us = now_us();
    log::debug("worker for '%s' started on slot %u (pid %d)", mr.name.c_str(), slot, pid);
    wake_acceptor(g, seg.release(slot));
}

void Master::wake_acceptor(Generation& g, int32_t i) {
    if (i < 0 || size_t(i) >= g.rt.acceptor_wake.size()) return;
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(g.rt.acceptor_wake[size_t(i)].get(), &one, sizeof one);
}

// ---- children ----------------------------------------------------------------------

void Master::reap_children() {
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0) return;
        if (pid == link_.pid) erlang_exited(link_, "the Erlang link", status);
        if (pid == companion_.pid) erlang_exited(companion_, "the companion Erlang VM", status);
        for (auto& g : gens_) {
            for (uint32_t i = 0; i < g->workers.size(); ++i)
                if (g->workers[i].pid == pid) worker_exited(*g, i, status);
            for (uint32_t i = 0; i < g->acceptors.size(); ++i)
                if (g->acceptors[i].pid == pid) acceptor_exited(*g, i, status);
        }
    }
}

void Master::worker_exited(Generation& g, uint32_t slot, int status) {
    WorkerState& w = g.workers[slot];
    Segment& seg = *g.rt.seg;
    Slot& s = seg.slot(slot);
    const std::string& name = g.rt.modules[s.module].name;
    bool expected = w.term_sent_us != 0 || phase_ != Phase::Running || g.phase != Generation::Phase::Serving;
    if (!expected)
        log::warn("worker %d for '%s' (slot %u) %s", w.pid, name.c_str(), slot, describe_status(status).c_str());
    w.pid = 0;
    s.pid = 0;
    int64_t now = monotonic_us();
    if (!expected) {
        w.fails = now - w.started_us < 1'000'000 ? w.fails + 1 : 1;
        w.respawn_at_us = now + backoff_us(w.fails);
    } else {
        w.fails = 0;
        w.respawn_at_us = now;
    }
    s.restarts.fetch_add(1);
    seg.header().stats.worker_restarts.fetch_add(1);
    wake_acceptor(g, seg.worker_died(slot));
}

void Master::acceptor_exited(Generation& g, uint32_t i, int status) {
    AcceptorState& a = g.acceptors[i];
    a.pid = 0;
    if (phase_ != Phase::Running || g.phase != Generation::Phase::Serving) return;
    log::error("acceptor %u %s; restarting it", i, describe_status(status).c_str());
    Segment& seg = *g.rt.seg;
    seg.header().stats.acceptor_restarts.fetch_add(1);
    // Its requests in flight are lost with it; their workers may be mid-answer, so
    // they are replaced rather than handed on with stale bytes.
    for (uint32_t s = 0; s < seg.nslots(); ++s) {
        Slot& sl = seg.slot(s);
        uint32_t st = sl.state.load();
        if ((st == uint32_t(SlotState::Leased) || st == uint32_t(SlotState::Dead)) && sl.owner.load() == int32_t(i)) {
            sl.retire = 1;
            seg.mark_reaping(s);
        }
    }
    int64_t now = monotonic_us();
    a.fails = now - a.started_us < 1'000'000 ? a.fails + 1 : 1;
    a.respawn_at_us = now + backoff_us(a.fails);
}

// Restarts what died, replaces retired workers, and respawns acceptors.
void Master::tend(Generation& g) {
    Segment& seg = *g.rt.seg;
    int64_t now = monotonic_us();
    bool serving = phase_ == Phase::Running && g.phase == Generation::Phase::Serving;
    for (uint32_t i = 0; i < g.workers.size(); ++i) {
        WorkerState& w = g.workers[i];
        Slot& s = seg.slot(i);
        uint32_t st = s.state.load();
        if (serving && st == uint32_t(SlotState::Idle) && s.retire.load() && w.pid) {
            seg.mark_reaping(i);  // reload-handlers: an idle worker goes at once
            st = uint32_t(SlotState::Reaping);
        }
        if (st != uint32_t(SlotState::Reaping)) continue;
        if (w.pid) {
            if (w.term_sent_us == 0) {
                kill(w.pid, SIGTERM);
                w.term_sent_us = now;
            } else if (now - w.term_sent_us > kRetireGraceUs) {
                kill(w.pid, SIGKILL);
            }
        } else if (serving && now >= w.respawn_at_us) {
            start_worker(g, i);
        }
    }
    if (!serving) return;
    for (uint32_t i = 0; i < g.acceptors.size(); ++i)
        if (g.acceptors[i].pid == 0 && now >= g.acceptors[i].respawn_at_us) spawn_acceptor(g, i);
}

// Old generations: once their acceptors are gone nothing can reach their workers,
// so those are stopped; once everything is gone the generation is dropped.
void Master::retire_old_generations() {
    int64_t now = monotonic_us();
    for (size_t i = 0; i + 1 < gens_.size();) {
        Generation& g = *gens_[i];
        bool acceptors = false, workers = false;
        for (auto& a : g.acceptors) acceptors |= a.pid != 0;
        for (auto& w : g.workers) workers |= w.pid != 0;
        if (!acceptors && !g.workers_told) {
            signal_children(g, SIGTERM, false, true);
            g.workers_told = true;
        }
        if (now > g.drain_deadline_us) signal_children(g, SIGKILL, true, true);
        if (!acceptors && !workers) {
            log::info("generation %llu finished", (unsigned long long)g.rt.generation);
            g.rt.seg->remove();
            gens_.erase(gens_.begin() + long(i));
            continue;
        }
        ++i;
    }
}

// ---- reloads ------------------------------------------------------------------------

void Master::reload_config() {
    Config c;
    try {
        c = load_config(opts_.config);
        apply_overrides(opts_, c);
    } catch (const ConfigError& e) {
        log::error("reload refused, still serving the previous configuration: %s", e.what());
        return;
    }
    bool link_was_off = !id_.enabled;
    if (link_was_off) {
        // The first native module (or erlang section) arrives with this reload: bertd's
        // identity is decided now, and kept for the server's life like any other.
        try {
            id_ = erl::resolve_identity(opts_, c);
        } catch (const ConfigError& e) {
            log::error("reload refused, still serving the previous configuration: %s", e.what());
            return;
        }
        if (id_.enabled) {
            setenv("BERTD_ERLANG", ("@" + ipc_.link_handlers()).c_str(), 1);
            link_.wanted = true;  // tend_erlang starts it
        }
    }
    std::unique_ptr<Generation> g;
    try {
        if (c.listen + " " + std::to_string(c.port) != listen_key_) {
            Fd old = std::move(listen_fd_);
            try {
                open_listen_socket(c);
            } catch (...) {
                listen_fd_ = std::move(old);
                throw;
            }
        }
        g = build_generation(std::move(c), next_generation_);
    } catch (const std::exception& e) {
        log::error("reload refused, still serving the previous configuration: %s", e.what());
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
    if (id_.enabled) {
        if (link_.pid) kill(link_.pid, SIGHUP);  // it re-reads the file: native modules, registered names
        const Config& nc = fresh.rt.config;
        if (erl::needs_companion(nc) && id_.companion.empty())
            log::warn("native modules with codepaths need a companion VM: restart bertd to start one");
        bool wanted = erl::needs_companion(nc) && !id_.companion.empty();
        erl::CompanionCommand cmd = wanted ? erl::companion_command(id_, nc, opts_) : erl::CompanionCommand{};
        if (cmd.command != companion_cmd_.command || cmd.env != companion_cmd_.env || wanted != companion_.wanted) {
            // New code paths or options: the VM is restarted with them.
            companion_cmd_ = cmd;
            companion_.wanted = wanted;
            companion_.fails = 0;
            companion_.respawn_at_us = 0;
            if (companion_.pid) kill(companion_.pid, SIGTERM);
        }
    }
    // The old acceptors stop accepting, finish what they hold, and pass each idle
    // connection to the new generation, so a client never sees its connection drop.
    old.rt.seg->header().successor = fresh.rt.generation;
    old.phase = Generation::Phase::Draining;
    old.drain_deadline_us = monotonic_us() + kDrainUs;
    signal_children(old, SIGQUIT, true, false);
}

void Master::reload_handlers() {
    log::info("reloading handlers: every worker is replaced after its current request");
    Segment& seg = *current().rt.seg;
    for (uint32_t i = 0; i < seg.nslots(); ++i) seg.slot(i).retire = 1;
}

// ---- stopping -------------------------------------------------------------------------

void Master::signal_children(Generation& g, int sig, bool acceptors, bool workers) {
    if (acceptors)
        for (auto& a : g.acceptors)
            if (a.pid) kill(a.pid, sig);
    if (workers)
        for (auto& w : g.workers)
            if (w.pid) kill(w.pid, sig);
}

void Master::signal_all(int sig, bool acceptors, bool workers) {
    for (auto& g : gens_) signal_children(*g, sig, acceptors, workers);
}

void Master::begin_stop(bool graceful) {
    if (graceful && phase_ == Phase::Running) {
        log::info("stopping gracefully: no new connections, finishing requests in flight");
        phase_ = Phase::Quitting;
        listen_fd_.reset();
        for (auto& g : gens_) g->rt.seg->header().successor = 0;
        signal_all(SIGQUIT, true, false);
    } else if (!graceful && phase_ != Phase::Terminating) {
        log::info("stopping now");
        phase_ = Phase::Terminating;
        listen_fd_.reset();
        signal_all(SIGTERM, true, true);  // the Erlang link and VM go once the acceptors have
    }
    stop_deadline_us_ = monotonic_us() + kStopGraceUs;
}

bool Master::anything_alive() const {
    if (link_.pid || companion_.pid) return true;
    for (const auto& g : gens_) {
        for (const auto& a : g->acceptors)
            if (a.pid) return true;
        for (const auto& w : g->workers)
            if (w.pid) return true;
    }
    return false;
}

int64_t Master::next_deadline() const {
    int64_t next = monotonic_us() + 1'000'000;
    for (const auto& g : gens_) {
        // Respawns matter only where children are respawned; elsewhere a past
        // respawn time would make ppoll return at once, for ever.
        bool respawning = phase_ == Phase::Running && g->phase == Generation::Phase::Serving;
        for (const auto& w : g->workers) {
            if (respawning && !w.pid && w.respawn_at_us) next = std::min(next, w.respawn_at_us);
            if (w.pid && w.term_sent_us) next = std::min(next, w.term_sent_us + kRetireGraceUs + 1000);
        }
        for (const auto& a : g->acceptors)
            if (respawning && !a.pid) next = std::min(next, a.respawn_at_us);
    }
    if (phase_ != Phase::Running) next = std::min(next, stop_deadline_us_);
    for (const ErlangProcess* p : {&link_, &companion_})
        if (p->wanted && !p->pid) next = std::min(next, p->respawn_at_us);
    return next;
}

// ---- pidfile and readiness --------------------------------------------------------------

void Master::write_pidfile() {
    const std::string& path = current().rt.config.pidfile;
    if (path.empty()) return;
    std::string tmp = path + ".tmp";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    std::string text = std::to_string(getpid()) + "\n";
    if (fd < 0 || ::write(fd, text.data(), text.size()) != ssize_t(text.size()) || ::close(fd) != 0 ||
        rename(tmp.c_str(), path.c_str()) != 0)
        throw std::runtime_error("cannot write the pidfile " + path + ": " + strerror(errno));
    pidfile_written_ = true;
}

void Master::remove_pidfile() {
    if (!pidfile_written_) return;
    const std::string& path = first_config_.pidfile;
    // Only our own: a second server may have replaced it meanwhile.
    char buf[32] = {0};
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    if (n > 0 && atoi(buf) == getpid()) unlink(path.c_str());
}

void Master::notify_ready(const std::string& msg) {
    if (ready_fd_ < 0) return;
    [[maybe_unused]] ssize_t n = ::write(ready_fd_, msg.data(), msg.size());
    ::close(ready_fd_);
    ready_fd_ = -1;
}

// ---- the Erlang link and the companion VM --------------------------------------------------

// In a child: closes what belongs to the generations (listen sockets, slot and
// hand-over sockets), so that only the master and the acceptors hold them.
void Master::close_inherited() {
    listen_fd_.reset();
    if (ready_fd_ >= 0) ::close(ready_fd_);
    ready_fd_ = -1;
    for (auto& g : gens_) {
        g->rt.listen_fd.reset();
        g->rt.slots.clear();
        g->rt.handover.reset();
    }
}

void Master::spawn_link() {
    pid_t master = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        log::error("fork the Erlang link: %s", strerror(errno));
        link_.respawn_at_us = monotonic_us() + 1'000'000;
        return;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        for (int s : kSignals) signal(s, SIG_DFL);
        log::set_role("erlang link");
        prctl(PR_SET_NAME, "bertd-link");  // so ps and tests can tell it from the acceptors
        close_inherited();
        Config c = gens_.empty() ? first_config_ : current().rt.config;
        int status = erl::run_link(opts_, c, id_, master, ipc_);
        _exit(status);
    }
    link_.pid = pid;
    link_.started_us = monotonic_us();
    log::debug("Erlang link started (pid %d) as node %s", pid, id_.cnode.c_str());
}

void Master::spawn_companion() {
    pid_t pid = fork();
    if (pid < 0) {
        log::error("fork the companion Erlang VM: %s", strerror(errno));
        companion_.respawn_at_us = monotonic_us() + 1'000'000;
        return;
    }
    if (pid == 0) {
        // erl execs erlexec, which execs beam: the death signal stays with the VM.
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, nullptr);
        for (int s : kSignals) signal(s, SIG_DFL);
        signal(SIGPIPE, SIG_DFL);
        int null = open("/dev/null", O_RDONLY);
        if (null >= 0) {
            dup2(null, 0);
            if (null != 0) ::close(null);
        }
        close_fds_from(3, {});
        for (const auto& e : companion_cmd_.env) putenv(const_cast<char*>(e.c_str()));
        execl("/bin/sh", "sh", "-c", companion_cmd_.command.c_str(), static_cast<char*>(nullptr));
        _exit(127);
    }
    companion_.pid = pid;
    companion_.started_us = monotonic_us();
    log::info("companion Erlang VM %s started (pid %d)", id_.companion.c_str(), pid);
    log::debug("companion command: %s", companion_cmd_.command.c_str());
}

void Master::erlang_exited(ErlangProcess& p, const char* what, int status) {
    p.pid = 0;
    if (phase_ != Phase::Running || !p.wanted) return;
    int64_t now = monotonic_us();
    p.fails = now - p.started_us < 5'000'000 ? p.fails + 1 : 1;
    p.respawn_at_us = now + backoff_us(p.fails);  // the first restart at once: requests wait for it
    log::error("%s %s; restarting it", what, describe_status(status).c_str());
}

void Master::tend_erlang() {
    if (phase_ != Phase::Running) return;
    int64_t now = monotonic_us();
    if (link_.wanted && !link_.pid && now >= link_.respawn_at_us) spawn_link();
    if (companion_.wanted && !companion_.pid && now >= companion_.respawn_at_us) spawn_companion();
}

void Master::stop_erlang(int sig) {
    if (sig == SIGTERM && !link_.wanted && !companion_.wanted) return;  // asked already
    link_.wanted = companion_.wanted = false;
    if (link_.pid) kill(link_.pid, sig);
    if (companion_.pid) kill(companion_.pid, sig);
}

// ---- the loop ---------------------------------------------------------------------------

int Master::run() {
    sigset_t block, none;
    sigemptyset(&block);
    sigemptyset(&none);
    for (int s : kSignals) sigaddset(&block, s);
    sigprocmask(SIG_BLOCK, &block, nullptr);
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    for (int s : kSignals) sigaction(s, &sa, nullptr);
    signal(SIGPIPE, SIG_IGN);

    id_ = erl::resolve_identity(opts_, first_config_);
    open_listen_socket(first_config_);
    if (id_.enabled) {
        // Handler workers find the link here (bertd.erlang_rpc and the like).
        setenv("BERTD_ERLANG", ("@" + ipc_.link_handlers()).c_str(), 1);
        link_.wanted = true;
        if (erl::needs_companion(first_config_)) {
            companion_.wanted = true;
            companion_cmd_ = erl::companion_command(id_, first_config_, opts_);
        }
        tend_erlang();
    }
    gens_.push_back(build_generation(first_config_, next_generation_++));
    start_generation(current());
    write_pidfile();
    notify_ready("ok\n");

    for (;;) {
        int64_t wait_us = std::max<int64_t>(0, next_deadline() - monotonic_us());
        timespec ts{time_t(wait_us / 1'000'000), long(wait_us % 1'000'000) * 1000};
        std::vector<pollfd> pfds;
        for (auto& g : gens_) pfds.push_back(pollfd{g->rt.master_wake.get(), POLLIN, 0});
        ppoll(pfds.data(), pfds.size(), &ts, &none);  // the only place signals are delivered
        uint64_t v;
        for (auto& g : gens_)
            while (::read(g->rt.master_wake.get(), &v, sizeof v) > 0) {
            }

        if (g_reap) {
            g_reap = 0;
            reap_children();
        }
        if (g_terminate) {
            g_terminate = 0;
            begin_stop(false);
        }
        if (g_quit) {
            g_quit = 0;
            begin_stop(true);
        }
        if (g_reload) {
            g_reload = 0;
            if (phase_ == Phase::Running) reload_config();
        }
        if (g_reload_handlers) {
            g_reload_handlers = 0;
            reload_handlers();
        }
        if (g_reopen) {
            g_reopen = 0;
            log::reopen();
            signal_all(SIGUSR1, true, false);  // acceptors reopen the access log
        }
        if (phase_ == Phase::Running) {
            tend(current());
            tend_erlang();
            retire_old_generations();
            continue;
        }
        bool any_acceptor = false;
        for (auto& g : gens_)
            for (auto& a : g->acceptors) any_acceptor |= a.pid != 0;
        if (!any_acceptor) stop_erlang(SIGTERM);  // native requests in flight are answered by now
        for (auto& g : gens_) {
            bool acceptors_left = false;
            for (auto& a : g->acceptors) acceptors_left |= a.pid != 0;
            // Once the acceptors have finished, nobody can send a worker more work.
            if (phase_ == Phase::Quitting && !acceptors_left && !g->workers_told) {
                signal_children(*g, SIGTERM, false, true);
                g->workers_told = true;
            }
            tend(*g);  // retired workers still get their SIGKILL
        }
        if (!anything_alive()) break;
        if (monotonic_us() >= stop_deadline_us_) {
            log::warn("children still running after the grace period; killing them");
            signal_all(SIGKILL, true, true);
            stop_erlang(SIGKILL);
            stop_deadline_us_ = monotonic_us() + 1'000'000;
        }
    }
    for (auto& g : gens_) g->rt.seg->remove();
    remove_pidfile();
    log::info("stopped");
    return 0;
}

}  // namespace bertd
