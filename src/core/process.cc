// process.cc: fd set-up and worker spawning. Runs in the master; the child side
// of spawn_worker uses only async-signal-safe calls before exec.
#include "core/process.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>

#include <algorithm>

namespace bertd {

void close_fds_from(int from, const std::vector<int>& keep) {
    if (keep.empty() && close_range(unsigned(from), ~0u, 0) == 0) return;
    long max = sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > 65536) max = 65536;
    for (int fd = from; fd < max; ++fd)
        if (std::find(keep.begin(), keep.end(), fd) == keep.end()) ::close(fd);
}

pid_t spawn_worker(const std::string& command, int sock) {
    std::string exec_line = "exec " + command;
    pid_t pid = fork();
    if (pid != 0) return pid;

    // Child. Dispositions go back to the defaults before signals are unblocked:
    // a SIGTERM already pending must kill the worker, not run the master's handler.
    for (int s : {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGPIPE, SIGCHLD}) signal(s, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    // Fds 3 and 4 are the slot's socket; the worker sees blocking I/O.
    int s = sock;
    if (s == 3 || s == 4) s = fcntl(sock, F_DUPFD, 5);
    dup2(s, 3);
    dup2(s, 4);
    int fl = fcntl(3, F_GETFL);
    fcntl(3, F_SETFL, fl & ~O_NONBLOCK);
    int null = open("/dev/null", O_RDONLY);
    if (null >= 0) {
        dup2(null, 0);
        if (null != 0) ::close(null);
    }
    close_fds_from(5, {});
    execl("/bin/sh", "sh", "-c", exec_line.c_str(), static_cast<char*>(nullptr));
    _exit(127);
}

size_t drain(int fd) {
    char buf[65536];
    size_t total = 0;
    for (;;) {
        ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n <= 0) break;
        total += size_t(n);
    }
    return total;
}

}  // namespace bertd
