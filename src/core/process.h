// process.h: small RAII and process helpers shared by the master and its children:
// an owning fd, non-blocking set-up, spawning a handler command on fds 3 and 4.
// Nothing here knows about BERT.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <string>
#include <utility>
#include <vector>

namespace bertd {

class Fd {
public:
    Fd() = default;
    explicit Fd(int fd) : fd_(fd) {}
    Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    Fd& operator=(Fd&& o) noexcept {
        if (this != &o) reset(std::exchange(o.fd_, -1));
        return *this;
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() { reset(); }

    int get() const { return fd_; }
    explicit operator bool() const { return fd_ >= 0; }
    int release() { return std::exchange(fd_, -1); }
    void reset(int fd = -1) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = fd;
    }

private:
    int fd_ = -1;
};

void set_nonblocking(int fd);
void set_cloexec(int fd, bool on);

// Forks a handler worker: `command` runs through /bin/sh with `sock` as fds 3
// and 4, stdin from /dev/null, stdout and stderr inherited, default signal
// dispositions, and no other descriptors. Returns the child's pid (-1 on failure).
pid_t spawn_worker(const std::string& command, int sock);

// Reads and discards whatever `fd` (non-blocking) holds now; returns the byte count.
size_t drain(int fd);

// Closes every descriptor >= `from` except those listed.
void close_fds_from(int from, const std::vector<int>& keep);

}  // namespace bertd
