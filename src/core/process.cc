// process.cc: the child side of a spawn, up to exec, and descriptor helpers. Runs
// in a single-threaded process just forked from the master; it only rearranges
// descriptors and signal state before exec.
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

std::string worker_shell_line(const std::string& command) { return "exec " + command; }

void give_worker_its_slot(int sock) {
    int s = sock;
    if (s == 3 || s == 4) s = fcntl(sock, F_DUPFD, 5);
    dup2(s, 3);
    dup2(s, 4);
    int fl = fcntl(3, F_GETFL);
    fcntl(3, F_SETFL, fl & ~O_NONBLOCK);
}

void exec_shell(const std::string& line, int keep_below) {
    // Dispositions are the defaults (the spawn reset them) before signals are
    // unblocked: a SIGTERM already pending must kill the child, not be lost.
    signal(SIGPIPE, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    int null = open("/dev/null", O_RDONLY);
    if (null >= 0) {
        dup2(null, 0);
        if (null != 0) ::close(null);
    }
    close_fds_from(keep_below, {});
    execl("/bin/sh", "sh", "-c", line.c_str(), static_cast<char*>(nullptr));
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
