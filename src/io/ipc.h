// ipc.h: the names of one server's internal sockets and shared segments, made in
// this one place. Every name carries a random token the master draws at start and
// its children inherit, so no other local user can predict a name and bind it
// first; the peers behind each socket are still checked (unix.h's credentials).
// Names can be seen by anyone (/proc/net/unix); the secret, drawn with them, is
// never written anywhere and proves a message comes from this server's processes.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

namespace bertd {

class IpcNames {
public:
    IpcNames() = default;
    // Draws a fresh token (getrandom) for the server whose master is `master`.
    static IpcNames create(pid_t master);
    // Rebuilds names from a prefix another process made (BERTD_ERLANG, tests).
    static IpcNames from_prefix(std::string prefix);

    const std::string& prefix() const { return prefix_; }  // "bertd.<pid>.<token>"
    bool empty() const { return prefix_.empty(); }
    const std::string& secret() const { return secret_; }  // 16 random bytes; empty from from_prefix()

    std::string handover(uint64_t generation) const;  // datagrams: idle connections after a reload
    std::string link() const;                         // acceptors connect to the Erlang link here
    std::string link_handlers() const;                // handler workers' erlang_rpc reach the link here
    std::string segment(uint64_t generation) const;   // a shared-memory object name ("/bertd....")

    // The master's pid in a segment name made by segment(), and its generation; false if not ours.
    static bool parse_segment(const std::string& name, pid_t& master, uint64_t& generation);
    // The newest generation's segment that the running master `master` holds open (read from
    // /proc/<pid>/fd, so only its own user or root finds it); empty when there is none.
    static std::string newest_segment(pid_t master);
    // Where the segment `name` (made by segment()) can still be opened once its name is
    // unlinked: "/proc/<master>/fd/<n>" of the master that holds it; empty if none does.
    static std::string segment_in_master(const std::string& name);

private:
    std::string prefix_;
    std::string secret_;
};

}  // namespace bertd
