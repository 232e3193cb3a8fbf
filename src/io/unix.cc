// unix.cc: abstract names, credentials, SCM_RIGHTS and the flush loop, written once.
#include "io/unix.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

namespace bertd {

AbstractAddress abstract_address(std::string_view name) {
    AbstractAddress a;
    a.addr.sun_family = AF_UNIX;
    if (name.empty() || name.size() > sizeof a.addr.sun_path - 1) return a;
    memcpy(a.addr.sun_path + 1, name.data(), name.size());
    a.len = socklen_t(offsetof(sockaddr_un, sun_path) + 1 + name.size());
    return a;
}

namespace {
// A new socket bound to `name`, or connected to it. -1 with errno set on failure.
int socket_at(std::string_view name, int type, bool connect_to) {
    AbstractAddress a = abstract_address(name);
    if (a.len == 0) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    auto* addr = reinterpret_cast<sockaddr*>(&a.addr);
    // A unix connect completes or fails at once; EAGAIN means the listener's backlog is full.
    int rc = connect_to ? connect(fd, addr, a.len) : bind(fd, addr, a.len);
    if (rc != 0) {
        int e = errno;
        ::close(fd);
        errno = e;
        return -1;
    }
    return fd;
}
}  // namespace

int listen_abstract(std::string_view name, int type, int backlog) {
    int fd = socket_at(name, type, false);
    if (fd >= 0 && listen(fd, backlog) != 0) {
        int e = errno;
        ::close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

int bind_abstract(std::string_view name, int type) { return socket_at(name, type, false); }

int connect_abstract(std::string_view name, int type) { return socket_at(name, type, true); }

bool peer_credentials(int fd, PeerCred& out) {
    ucred cr{};
    socklen_t len = sizeof cr;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0 || len != sizeof cr) return false;
    out.pid = cr.pid;
    out.uid = cr.uid;
    out.gid = cr.gid;
    return true;
}

pid_t parent_of(pid_t pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", int(pid));
    int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char buf[512];
    ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so look after the last ')'.
    const char* p = strrchr(buf, ')');
    int ppid = 0;
    char state;
    if (!p || sscanf(p + 1, " %c %d", &state, &ppid) != 2) return 0;
    return pid_t(ppid);
}

bool descends_from(pid_t pid, pid_t ancestor) {
    if (ancestor <= 0) return false;
    for (int depth = 0; pid > 1 && depth < 32; ++depth) {
        if (pid == ancestor) return true;
        pid = parent_of(pid);
    }
    return false;
}

void pass_credentials(int fd) {
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one);
}

ssize_t send_with_fds(int sock, std::string_view data, const int* fds, size_t nfds) {
    if (nfds > kMaxPassedFds) {
        errno = EINVAL;
        return -1;
    }
    iovec iov{const_cast<char*>(data.data()), data.size()};
    alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int) * kMaxPassedFds)];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (nfds > 0) {
        memset(ctrl, 0, CMSG_SPACE(sizeof(int) * nfds));
        msg.msg_control = ctrl;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        cmsghdr* cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
    }
    return sendmsg(sock, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
}

ssize_t recv_with_fds(int sock, char* buf, size_t cap, std::vector<int>& fds, PeerCred* cred, int flags) {
    iovec iov{buf, cap};
    alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int) * kMaxPassedFds) + CMSG_SPACE(sizeof(ucred))];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctrl;
    msg.msg_controllen = sizeof ctrl;
    ssize_t n = recvmsg(sock, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC | flags);
    if (n < 0) return n;
    if (cred) *cred = PeerCred{};
    for (cmsghdr* cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
        if (cm->cmsg_level != SOL_SOCKET) continue;
        if (cm->cmsg_type == SCM_RIGHTS) {
            size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < k; ++i) {
                int fd;
                memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof fd);
                fds.push_back(fd);
            }
        } else if (cm->cmsg_type == SCM_CREDENTIALS && cred) {
            ucred u;
            memcpy(&u, CMSG_DATA(cm), sizeof u);
            *cred = PeerCred{u.pid, u.uid, u.gid};
        }
    }
    return n;
}

Flush send_some(int fd, std::string_view bytes, size_t& sent) {
    while (sent < bytes.size()) {
        ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            sent += size_t(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        return n < 0 && errno == EAGAIN ? Flush::Blocked : Flush::Failed;
    }
    return Flush::Done;
}

Flush flush_some(int fd, std::string& out, size_t& start) {
    Flush f = send_some(fd, out, start);
    if (f != Flush::Done) return f;
    out.clear();
    start = 0;
    return Flush::Done;
}

}  // namespace bertd
