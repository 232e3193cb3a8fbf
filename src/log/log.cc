// log.cc: the error log. Formats into a stack buffer and writes the line with one
// write(2) on a descriptor of its own that never blocks: a line that would block
// (a full pipe whose reader stopped, a full disk) is dropped and counted, and the
// next line that gets through says how many went. A failing log never stops the server.
#include "log/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>

namespace bertd::log {

namespace {
int g_fd = 2;
bool g_socket = false;  // stderr is a socket (a journal stream): writes use MSG_DONTWAIT
int g_level = Info;
std::string g_path;
char g_role[48] = "bertd";
unsigned long g_dropped = 0;  // lines lost since the last one that got through
const char* const kNames[] = {"error", "warn", "info", "verbose", "debug"};

// Our own open file description of stderr, non-blocking, so that O_NONBLOCK is never
// set on a terminal or pipe that bertd shares with the shell that started it.
void open_stderr() {
    int fd = ::open("/proc/self/fd/2", O_WRONLY | O_APPEND | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) {
        g_fd = fd;
        g_socket = false;
        return;
    }
    // A socket cannot be reopened: each write says it must not wait instead.
    int type = 0;
    socklen_t len = sizeof type;
    g_socket = getsockopt(2, SOL_SOCKET, SO_TYPE, &type, &len) == 0;
    g_fd = 2;
}

bool write_line(const char* buf, size_t len) {
    ssize_t w = g_socket ? ::send(g_fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL) : ::write(g_fd, buf, len);
    return w == ssize_t(len);
}

size_t stamp(char* buf, size_t cap, Level l) {
    timeval tv;
    gettimeofday(&tv, nullptr);
    tm t;
    localtime_r(&tv.tv_sec, &t);
    int n = snprintf(buf, cap, "%04d-%02d-%02d %02d:%02d:%02d.%03ld [%s] %s[%d]: ", t.tm_year + 1900,
                     t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, long(tv.tv_usec / 1000),
                     kNames[l], g_role, int(getpid()));
    return n < 0 ? 0 : std::min(size_t(n), cap - 1);
}

// Once the log takes lines again, it first says how many it could not take.
bool say_dropped() {
    if (!g_dropped) return true;
    char buf[256];
    size_t n = stamp(buf, sizeof buf, Warn);
    int m = snprintf(buf + n, sizeof buf - n, "%lu log lines dropped: the error log would have blocked\n",
                     g_dropped);
    if (m < 0 || !write_line(buf, n + std::min(size_t(m), sizeof buf - n - 1))) return false;
    g_dropped = 0;
    return true;
}

void vwrite(Level l, const char* fmt, va_list ap) {
    if (l > g_level) return;
    char buf[2048];
    size_t n = stamp(buf, sizeof buf, l);
    int m = vsnprintf(buf + n, sizeof buf - n - 1, fmt, ap);
    if (m < 0) return;
    size_t len = std::min(n + size_t(m), sizeof buf - 2);
    buf[len++] = '\n';
    int saved = errno;
    if (!say_dropped() || !write_line(buf, len)) ++g_dropped;
    errno = saved;
}
}  // namespace

void init(const std::string& path, int level, const std::string& role) {
    g_level = level;
    set_role(role);
    if (path.empty() && g_path.empty() && g_fd == 2) open_stderr();
    if (path != g_path || (g_fd == 2 && !path.empty())) {
        g_path = path;
        reopen();
    }
}

void set_role(const std::string& role) { snprintf(g_role, sizeof g_role, "%s", role.c_str()); }

void reopen() {
    if (g_path.empty()) return;
    int fd = open(g_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NONBLOCK | O_CLOEXEC, 0644);
    if (fd < 0) return;  // keep the old descriptor
    if (g_fd != 2) {
        dup2(fd, g_fd);  // dup2 clears close-on-exec: set it again
        fcntl(g_fd, F_SETFD, FD_CLOEXEC);
        ::close(fd);
    } else {
        g_fd = fd;
    }
    g_socket = false;
}

bool enabled(Level l) { return l <= g_level; }

void report_dropped() {
    int saved = errno;
    say_dropped();
    errno = saved;
}

#define BERTD_LOG_FN(name, level) \
    void name(const char* fmt, ...) { \
        va_list ap; \
        va_start(ap, fmt); \
        vwrite(level, fmt, ap); \
        va_end(ap); \
    }
BERTD_LOG_FN(error, Error)
BERTD_LOG_FN(warn, Warn)
BERTD_LOG_FN(info, Info)
BERTD_LOG_FN(debug, Debug)

}  // namespace bertd::log
