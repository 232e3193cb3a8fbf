// master.cc: the master's life in one loop, after nginx's. Signal handlers only
// set flags; the loop sleeps in ppoll (signals unblocked only there) and acts on
// each flag in a fixed order: reap, stop, reload handlers, reopen logs, tend
// slots and acceptors. It never touches a client byte.
#include "core/master.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

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
constexpr int64_t kStopGraceUs = 10'000'000;  // then stragglers are killed
constexpr int64_t kRetireGraceUs = 2'000'000;  // a retired worker gets this long to exit on SIGTERM

int64_t backoff_us(int fails) {
    if (fails <= 1) return 0;
    int64_t d = 100'000LL << std::min(fails - 2, 6);
    return std::min<int64_t>(d, 5'000'000);
}

unsigned ncpus() {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? unsigned(n) : 1;
}
}  // namespace

Master::Master(Options opts, Config config) : opts_(std::move(opts)) { rt_.config = std::move(config); }

void Master::open_listen_socket() {
    const Config& c = rt_.config;
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
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 4096) != 0) {
        std::string err = strerror(errno);
        freeaddrinfo(res);
        if (fd >= 0) ::close(fd);
        throw std::runtime_error("cannot listen on " + c.listen + " port " + port + ": " + err +
                                 " (is another server on that port? choose another with -p)");
    }
    freeaddrinfo(res);
    rt_.listen_fd.reset(fd);
}

void Master::build_runtime() {
    Config& c = rt_.config;
    if (c.acceptors == 0) c.acceptors = int(ncpus());
    rt_.access_log_path = c.access_log;
    open_listen_socket();

    uint32_t nslots = 0;
    for (const auto& m : c.modules) {
        if (m.type != ModuleConfig::Type::External) continue;
        ModuleRuntime mr;
        mr.name = m.name;
        mr.index = uint32_t(rt_.modules.size());
        mr.config = &m;
        rt_.module_index[m.name] = mr.index;
        rt_.modules.push_back(mr);
        nslots += uint32_t(m.count);
    }
    std::string name = "/bertd." + std::to_string(getpid()) + "." + std::to_string(rt_.generation);
    rt_.seg = Segment::create(name, uint32_t(std::max<size_t>(rt_.modules.size(), 1)), std::max<uint32_t>(nslots, 1),
                              uint32_t(c.acceptors), uint32_t(c.limits.max_queue));
    Segment& seg = *rt_.seg;
    seg.header().stats.started_us = now_us();
    seg.header().stats.generation = rt_.generation;

    uint32_t slot = 0;
    for (const auto& mr : rt_.modules) {
        ModuleShared& ms = seg.module(mr.index);
        ms.first_slot = slot;
        ms.nslots = uint32_t(mr.config->count);
        snprintf(ms.name, sizeof ms.name, "%s", mr.name.c_str());
        for (int i = 0; i < mr.config->count; ++i, ++slot) seg.slot(slot).module = mr.index;
    }
    rt_.slots.resize(nslots);
    for (auto& s : rt_.slots) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
            throw std::runtime_error(std::string("socketpair: ") + strerror(errno));
        s.server_end.reset(sv[0]);
        s.worker_end.reset(sv[1]);
        set_nonblocking(sv[0]);
    }
    for (int i = 0; i < c.acceptors; ++i) rt_.acceptor_wake.emplace_back(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    rt_.master_wake.reset(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    workers_.resize(nslots);
    acceptors_.resize(size_t(c.acceptors));
}

void Master::spawn_acceptor(uint32_t i) {
    pid_t pid = fork();
    if (pid < 0) {
        log::error("fork acceptor %u: %s", i, strerror(errno));
        acceptors_[i].respawn_at_us = monotonic_us() + 1'000'000;
        return;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the master
        for (int s : kSignals) signal(s, SIG_DFL);
        log::set_role("acceptor " + std::to_string(i));
        for (auto& s : rt_.slots) s.worker_end.reset();  // only the master needs these
        int status;
        {
            Acceptor a(rt_, i);
            status = a.run();
        }
        _exit(status);
    }
    acceptors_[i].pid = pid;
    acceptors_[i].started_us = monotonic_us();
    log::debug("acceptor %u started (pid %d)", i, pid);
}

void Master::start_worker(uint32_t slot) {
    Segment& seg = *rt_.seg;
    Slot& s = seg.slot(slot);
    const ModuleRuntime& mr = rt_.modules[s.module];
    // Whatever a dead worker left unread or half-written must not reach the next one.
    size_t stale = drain(rt_.slots[slot].server_end.get()) + drain(rt_.slots[slot].worker_end.get());
    if (stale) log::debug("slot %u: drained %zu stale bytes", slot, stale);
    pid_t pid = spawn_worker(mr.config->command, rt_.slots[slot].worker_end.get());
    WorkerState& w = workers_[slot];
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
    wake_acceptor(seg.make_ready(slot));
}

void Master::wake_acceptor(int32_t i) {
    if (i < 0 || size_t(i) >= rt_.acceptor_wake.size()) return;
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(rt_.acceptor_wake[size_t(i)].get(), &one, sizeof one);
}

void Master::reap_children() {
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0) return;
        bool found = false;
        for (uint32_t i = 0; i < workers_.size() && !found; ++i)
            if (workers_[i].pid == pid) {
                worker_exited(i, status);
                found = true;
            }
        for (uint32_t i = 0; i < acceptors_.size() && !found; ++i)
            if (acceptors_[i].pid == pid) {
                acceptor_exited(i, status);
                found = true;
            }
    }
}

static std::string describe_status(int status) {
    if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return std::string("killed by signal ") + strsignal(WTERMSIG(status));
    return "stopped";
}

void Master::worker_exited(uint32_t slot, int status) {
    WorkerState& w = workers_[slot];
    Segment& seg = *rt_.seg;
    Slot& s = seg.slot(slot);
    const std::string& name = rt_.modules[s.module].name;
    bool expected = w.term_sent_us != 0 || phase_ != Phase::Running;
    if (!expected) log::warn("worker %d for '%s' (slot %u) %s", w.pid, name.c_str(), slot, describe_status(status).c_str());
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
    wake_acceptor(seg.worker_died(slot));
}

void Master::acceptor_exited(uint32_t i, int status) {
    AcceptorState& a = acceptors_[i];
    a.pid = 0;
    if (phase_ != Phase::Running) return;
    log::error("acceptor %u %s; restarting it", i, describe_status(status).c_str());
    Segment& seg = *rt_.seg;
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

void Master::tend_slots() {
    Segment& seg = *rt_.seg;
    int64_t now = monotonic_us();
    for (uint32_t i = 0; i < workers_.size(); ++i) {
        WorkerState& w = workers_[i];
        Slot& s = seg.slot(i);
        uint32_t st = s.state.load();
        if (phase_ == Phase::Running && st == uint32_t(SlotState::Idle) && s.retire.load() && w.pid) {
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
        } else if (phase_ == Phase::Running && now >= w.respawn_at_us) {
            start_worker(i);
        }
    }
}

void Master::tend_acceptors() {
    if (phase_ != Phase::Running) return;
    int64_t now = monotonic_us();
    for (uint32_t i = 0; i < acceptors_.size(); ++i)
        if (acceptors_[i].pid == 0 && now >= acceptors_[i].respawn_at_us) spawn_acceptor(i);
}

void Master::reload_handlers() {
    log::info("reloading handlers: every worker is replaced after its current request");
    Segment& seg = *rt_.seg;
    for (uint32_t i = 0; i < seg.nslots(); ++i) seg.slot(i).retire = 1;
}

void Master::signal_children(int sig, bool acceptors, bool workers) {
    if (acceptors)
        for (auto& a : acceptors_)
            if (a.pid) kill(a.pid, sig);
    if (workers)
        for (auto& w : workers_)
            if (w.pid) kill(w.pid, sig);
}

void Master::begin_stop(bool graceful) {
    if (graceful && phase_ == Phase::Running) {
        log::info("stopping gracefully: no new connections, finishing requests in flight");
        phase_ = Phase::Quitting;
        rt_.listen_fd.reset();
        signal_children(SIGQUIT, true, false);
    } else if (!graceful && phase_ != Phase::Terminating) {
        log::info("stopping now");
        phase_ = Phase::Terminating;
        rt_.listen_fd.reset();
        signal_children(SIGTERM, true, true);
    }
    stop_deadline_us_ = monotonic_us() + kStopGraceUs;
}

bool Master::anything_alive() const {
    for (const auto& a : acceptors_)
        if (a.pid) return true;
    for (const auto& w : workers_)
        if (w.pid) return true;
    return false;
}

int64_t Master::next_deadline() const {
    int64_t next = monotonic_us() + 1'000'000;
    for (const auto& w : workers_) {
        if (!w.pid && w.respawn_at_us) next = std::min(next, w.respawn_at_us);
        if (w.pid && w.term_sent_us) next = std::min(next, w.term_sent_us + kRetireGraceUs + 1000);
    }
    for (const auto& a : acceptors_)
        if (!a.pid) next = std::min(next, a.respawn_at_us);
    if (phase_ != Phase::Running) next = std::min(next, stop_deadline_us_);
    return next;
}

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

    build_runtime();
    log::info("listening on %s port %d with %d acceptors and %zu worker slots", rt_.config.listen.c_str(),
              rt_.config.port, rt_.config.acceptors, workers_.size());
    for (uint32_t i = 0; i < acceptors_.size(); ++i) spawn_acceptor(i);
    tend_slots();  // starts every worker

    for (;;) {
        int64_t wait_us = std::max<int64_t>(0, next_deadline() - monotonic_us());
        timespec ts{time_t(wait_us / 1'000'000), long(wait_us % 1'000'000) * 1000};
        pollfd pfd{rt_.master_wake.get(), POLLIN, 0};
        ppoll(&pfd, 1, &ts, &none);  // the only place signals are delivered
        uint64_t v;
        while (::read(rt_.master_wake.get(), &v, sizeof v) > 0) {
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
        if (g_reload_handlers) {
            g_reload_handlers = 0;
            reload_handlers();
        }
        if (g_reload) {
            g_reload = 0;
            log::warn("SIGHUP: configuration reload is not supported yet; use reload-handlers or a restart");
        }
        if (g_reopen) {
            g_reopen = 0;
            log::reopen();
            signal_children(SIGUSR1, true, false);  // acceptors reopen the access log
        }
        if (phase_ == Phase::Running) {
            tend_acceptors();
            tend_slots();
        } else {
            bool acceptors_left = false;
            for (auto& a : acceptors_)
                if (a.pid) acceptors_left = true;
            // Once the acceptors have finished, nobody can send a worker more work.
            if (phase_ == Phase::Quitting && !acceptors_left) signal_children(SIGTERM, false, true);
            if (!anything_alive()) break;
            if (monotonic_us() >= stop_deadline_us_) {
                log::warn("children still running after the grace period; killing them");
                signal_children(SIGKILL, true, true);
                stop_deadline_us_ = monotonic_us() + 1'000'000;
            }
        }
    }
    rt_.seg->remove();
    log::info("stopped");
    return 0;
}

}  // namespace bertd
