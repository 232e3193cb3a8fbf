// main.cc: bertd's entry point: parse the command line, load and check the
// config, then start the master (in the foreground or as a daemon) or send a
// command to a running server. Start-up errors are exceptions caught here and
// printed with what to fix.
#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "admin/admin.h"
#include "bert/codec.h"
#include "bert/frame.h"
#include "bert/printer.h"
#include "core/cli.h"
#include "core/config.h"
#include "core/master.h"
#include "core/pidfile.h"
#include "io/ipc.h"
#include "log/log.h"

using namespace bertd;

namespace {

// Sends {call, '__admin__', Fn, []} to a running server and prints the answer.
int command_by_port(const Options& o, int port, const char* function) {
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    std::string p = std::to_string(port);
    if (getaddrinfo(o.host.c_str(), p.c_str(), &hints, &res) != 0) {
        fprintf(stderr, "bertd: cannot resolve '%s'\n", o.host.c_str());
        return 1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
        fprintf(stderr, "bertd: no server answers on %s port %d: %s\n", o.host.c_str(), port, strerror(errno));
        freeaddrinfo(res);
        return 1;
    }
    freeaddrinfo(res);
    timeval tv{10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string frame;
    std::string payload = bert::encode(bert::Term::tuple(
        {bert::Term::atom("call"), bert::Term::atom("__admin__"), bert::Term::atom(function), bert::Term::nil()}));
    bert::append_frame(frame, payload);
    if (::write(fd, frame.data(), frame.size()) != ssize_t(frame.size())) {
        fprintf(stderr, "bertd: cannot send the command: %s\n", strerror(errno));
        ::close(fd);
        return 1;
    }
    std::string in;
    char buf[65536];
    for (;;) {
        auto fs = bert::scan_frame(in, 64u << 20);
        if (fs.state == bert::FrameScan::State::Complete) break;
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n <= 0) {
            fprintf(stderr, "bertd: the server closed the connection without an answer\n");
            ::close(fd);
            return 1;
        }
        in.append(buf, size_t(n));
    }
    ::close(fd);
    auto fs = bert::scan_frame(in, 64u << 20);
    bert::Term t;
    if (auto err = bert::decode(std::string_view(in).substr(4, fs.length), t)) {
        fprintf(stderr, "bertd: unreadable answer: %s\n", err.message.c_str());
        return 1;
    }
    if (t.is_tuple(2) && t[0].is_atom("reply")) {
        if (t[1].is_binary()) fputs(t[1].bytes().c_str(), stdout);
        else printf("%s\n", bert::to_string(t[1]).c_str());
        return 0;
    }
    if (t.is_tuple(2) && t[0].is_atom("error") && t[1].is_tuple(5) && t[1][3].is_binary()) {
        fprintf(stderr, "bertd: %s\n", t[1][3].bytes().c_str());
        return 1;
    }
    fprintf(stderr, "bertd: unexpected answer %s\n", bert::to_string(t).c_str());
    return 1;
}

// Commands addressed by pidfile: signals for reload-handlers and halt, the shared
// segment for stats (no connection needed).
int command_by_pidfile(const Options& o) {
    pid_t pid = running_server(o.pidfile);
    if (!pid) {
        fprintf(stderr, "bertd: no running server in pidfile %s\n", o.pidfile.c_str());
        return 1;
    }
    if (o.command == Options::Command::ReloadHandlers || o.command == Options::Command::Halt) {
        // What the server answers these commands by port.
        if (kill(pid, o.command == Options::Command::Halt ? SIGQUIT : SIGUSR2) != 0) {
            fprintf(stderr, "bertd: cannot signal server %d: %s\n", int(pid), strerror(errno));
            return 1;
        }
        fputs("ok\n", stdout);
        return 0;
    }
    std::string name = IpcNames::newest_segment(pid);
    if (name.empty()) {
        fprintf(stderr, "bertd: cannot find the shared segment of server %d (is it starting? run as its user or root)\n",
                int(pid));
        return 1;
    }
    try {
        auto seg = Segment::open(name);
        fputs(admin::stats_text(*seg).c_str(), stdout);
        return 0;
    } catch (const std::exception& e) {
        fprintf(stderr, "bertd: %s\n", e.what());
        return 1;
    }
}

// Detaches: the caller returns in the daemon; the original process waits for the
// daemon's "ok" (or its error) on a pipe and exits with the matching status.
int daemonize(int& ready_fd) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) {
        perror("bertd: pipe");
        return 1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("bertd: fork");
        return 1;
    }
    if (pid > 0) {
        ::close(p[1]);
        std::string msg;
        char buf[512];
        ssize_t n;
        // One line: "ok", or the error. (The daemon's children may keep the pipe open.)
        while (msg.find('\n') == std::string::npos && (n = ::read(p[0], buf, sizeof buf)) > 0) msg.append(buf, size_t(n));
        if (msg == "ok\n") _exit(0);
        if (msg.empty()) msg = "the daemon died while starting\n";
        fprintf(stderr, "bertd: %s", msg.c_str());
        _exit(1);
    }
    ::close(p[0]);
    setsid();
    // A second fork: the daemon is not a session leader, so it can never get a terminal.
    pid = fork();
    if (pid < 0) _exit(1);
    if (pid > 0) _exit(0);
    umask(022);
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
        if (null > 2) ::close(null);
    }
    ready_fd = p[1];
    return -1;  // continue as the daemon
}

// Every connection is a descriptor in some acceptor: take the whole hard limit (the loops
// use epoll, so no FD_SETSIZE concern), and say so when even that cannot hold
// limits.max_connections.
void raise_fd_limit(const Config& config) {
    rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    constexpr rlim_t kOwnFds = 64;  // listen socket, slots, logs, wake-ups
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < rlim_t(config.limits.max_connections) + kOwnFds)
        log::warn("the open files limit (%llu) is below limits.max_connections (%zu): raise it (ulimit -n, "
                  "LimitNOFILE=)",
                  (unsigned long long)rl.rlim_cur, config.limits.max_connections);
}

std::string absolute(const std::string& path) {
    char buf[PATH_MAX];
    if (path.empty() || path[0] == '/' || !realpath(path.c_str(), buf)) return path;
    return buf;
}

// Starts a server: checks the pidfile, detaches if asked, and runs the master.
int serve(const Options& opts, Config config) {
    if (!config.pidfile.empty()) {
        if (pid_t other = running_server(config.pidfile)) {
            fprintf(stderr,
                    "bertd: already running with pid %d (pidfile %s); stop it first or use another pidfile\n",
                    int(other), config.pidfile.c_str());
            return 1;
        }
    }
    int ready_fd = -1;
    if (opts.daemon) {
        if (int rc = daemonize(ready_fd); rc >= 0) return rc;
    }
    log::init(config.error_log, config.log_level, "master");
    raise_fd_limit(config);
    try {
        Master m(opts, std::move(config), ready_fd);
        return m.run();
    } catch (const std::exception& e) {
        if (ready_fd >= 0) {
            log::error("%s", e.what());
            std::string msg = std::string(e.what()) + "\n";
            [[maybe_unused]] ssize_t n = ::write(ready_fd, msg.data(), msg.size());
        } else {
            fprintf(stderr, "bertd: %s\n", e.what());
        }
        return 1;
    }
}

// reload-handlers, stats and halt: by pidfile when one is given without a port, else
// through the server's port.
int send_command(const Options& opts, const Config& config) {
    if (opts.port < 0 && !opts.pidfile.empty()) return command_by_pidfile(opts);
    const char* fn = opts.command == Options::Command::Stats            ? "stats"
                     : opts.command == Options::Command::ReloadHandlers ? "reload_handlers"
                                                                        : "halt";
    return command_by_port(opts, config.port, fn);
}

}  // namespace

int main(int argc, char** argv) {
    Options opts;
    try {
        opts = parse_options(argc, argv);
    } catch (const UsageError& e) {
        fprintf(stderr, "bertd: %s\n\n%s", e.what(), usage_text().c_str());
        return 2;
    }
    if (opts.command == Options::Command::Help) {
        fputs(usage_text().c_str(), stdout);
        return 0;
    }
    if (opts.command == Options::Command::Version) {
        fputs(version_text().c_str(), stdout);
        return 0;
    }
    opts.config = absolute(opts.config);  // SIGHUP re-reads this path wherever we are
    if (!opts.pidfile.empty()) opts.pidfile = absolute(opts.pidfile);

    Config config;
    try {
        resolve_cookie(opts);
        if (!opts.config.empty()) config = load_config(opts.config);
    } catch (const ConfigError& e) {
        fprintf(stderr, "bertd: %s\n", e.what());
        return 1;
    }
    apply_overrides(opts, config);
    if (opts.command != Options::Command::Start) return send_command(opts, config);
    if (opts.test_config) {
        try {
            resolve_users(config);
        } catch (const ConfigError& e) {
            fprintf(stderr, "bertd: %s\n", e.what());
            return 1;
        }
        printf("bertd: the configuration file %s syntax is ok (%zu modules)\n", opts.config.c_str(),
               config.modules.size());
        return 0;
    }
    return serve(opts, std::move(config));
}
