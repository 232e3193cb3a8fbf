// children.cc: the child table, its one fork and its one waitpid loop. The child
// side of spawn only resets what the master set up for itself (signal handlers)
// before handing over to the body; it never returns into the master's loop.
#include "core/children.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "io/clock.h"
#include "log/log.h"

namespace bertd {

namespace {
std::string name_of(const Child& c) {
    switch (c.kind) {
        case ChildKind::Acceptor: return "acceptor " + std::to_string(c.index);
        case ChildKind::Worker: return "a worker for slot " + std::to_string(c.index);
        case ChildKind::Link: return "the Erlang link";
        case ChildKind::Companion: return "the companion Erlang VM";
    }
    return "a child";
}
}  // namespace

std::string describe_status(int status) {
    if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return std::string("killed by signal ") + strsignal(WTERMSIG(status));
    return "stopped";
}

Child& Children::add(ChildKind kind, uint64_t generation, uint32_t index, bool respawn) {
    auto c = std::make_unique<Child>();
    c->kind = kind;
    c->own_group = kind == ChildKind::Worker || kind == ChildKind::Companion;
    c->generation = generation;
    c->index = index;
    c->respawn = respawn;
    all_.push_back(std::move(c));
    return *all_.back();
}

void Children::forget_generation(uint64_t generation) {
    std::erase_if(all_, [&](const std::unique_ptr<Child>& c) {
        return c->generation == generation &&
               (c->kind == ChildKind::Acceptor || c->kind == ChildKind::Worker);
    });
}

bool Children::spawn(Child& c, const Credentials& as, const std::function<void()>& body) {
    pid_t master = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        log::error("fork %s: %s; trying again in a second", name_of(c).c_str(), strerror(errno));
        c.backoff.retry_at_us = monotonic_us() + 1'000'000;
        return false;
    }
    if (pid == 0) {
        if (!become(as)) {
            log::error("cannot run %s as user %s: %s", name_of(c).c_str(), as.user.c_str(), strerror(errno));
            _exit(1);
        }
        prctl(PR_SET_PDEATHSIG, SIGKILL);   // never outlive the master (after become: it clears this)
        if (getppid() != master) _exit(1);  // it died before the line above
        for (int s : {SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2}) ::signal(s, SIG_DFL);
        unsetenv("NOTIFY_SOCKET");  // systemd hears from the master alone
        if (c.own_group) setpgid(0, 0);
        for (auto& other : all_) other->output.close();
        body();
        _exit(127);
    }
    if (c.own_group) setpgid(pid, pid);  // as the child does: signals sent now reach the group
    c.pid = pid;
    c.started_us = monotonic_us();
    c.term_sent_us = 0;
    return true;
}

void Children::reap(const std::function<void(Child&, pid_t, int)>& exited) {
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0) return;
        for (auto& c : all_)
            if (c->pid == pid) {
                if (c->own_group) ::kill(-pid, SIGKILL);
                c->pid = 0;
                exited(*c, pid, status);
                break;
            }
    }
}

void Children::kill(const Child& c, int sig) {
    if (c.pid) ::kill(c.own_group ? -c.pid : c.pid, sig);
}

void Children::signal(int sig, const std::function<bool(const Child&)>& which) {
    for (auto& c : all_)
        if (c->pid && which(*c)) kill(*c, sig);
}

bool Children::ask_to_go(Child& c, int64_t now_us) {
    if (!c.pid || c.term_sent_us) return false;
    kill(c, SIGTERM);
    c.term_sent_us = now_us;
    return true;
}

bool Children::any_running(const std::function<bool(const Child&)>& which) const {
    return std::any_of(all_.begin(), all_.end(),
                       [&](const std::unique_ptr<Child>& c) { return c->pid && (!which || which(*c)); });
}

int64_t Children::next_respawn(int64_t now_us, int64_t until) const {
    for (auto& c : all_)
        if (c->respawn && !c->pid && c->backoff.retry_at_us > now_us)
            until = std::min(until, c->backoff.retry_at_us);
    return until;
}

}  // namespace bertd
