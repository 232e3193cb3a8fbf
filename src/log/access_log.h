// access_log.h: one line per finished request in Ernie's format, written whole
// with one write(2) on an O_APPEND file, so acceptors never interleave. The file
// is rotated by moving it: whoever notices the move reopens the path and bumps the
// generation in shared memory; every other acceptor follows at its next check.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "shm/segment.h"

namespace bertd {

struct AccessRecord {
    bool ok = true;             // ACC or ERR
    int64_t arrived_us = 0;     // wall clock when the request arrived
    int64_t wait_us = 0;        // arrival to processing start (queueing)
    int64_t run_us = 0;         // processing start to finish
    uint32_t queued_high = 0, queued_low = 0;  // queue sizes when it arrived
    bool native = false;        // nat or ext
    bool high = true;
    std::string_view request;   // the request in Erlang syntax
};

class AccessLog {
public:
    AccessLog() = default;
    ~AccessLog();
    AccessLog(const AccessLog&) = delete;
    AccessLog& operator=(const AccessLog&) = delete;

    // Opens `path` (creating it) and records its identity in `shared`.
    void open(const std::string& path, AccessLogShared* shared);
    bool enabled() const { return fd_ >= 0; }
    void write(const AccessRecord& r);
    // Reopens if the file at the path was moved or deleted, or another process
    // already reopened it. Cheap: one stat(2). Call about every quarter second.
    void reopen_if_moved();
    void reopen();  // at once (SIGUSR1)

    // Formats a record as Ernie did (without the newline); exposed for tests.
    static void format(const AccessRecord& r, std::string& out);

private:
    void open_at_generation();

    std::string path_;
    AccessLogShared* shared_ = nullptr;
    int fd_ = -1;
    uint64_t generation_ = 0;
    std::string line_;
};

}  // namespace bertd
