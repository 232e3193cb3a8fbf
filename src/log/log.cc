// log.cc: the error log. Formats into a stack buffer and writes the line with one
// write(2) on an O_APPEND descriptor; a failing log never stops the server.
#include "log/log.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

namespace bertd::log {

namespace {
int g_fd = 2;
int g_level = Info;
std::string g_path;
char g_role[48] = "bertd";
const char* const kNames[] = {"error", "warn", "info", "verbose", "debug"};

void vwrite(Level l, const char* fmt, va_list ap) {
    if (l > g_level) return;
    char buf[2048];
    timeval tv;
    gettimeofday(&tv, nullptr);
    tm t;
    localtime_r(&tv.tv_sec, &t);
    int n = snprintf(buf, sizeof buf, "%04d-%02d-%02d %02d:%02d:%02d.%03ld [%s] %s[%d]: ", t.tm_year + 1900,
                     t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, long(tv.tv_usec / 1000), kNames[l],
                     g_role, int(getpid()));
    if (n < 0) return;
    int m = vsnprintf(buf + n, sizeof buf - size_t(n) - 1, fmt, ap);
    if (m < 0) return;
    size_t len = std::min(size_t(n + m), sizeof buf - 2);
    buf[len++] = '\n';
    [[maybe_unused]] ssize_t w = ::write(g_fd, buf, len);
}
}  // namespace

void init(const std::string& path, int level, const std::string& role) {
    g_level = level;
    set_role(role);
    if (path != g_path || (g_fd == 2 && !path.empty())) {
        g_path = path;
        reopen();
    }
}

void set_role(const std::string& role) { snprintf(g_role, sizeof g_role, "%s", role.c_str()); }

void reopen() {
    if (g_path.empty()) return;
    int fd = open(g_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return;  // keep the old descriptor
    if (g_fd != 2) {
        dup2(fd, g_fd);
        ::close(fd);
    } else {
        g_fd = fd;
    }
}

bool enabled(Level l) { return l <= g_level; }

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
