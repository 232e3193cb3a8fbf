// unix.h: the unix-domain plumbing bertd's processes talk through: abstract
// socket names, who is at the other end (SO_PEERCRED, SCM_CREDENTIALS),
// descriptors passed with SCM_RIGHTS, and the non-blocking flush loop. Every
// socket made here is non-blocking and close-on-exec; nothing here blocks.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace bertd {

// An address in the abstract namespace (sun_path[0] == 0). Names are bertd's own
// and short; one longer than the address can hold is refused (len == 0), never cut.
struct AbstractAddress {
    sockaddr_un addr{};
    socklen_t len = 0;
};
AbstractAddress abstract_address(std::string_view name);

// -1 with errno set on failure. `type` is SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET.
int listen_abstract(std::string_view name, int type, int backlog);
int bind_abstract(std::string_view name, int type);  // datagrams: bound, not listening
int connect_abstract(std::string_view name, int type);

struct PeerCred {
    pid_t pid = 0;
    uid_t uid = 0;
    gid_t gid = 0;
};
// Who connected (or, for the connecting side, who listens) at the other end of `fd`.
bool peer_credentials(int fd, PeerCred& out);
// The parent of `pid`, from /proc; 0 when it cannot be read (the process is gone).
pid_t parent_of(pid_t pid);
// Is `pid` `ancestor` itself or one of its descendants (a process of that server)?
bool descends_from(pid_t pid, pid_t ancestor);
// Has every message received on `fd` carry its sender's credentials (SCM_CREDENTIALS).
void pass_credentials(int fd);

// The most descriptors one message carries (the kernel's SCM_MAX_FD is 253).
constexpr size_t kMaxPassedFds = 250;

// sendmsg of `data` with `fds` attached (at most kMaxPassedFds); returns what sendmsg returns.
ssize_t send_with_fds(int sock, std::string_view data, const int* fds, size_t nfds);

// recvmsg into buf: descriptors that came along are appended to `fds` (close-on-exec;
// the caller owns them), and with pass_credentials() on, `cred` (if non-null) gets the
// sender's. `flags` go to recvmsg beside MSG_DONTWAIT (MSG_PEEK: the bytes stay, and
// the credentials are those of the writer of the first of them). Returns what recvmsg returns.
ssize_t recv_with_fds(int sock, char* buf, size_t cap, std::vector<int>& fds, PeerCred* cred = nullptr,
                      int flags = 0);

// Sends bytes[sent...] without blocking until it is all gone (Done), the socket is full
// (Blocked) or the send fails (Failed, errno says why); `sent` advances by what went.
// The one send loop: every writer on an event loop goes through it.
enum class Flush { Done, Blocked, Failed };
Flush send_some(int fd, std::string_view bytes, size_t& sent);

// send_some on out[start...]; on Done both are reset to empty.
Flush flush_some(int fd, std::string& out, size_t& start);

}  // namespace bertd
