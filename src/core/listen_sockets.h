// listen_sockets.h: the master's listen sockets, one per `listen` entry, kept across
// reloads by address so that no client ever finds a port closed; a unix socket gets its
// mode and owner, and its file is removed when bertd stops listening there. Start-up and
// reload errors are exceptions saying what to fix; a failed update changes nothing.
// A TCP entry served by several acceptors is a SO_REUSEPORT group, one member per
// acceptor, so the kernel gives each connection to one of them (no herd on one socket);
// members are only ever added while the address stays, so no queued connection is dropped.
#pragma once

#include <string>
#include <vector>

#include "core/listen_config.h"
#include "io/fd.h"

namespace bertd {

class ListenSockets {
public:
    ListenSockets() = default;
    ListenSockets(const ListenSockets&) = delete;
    ListenSockets& operator=(const ListenSockets&) = delete;

    // Makes the set what `entries` say (`port` for those without their own; `origin` names
    // where they came from in messages): sockets at an address already open are kept, new
    // ones opened, the others closed. All or nothing: after an exception the set is as it was.
    // `group`: the members a TCP entry should have (the acceptors); a kept group grows to it.
    void update(const std::vector<ListenConfig>& entries, int port, const std::string& origin, size_t group = 1);
    size_t size() const { return socks_.size(); }
    // Entry i's members (one for a unix socket or a group of one).
    size_t members(size_t i) const { return socks_[i].fds.size(); }
    // A close-on-exec duplicate of member m of entry i's group (of the last update).
    int dup(size_t i, size_t m = 0) const;
    const std::string& name(size_t i) const { return socks_[i].key; }
    // Stops listening everywhere; unix socket files are removed (the master, at stop).
    void close_all();
    // In a child: closes the descriptors and leaves the files to the master.
    void forget() { socks_.clear(); }

private:
    struct Sock {
        std::string key;  // ListenAddress::text()
        std::vector<Fd> fds;  // the group's members; [0] is the first bound
        std::string path;     // a unix socket's file, removed with it
        bool reuseport = false;
    };
    static Sock open(const ListenConfig& entry, const ListenAddress& a, size_t group);
    static std::vector<Fd> bind_members(const Sock& s, const ListenAddress& a, size_t group);
    static void join(Sock& s, std::vector<Fd>&& members, const ListenAddress& a);
    static void own_unix(const ListenConfig& entry, const std::string& path);
    std::vector<Sock> socks_;
};

}  // namespace bertd
