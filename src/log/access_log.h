// access_log.h: one line per finished request in Ernie's format (or extended with the
// client's address), written whole
// with one write(2) on an O_APPEND file, so acceptors never interleave. The file
// is rotated by moving it: whoever notices the move reopens the path and bumps the
// generation in shared memory; every other acceptor follows at its next check. A line
// that cannot be written whole (a full disk) is counted (access_log.lost in the stats)
// and the error log says so once per period, as it says when the file cannot be
// reopened (its directory is gone); writing never blocks or fails a request.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "log/throttle.h"
#include "shm/segment.h"

namespace bertd {

struct AccessRecord {
    bool ok = true;             // ACC or ERR
    int64_t arrived_us = 0;     // wall clock when the request arrived
    int64_t wait_us = 0;        // arrival to processing start (queueing)
    int64_t run_us = 0;         // processing start to finish
    uint32_t queued_high = 0, queued_low = 0;  // queue sizes when it arrived
    bool native = false;        // nat or ext
    bool cached = false;        // answered from bertd's own cache: cache
    bool high = true;
    std::string_view request;   // the request in Erlang syntax
    // access_log_format: extended: the client's address, in place of Ernie's first dash.
    std::string_view client;
};

class AccessLog {
public:
    AccessLog() = default;
    ~AccessLog();
    AccessLog(const AccessLog&) = delete;
    AccessLog& operator=(const AccessLog&) = delete;

    // Opens `path` (creating it) and records its identity in `shared`; lines lost are
    // counted in `stats` (may be null).
    void open(const std::string& path, AccessLogShared* shared, GlobalStats* stats = nullptr);
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
    bool open_path(int& fd);  // false (and said, once per period) when the path cannot be opened
    void lost(int err);

    std::string path_;
    AccessLogShared* shared_ = nullptr;
    int fd_ = -1;
    uint64_t generation_ = 0;
    std::string line_;
    GlobalStats* stats_ = nullptr;
    uint64_t lost_ = 0;     // since the last line about it
    bool failing_ = false;  // the last write did not go through whole
    log::Throttle said_lost_{10'000'000}, said_open_{10'000'000};
};

}  // namespace bertd
