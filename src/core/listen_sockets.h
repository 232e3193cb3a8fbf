// listen_sockets.h: the master's listen sockets, one per `listen` entry, kept across
// reloads by address so that no client ever finds a port closed; a unix socket gets its
// mode and owner, and its file is removed when bertd stops listening there. Start-up and
// reload errors are exceptions saying what to fix; a failed update changes nothing.
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
    void update(const std::vector<ListenConfig>& entries, int port, const std::string& origin);
    size_t size() const { return socks_.size(); }
    // A close-on-exec duplicate of entry i's socket (of the last update), for a generation.
    int dup(size_t i) const;
    const std::string& name(size_t i) const { return socks_[i].key; }
    // Stops listening everywhere; unix socket files are removed (the master, at stop).
    void close_all();
    // In a child: closes the descriptors and leaves the files to the master.
    void forget() { socks_.clear(); }

private:
    struct Sock {
        std::string key;  // ListenAddress::text()
        Fd fd;
        std::string path;  // a unix socket's file, removed with it
    };
    static Sock open(const ListenConfig& entry, const ListenAddress& a);
    static void own_unix(const ListenConfig& entry, const std::string& path);
    std::vector<Sock> socks_;
};

}  // namespace bertd
