// master.cc: the master's life in one loop, after nginx's ngx_master_process_cycle.
// Signal handlers only set flags; the loop sleeps in ppoll (signals are unblocked
// only there) and acts on each flag in a fixed order: reap, terminate, quit, reload
// the config, reload handlers, reopen logs, then tend the children (or wind them
// down once stopping). It never touches a client byte.
#include "core/master.h"

#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>

#include "core/notify.h"
#include "log/log.h"

namespace bertd {

namespace {
volatile sig_atomic_t g_reap, g_terminate, g_quit, g_reload, g_reopen, g_reload_handlers;

constexpr int kSignals[] = {SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2};

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

bool take(volatile sig_atomic_t& flag) {
    if (!flag) return false;
    flag = 0;
    return true;
}
}  // namespace

Master::Master(Options opts, Config config, int ready_fd)
    : opts_(std::move(opts)), first_config_(std::move(config)), ready_fd_(ready_fd) {}

int Master::run() {
    install_signal_handlers();
    start();
    for (;;) {
        sleep_until_woken();
        if (take(g_reap)) reap_children();
        if (take(g_terminate)) begin_stop(false);
        if (take(g_quit)) begin_stop(true);
        if (take(g_reload) && phase_ == Phase::Running) reload_config();
        if (take(g_reload_handlers) && phase_ == Phase::Running) reload_handlers();
        if (take(g_reopen)) reopen_logs();
        if (phase_ == Phase::Running || phase_ == Phase::Draining) {
            tend_children();
            if (phase_ == Phase::Draining && monotonic_us() >= stop_deadline_us_) begin_stop(true);
            continue;
        }
        wind_down_stopping();
        if (!children_.any_running()) break;
    }
    finish();
    return 0;
}

// The flags are set only while ppoll waits: every signal stays blocked elsewhere.
void Master::install_signal_handlers() {
    sigset_t block;
    sigemptyset(&block);
    for (int s : kSignals) sigaddset(&block, s);
    sigprocmask(SIG_BLOCK, &block, nullptr);
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    for (int s : kSignals) sigaction(s, &sa, nullptr);
    signal(SIGPIPE, SIG_IGN);
}

// Listening, the Erlang side, the first generation, the pidfile, then "ready".
void Master::start() {
    resolve_users(first_config_);
    give_file(first_config_.access_log, first_config_.creds);
    bool had_cookie = enter_home_of(first_config_.creds);  // the Erlang cookie is the children's user's
    id_ = erl::resolve_identity(opts_, first_config_);
    give_new_cookie(first_config_.creds, had_cookie);
    open_listen_socket(first_config_);
    start_erlang();
    if (id_.enabled) {
        choose_companion(first_config_);
        tend_erlang();
    }
    gens_.push_back(build_generation(first_config_, next_generation_++));
    start_generation(current());
    write_pidfile();
    notify_ready("ok\n");
    notify::ready(status_line(current().rt));
}

// Until a signal, a deadline, an acceptor's poke or a worker's line on stderr.
void Master::sleep_until_woken() {
    int64_t wait_us = std::max<int64_t>(0, next_deadline() - monotonic_us());
    timespec ts{time_t(wait_us / 1'000'000), long(wait_us % 1'000'000) * 1000};
    std::vector<pollfd> pfds;
    for (auto& g : gens_) pfds.push_back(pollfd{g->rt.master_wake.get(), POLLIN, 0});
    size_t first_output = pfds.size();
    std::vector<Child*> writers;
    children_.for_each([&](Child& c) {
        if (c.output.fd() < 0) return;
        pfds.push_back(pollfd{c.output.fd(), POLLIN, 0});
        writers.push_back(&c);
    });
    sigset_t none;
    sigemptyset(&none);
    ppoll(pfds.data(), pfds.size(), &ts, &none);  // the only place signals are delivered
    uint64_t v;
    for (auto& g : gens_)
        while (::read(g->rt.master_wake.get(), &v, sizeof v) > 0) {
        }
    for (size_t i = 0; i < writers.size(); ++i)
        if (pfds[first_output + i].revents) relay_output(*writers[i], writers[i]->pid);
    log::report_dropped();  // once a blocked error log drains, at the latest a second later
}

void Master::reap_children() {
    children_.reap([this](Child& c, pid_t pid, int status) { child_exited(c, pid, status); });
}

void Master::child_exited(Child& c, pid_t pid, int status) {
    if (c.kind == ChildKind::Link || c.kind == ChildKind::Companion) return erlang_exited(c, pid, status);
    Generation* g = generation(c.generation);
    if (!g) return;
    if (c.kind == ChildKind::Worker)
        worker_exited(*g, c, pid, status);
    else
        acceptor_exited(*g, c, status);
}

// Running: restarts what died, replaces retired workers, lets old generations go.
void Master::tend_children() {
    tend(current());
    tend_erlang();
    retire_old_generations();
}

// QUIT: no new connections; requests in flight finish (for up to 10 s). TERM: every
// child is asked to go at once, and whatever is still there after 0.6 s is killed, so
// bertd is gone within a second whatever it was doing (a companion VM still booting too).
void Master::begin_stop(bool graceful) {
    if (graceful && phase_ == Phase::Running && current().rt.config.drain_timeout > 0) return begin_drain();
    if (graceful && (phase_ == Phase::Running || phase_ == Phase::Draining)) {
        log::info("stopping gracefully: no new connections, finishing requests in flight");
        notify::stopping("stopping gracefully: finishing requests in flight");
        phase_ = Phase::Quitting;
        listen_.close_all();
        metrics_listen_.close_all();
        children_.for_each([](Child& c) { c.respawn = false; });
        for (auto& g : gens_) g->rt.seg->header().successor = 0;
        children_.signal(SIGQUIT, [](const Child& c) { return c.kind == ChildKind::Acceptor; });
        stop_deadline_us_ = monotonic_us() + kQuitGraceUs;
    } else if (!graceful && phase_ != Phase::Terminating) {
        log::info("stopping now");
        notify::stopping("stopping now");
        phase_ = Phase::Terminating;
        listen_.close_all();
        metrics_listen_.close_all();
        int64_t now = monotonic_us();
        children_.for_each([now](Child& c) {
            c.respawn = false;
            Children::ask_to_go(c, now);
        });
        stop_deadline_us_ = now + kTermGraceUs;
    } else {
        return;
    }
    for (auto& g : gens_) stop_generation(*g, stop_deadline_us_);
}

// drain_timeout: the server goes on accepting and answering while __admin__:health() says
// draining, so that load balancers move their traffic away; then the graceful stop proper.
// A second QUIT (or halt) ends the wait.
void Master::begin_drain() {
    double secs = current().rt.config.drain_timeout;
    log::info(
        "stopping gracefully: draining for %.1f s (health says draining), then finishing requests in flight",
        secs);
    notify::stopping("draining before a graceful stop");
    phase_ = Phase::Draining;
    for (auto& g : gens_) g->rt.seg->header().draining = 1;
    stop_deadline_us_ = monotonic_us() + int64_t(secs * 1e6);
}

// Stopping: each generation winds down as an old one does after a reload; the Erlang
// side goes once no acceptor is left to send it a request; stragglers are killed.
void Master::wind_down_stopping() {
    if (!children_.any_running([](const Child& c) { return c.kind == ChildKind::Acceptor; }))
        stop_erlang();  // native requests in flight are answered by now
    int64_t now = monotonic_us();
    for (auto& g : gens_) {
        tend(*g);  // retired workers still get their SIGKILL
        wind_down(*g, now);
    }
    if (now >= stop_deadline_us_ && children_.any_running()) {
        log::warn("children still running after the grace period; killing them");
        children_.signal(SIGKILL, [](const Child&) { return true; });
        stop_deadline_us_ = now + 1'000'000;
    }
}

void Master::reopen_logs() {
    log::reopen();
    give_file(current().rt.config.access_log, current().rt.config.creds);  // acceptors reopen it as theirs
    children_.signal(SIGUSR1,
                     [](const Child& c) { return c.kind == ChildKind::Acceptor; });  // the access log
}

void Master::finish() {
    for (auto& g : gens_) g->rt.seg->remove();
    listen_.close_all();
    metrics_listen_.close_all();
    remove_cookie_home();
    remove_pidfile();
    log::info("stopped");
}

int64_t Master::next_deadline() const {
    int64_t now = monotonic_us();
    int64_t next = children_.next_respawn(now, now + 1'000'000);
    for (const auto& g : gens_)
        for (const Child* w : g->workers)
            if (w->pid && w->term_sent_us) next = std::min(next, w->term_sent_us + kRetireGraceUs + 1000);
    if (phase_ != Phase::Running) next = std::min(next, stop_deadline_us_);  // Draining: its end too
    return next;
}

}  // namespace bertd
