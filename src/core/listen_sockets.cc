// listen_sockets.cc: opening, keeping and closing the listen sockets (listen_sockets.h).
// A unix socket file left by a bertd that died is replaced; one that a live server
// answers on, or a file that is not a socket, is an error.
#include "core/listen_sockets.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>

namespace bertd {

namespace {
constexpr int kBacklog = 4096;

[[noreturn]] void cannot(const std::string& what, const std::string& fix) {
    throw std::runtime_error("cannot listen on " + what + ": " + strerror(errno) + fix);
}

sockaddr_un unix_address(const std::string& path) {
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    memcpy(un.sun_path, path.data(), std::min(path.size(), sizeof un.sun_path - 1));
    return un;
}

// A socket file nobody answers on is what a server that died leaves: it goes.
void remove_stale(const std::string& path) {
    struct stat st;
    if (lstat(path.c_str(), &st) != 0) return;
    if (!S_ISSOCK(st.st_mode))
        throw std::runtime_error("cannot listen on unix:" + path + ": the file exists and is not a socket");
    Fd probe(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un un = unix_address(path);
    if (probe && connect(probe.get(), reinterpret_cast<sockaddr*>(&un), sizeof un) == 0)
        throw std::runtime_error("cannot listen on unix:" + path + ": another server answers there");
    ::unlink(path.c_str());
}

// A socket bound at `a`, on `port` (a group's later members join the port its first one
// got, which matters for port 0); invalid when binding fails (errno says why).
Fd bind_inet(const ListenAddress& a, int port, bool reuseport) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV;
    addrinfo* res = nullptr;
    std::string service = std::to_string(port);
    if (int rc = getaddrinfo(a.host.c_str(), service.c_str(), &hints, &res); rc != 0)
        throw std::runtime_error("cannot listen on " + a.text() + ": " + gai_strerror(rc));
    Fd fd(socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    int one = 1;
    if (fd) setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd && reuseport) setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    // "[::]:8000" takes IPv6 only, so that "0.0.0.0:8000" can be listed beside it.
    if (fd && res->ai_family == AF_INET6) setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    bool ok = fd && bind(fd.get(), res->ai_addr, res->ai_addrlen) == 0;
    int err = errno;
    freeaddrinfo(res);
    if (!ok) fd.reset();
    errno = err;
    return fd;
}

int bound_port(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return -1;
    if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
    return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
}

Fd listen_inet(const ListenAddress& a, int port, bool reuseport) {
    Fd fd = bind_inet(a, port, reuseport);
    if (!fd || listen(fd.get(), kBacklog) != 0) cannot(a.text(), " (is another server on that port? choose another with -p)");
    return fd;
}

// Any process of bertd's user could join a SO_REUSEPORT group, a second bertd on the same
// port too: a socket without the option binds first, so a port in use is still an error.
void check_port_free(const ListenAddress& a) {
    if (a.port == 0) return;
    if (!bind_inet(a, a.port, false)) cannot(a.text(), " (is another server on that port? choose another with -p)");
}
}  // namespace

ListenSockets::Sock ListenSockets::open(const ListenConfig& entry, const ListenAddress& a, size_t group) {
    Sock s;
    s.key = a.text();
    if (!a.unix_socket) {
        s.reuseport = group > 1;
        if (s.reuseport) check_port_free(a);
        s.fds.push_back(listen_inet(a, a.port, s.reuseport));
        join(s, bind_members(s, a, group), a);
        return s;
    }
    remove_stale(a.path);
    Fd& fd = s.fds.emplace_back(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    sockaddr_un un = unix_address(a.path);
    if (!fd || bind(fd.get(), reinterpret_cast<sockaddr*>(&un), sizeof un) != 0)
        cannot(s.key, " (does the directory exist, may bertd write there?)");
    s.path = a.path;  // from here on the file is ours, and goes if anything below fails
    try {
        own_unix(entry, a.path);
        if (listen(fd.get(), kBacklog) != 0) cannot(s.key, "");
    } catch (...) {
        ::unlink(a.path.c_str());
        throw;
    }
    return s;
}

// A group opened with SO_REUSEPORT takes more members when more acceptors serve it; one
// opened without it (a single acceptor then) stays one socket that the acceptors share.
// The members come bound, not listening: until listen() no connection can queue on them.
std::vector<Fd> ListenSockets::bind_members(const Sock& s, const ListenAddress& a, size_t group) {
    std::vector<Fd> out;
    if (!s.reuseport || s.fds.size() >= group) return out;
    int port = bound_port(s.fds[0].get());
    while (port >= 0 && s.fds.size() + out.size() < group) {
        out.push_back(bind_inet(a, port, true));
        if (!out.back()) break;
    }
    if (port < 0 || (!out.empty() && !out.back())) cannot(a.text(), " (another member of its SO_REUSEPORT group)");
    return out;
}

void ListenSockets::join(Sock& s, std::vector<Fd>&& members, const ListenAddress& a) {
    for (Fd& fd : members) {
        if (listen(fd.get(), kBacklog) != 0) cannot(a.text(), "");
        s.fds.push_back(std::move(fd));
    }
}

void ListenSockets::own_unix(const ListenConfig& entry, const std::string& path) {
    if (entry.mode >= 0 && chmod(path.c_str(), mode_t(entry.mode)) != 0)
        cannot("unix:" + path, " (chmod " + std::to_string(entry.mode) + ")");
    if (entry.owner.empty() && entry.group.empty()) return;
    uid_t uid = uid_t(-1);
    gid_t gid = gid_t(-1);
    if (!entry.owner.empty()) {
        passwd* pw = getpwnam(entry.owner.c_str());
        if (!pw)
            throw std::runtime_error(entry.where + ": listen: no user '" + entry.owner + "' on this machine");
        uid = pw->pw_uid;
    }
    if (!entry.group.empty()) {
        group* gr = getgrnam(entry.group.c_str());
        if (!gr)
            throw std::runtime_error(entry.where + ": listen: no group '" + entry.group +
                                     "' on this machine");
        gid = gr->gr_gid;
    }
    if (chown(path.c_str(), uid, gid) != 0)
        cannot("unix:" + path, " (chown: only root may give a file away)");
}

void ListenSockets::update(const std::vector<ListenConfig>& entries, int port, const std::string& origin,
                           size_t group) {
    std::vector<ListenAddress> addrs;
    for (const ListenConfig& e : entries) {
        try {
            addrs.push_back(parse_listen_address(e.address, port));
        } catch (const std::invalid_argument& err) {
            throw std::runtime_error("listen address (" + origin + "): " + err.what());
        }
    }
    std::vector<Sock> next(entries.size());
    std::vector<int> kept(entries.size(), -1);  // index in socks_ of a socket that stays
    std::vector<std::vector<Fd>> more(entries.size());  // a kept group's new members
    try {
        for (size_t i = 0; i < entries.size(); ++i) {
            for (size_t k = 0; k < socks_.size(); ++k)
                if (socks_[k].key == addrs[i].text()) kept[i] = int(k);
            if (kept[i] < 0)
                next[i] = open(entries[i], addrs[i], group);
            else if (addrs[i].unix_socket)
                own_unix(entries[i], addrs[i].path);
            else
                more[i] = bind_members(socks_[size_t(kept[i])], addrs[i], group);
        }
    } catch (...) {
        for (Sock& s : next)  // only the new ones: nothing was taken from socks_ yet
            if (!s.fds.empty() && !s.path.empty()) ::unlink(s.path.c_str());
        throw;
    }
    std::vector<bool> taken(socks_.size(), false);
    for (size_t i = 0; i < entries.size(); ++i)
        if (kept[i] >= 0) {
            next[i] = std::move(socks_[size_t(kept[i])]);
            taken[size_t(kept[i])] = true;
            join(next[i], std::move(more[i]), addrs[i]);  // listen() on a bound socket: cannot fail
        }
    for (size_t k = 0; k < socks_.size(); ++k)
        if (!taken[k] && !socks_[k].path.empty()) ::unlink(socks_[k].path.c_str());
    socks_ = std::move(next);
}

int ListenSockets::dup(size_t i, size_t m) const { return fcntl(socks_[i].fds[m].get(), F_DUPFD_CLOEXEC, 3); }

void ListenSockets::close_all() {
    for (Sock& s : socks_)
        if (!s.path.empty()) ::unlink(s.path.c_str());
    socks_.clear();
}

}  // namespace bertd
