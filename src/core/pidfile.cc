// pidfile.cc: writing, removing and reading the pidfile. Every open is O_NOFOLLOW
// or of a name just made with O_EXCL; reads go through /proc for liveness.
#include "core/pidfile.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <stdexcept>

namespace bertd {

namespace {
// The pid in `path` (a regular file, not followed if it is a symlink); 0 if none.
long read_pid(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) return 0;
    char buf[32] = {0};
    struct stat st;
    ssize_t n = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? ::read(fd, buf, sizeof buf - 1) : -1;
    ::close(fd);
    if (n <= 0) return 0;
    char* end = nullptr;
    long pid = strtol(buf, &end, 10);
    return pid > 0 && pid <= INT_MAX && (*end == '\n' || *end == '\0') ? pid : 0;
}

// The one-letter state in /proc/PID/stat ('Z' for a zombie); 0 if the process is gone.
char process_state(long pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    size_t paren = text.rfind(')');  // the name may hold spaces and parentheses
    if (paren == std::string::npos || paren + 2 >= text.size()) return 0;
    return text[paren + 2];
}
}  // namespace

void write_pidfile(const std::string& path) {
    std::string tmp = path + ".XXXXXX";
    int fd = mkostemp(tmp.data(), O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        throw std::runtime_error("cannot write the pidfile " + path +
                                 ": cannot create a temporary beside it: " + strerror(errno));
    std::string text = std::to_string(getpid()) + "\n";
    int err = 0;
    if (fchmod(fd, 0644) != 0 || ::write(fd, text.data(), text.size()) != ssize_t(text.size())) err = errno;
    if (::close(fd) != 0 && !err) err = errno;
    if (!err && rename(tmp.c_str(), path.c_str()) == 0) return;
    if (!err) err = errno;
    unlink(tmp.c_str());
    throw std::runtime_error("cannot write the pidfile " + path + ": " + strerror(err));
}

void remove_pidfile(const std::string& path) {
    if (read_pid(path) == getpid()) unlink(path.c_str());
}

pid_t running_server(const std::string& path) {
    long pid = read_pid(path);
    if (!pid) return 0;
    char state = process_state(pid);
    if (state == 'Z' || state == 'X') return 0;  // a zombie is not a running server
    if (state == 0) return kill(pid_t(pid), 0) == 0 || errno == EPERM ? pid_t(pid) : 0;  // /proc hides it
    std::ifstream comm("/proc/" + std::to_string(pid) + "/comm");
    std::string name;
    if (comm >> name && name.rfind("bertd", 0) != 0) return 0;
    return pid_t(pid);
}

}  // namespace bertd
