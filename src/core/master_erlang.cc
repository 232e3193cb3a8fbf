// master_erlang.cc: the Erlang link and the companion VM as the master sees them:
// two children of the table that live across generations, started when native
// modules need them and restarted with back-off. What they do is erl/'s business.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstring>

#include "core/master.h"
#include "erl/link.h"
#include "io/unix.h"
#include "log/log.h"

namespace bertd {

namespace {
constexpr int64_t kErlangHealthyUs = 5'000'000;
constexpr int64_t kErlangBackoffCapUs = 5'000'000;
}  // namespace

// Wants the link once bertd has an Erlang identity (at start, or with the reload that
// brings the first native module); handler workers find it through BERTD_ERLANG.
void Master::start_erlang() {
    if (!id_.enabled) return;
    if (!link_listen_) {
        link_listen_.reset(listen_abstract(ipc_.link(), SOCK_STREAM, 512));
        handlers_listen_.reset(listen_abstract(ipc_.link_handlers(), SOCK_STREAM, 512));
        if (!link_listen_ || !handlers_listen_)
            throw std::runtime_error(std::string("cannot listen on the Erlang link's unix sockets: ") +
                                     strerror(errno));
    }
    setenv("BERTD_ERLANG", ("@" + ipc_.link_handlers()).c_str(), 1);
    link_.respawn = true;  // tend_erlang starts it
}

// Wants the companion VM when the config's native modules need one, and restarts it
// when its command line changed (new code paths or options).
void Master::choose_companion(const Config& c) {
    bool wanted = erl::needs_companion(c) && !id_.companion.empty();
    erl::CompanionCommand cmd = wanted ? erl::companion_command(id_, c, opts_) : erl::CompanionCommand{};
    if (cmd.command == companion_cmd_.command && cmd.env == companion_cmd_.env &&
        wanted == companion_.respawn)
        return;
    companion_cmd_ = cmd;
    companion_.respawn = wanted;
    companion_.backoff.reset();
    Children::kill(companion_, SIGTERM);
}

void Master::erlang_reloaded(const Config& c) {
    Children::kill(link_, SIGHUP);  // it re-reads the file: native modules, registered names
    if (erl::needs_companion(c) && id_.companion.empty())
        log::warn("native modules with codepaths need a companion VM: restart bertd to start one");
    choose_companion(c);
}

void Master::spawn_link() {
    pid_t master = getpid();
    bool ok = children_.spawn(link_, erlang_user(), [&] {
        log::set_role("erlang link");
        prctl(PR_SET_NAME, "bertd-link");  // so ps and tests can tell it from the acceptors
        int acceptors = link_listen_.release(), handlers = handlers_listen_.release();
        close_inherited(nullptr);
        Config c = gens_.empty() ? first_config_ : current().rt.config;
        _exit(erl::run_link(opts_, c, id_, master, ipc_, acceptors, handlers));
    });
    if (ok) log::debug("Erlang link started (pid %d) as node %s", link_.pid, id_.cnode.c_str());
}

// The VM's HOME while it boots: a 0700 directory holding only .erlang.cookie (0400),
// so the cookie reaches the VM without ever being on a command line. Made once.
bool Master::make_cookie_home() {
    if (!cookie_home_.empty()) return true;
    const char* tmp = getenv("TMPDIR");
    std::string dir = std::string(tmp && *tmp ? tmp : "/tmp") + "/bertd-vm-XXXXXX";
    if (!mkdtemp(dir.data())) {
        log::error("cannot make a private HOME for the companion VM's cookie: %s", strerror(errno));
        return false;
    }
    std::string file = dir + "/.erlang.cookie";
    int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0400);
    const std::string& c = companion_cmd_.cookie;
    bool ok = fd >= 0 && ::write(fd, c.data(), c.size()) == ssize_t(c.size());
    if (fd >= 0) ::close(fd);
    cookie_home_ = dir;
    if (!ok) log::error("cannot write the companion VM's cookie in %s: %s", dir.c_str(), strerror(errno));
    return ok;
}

void Master::remove_cookie_home() {
    if (cookie_home_.empty()) return;
    unlink((cookie_home_ + "/.erlang.cookie").c_str());
    rmdir(cookie_home_.c_str());
    cookie_home_.clear();
}

void Master::spawn_companion() {
    if (!companion_cmd_.cookie.empty() && !make_cookie_home()) {
        companion_.backoff.retry_at_us = monotonic_us() + 1'000'000;
        return;
    }
    // erl execs erlexec, which execs beam: the death signal stays with the VM.
    Fd err_read, err_write;
    stderr_pipe(err_read, err_write);
    bool ok = children_.spawn(companion_, erlang_user(), [&] {
        if (err_write) dup2(err_write.get(), 2);
        for (const auto& e : companion_cmd_.env) putenv(const_cast<char*>(e.c_str()));
        if (!companion_cmd_.cookie.empty()) {
            if (const char* home = getenv("HOME")) setenv("BERTD_HOME", home, 1);
            setenv("HOME", cookie_home_.c_str(), 1);
        }
        exec_shell(companion_cmd_.command, 3);
    });
    if (!ok) return;
    companion_.output.attach(std::move(err_read));
    log::info("companion Erlang VM %s started (pid %d)", id_.companion.c_str(), companion_.pid);
    log::debug("companion command: %s", companion_cmd_.command.c_str());
}

void Master::erlang_exited(Child& p, pid_t pid, int status) {
    if (p.output.fd() >= 0) relay_output(p, pid);
    p.output.close();
    if (!serving() || !p.respawn) return;
    // The first restart is at once: requests wait for it.
    p.backoff.failed(p.started_us, monotonic_us(), kErlangHealthyUs, kErlangBackoffCapUs);
    log::error("%s %s; restarting it",
               p.kind == ChildKind::Link ? "the Erlang link" : "the companion Erlang VM",
               describe_status(status).c_str());
}

void Master::tend_erlang() {
    if (!serving()) return;
    int64_t now = monotonic_us();
    if (link_.respawn && !link_.pid && now >= link_.backoff.retry_at_us) spawn_link();
    if (companion_.respawn && !companion_.pid && now >= companion_.backoff.retry_at_us) spawn_companion();
}

// At stop, once no acceptor is left: the link and the VM are asked to go (once).
void Master::stop_erlang() {
    int64_t now = monotonic_us();
    link_.respawn = companion_.respawn = false;
    Children::ask_to_go(link_, now);
    Children::ask_to_go(companion_, now);
}

}  // namespace bertd
