// access_log.cc: Ernie's access-log line and rotation by moving the file. A failing
// log write never fails a request.
#include "log/access_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <errno.h>

#include <cstdio>
#include <cstring>

#include "log/log.h"

namespace bertd {

AccessLog::~AccessLog() {
    if (fd_ >= 0) ::close(fd_);
}

void AccessLog::format(const AccessRecord& r, std::string& out) {
    char head[160];
    time_t secs = time_t(r.arrived_us / 1000000);
    tm t;
    localtime_r(&secs, &t);
    int n = snprintf(head, sizeof head, "%s [%04d-%02d-%02dT%02d:%02d:%02d.%06ld] %.6f %.6f ",
                     r.ok ? "ACC" : "ERR", t.tm_year + 1900, t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min,
                     t.tm_sec, long(r.arrived_us % 1000000), double(r.wait_us) / 1e6, double(r.run_us) / 1e6);
    out.append(head, size_t(n));
    // The extended format's client takes the place of Ernie's first dash: the same fields.
    out.append(r.client.empty() ? std::string_view("-") : r.client);
    n = snprintf(head, sizeof head, " %u %u %s %s - ", r.queued_high, r.queued_low, r.native ? "nat" : r.cached ? "cache" : "ext",
                 r.high ? "high" : "low");
    out.append(head, size_t(n));
    out.append(r.request);
}

void AccessLog::open(const std::string& path, AccessLogShared* shared, GlobalStats* stats) {
    path_ = path;
    shared_ = shared;
    stats_ = stats;
    generation_ = shared_->generation.load();
    open_at_generation();
    struct stat st;
    if (fd_ >= 0 && fstat(fd_, &st) == 0) {
        LockGuard g(shared_->lock);
        if (shared_->ino.load() == 0) {
            shared_->dev = uint64_t(st.st_dev);
            shared_->ino = uint64_t(st.st_ino);
        }
    }
}

bool AccessLog::open_path(int& fd) {
    fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd >= 0) return true;
    uint64_t times;
    if (said_open_.due(times))
        log::error("access log %s: cannot open it (%s)%s", path_.c_str(), strerror(errno),
                   fd_ >= 0 ? "; lines still go to the file it replaced, which may be deleted" : "; lines are lost");
    return false;
}

void AccessLog::open_at_generation() {
    int fd;
    if (!open_path(fd)) return;  // keep writing to the old file rather than nowhere
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
}

void AccessLog::lost(int err) {
    ++lost_;
    if (stats_) stats_->access_log_lost.fetch_add(1, std::memory_order_relaxed);
    failing_ = true;
    uint64_t times;
    if (said_lost_.due(times)) {
        log::error("access log %s: %llu lines not written whole (%s); the access log is incomplete", path_.c_str(),
                   (unsigned long long)lost_, strerror(err));
        lost_ = 0;
    }
}

void AccessLog::write(const AccessRecord& r) {
    if (fd_ < 0) return;
    // Once any process has reopened the log, no line may go to the old file.
    if (shared_ && shared_->generation.load(std::memory_order_acquire) != generation_) {
        generation_ = shared_->generation.load();
        open_at_generation();
    }
    line_.clear();
    format(r, line_);
    line_.push_back('\n');
    ssize_t n = ::write(fd_, line_.data(), line_.size());
    if (n == ssize_t(line_.size())) {
        if (failing_) {
            failing_ = false;
            log::info("access log %s: writing again (%llu more lines lost before)", path_.c_str(),
                      (unsigned long long)lost_);
            lost_ = 0;
        }
        return;
    }
    lost(n < 0 ? errno : ENOSPC);
}

void AccessLog::reopen_if_moved() {
    if (!shared_ || path_.empty()) return;
    uint64_t gen = shared_->generation.load();
    if (gen != generation_) {
        generation_ = gen;
        open_at_generation();
        return;
    }
    struct stat st;
    bool moved = ::stat(path_.c_str(), &st) != 0 || uint64_t(st.st_ino) != shared_->ino.load() ||
                 uint64_t(st.st_dev) != shared_->dev.load();
    if (moved) reopen();
}

void AccessLog::reopen() {
    if (!shared_) return;
    LockGuard g(shared_->lock);
    // Another process may have reopened it while we waited for the lock.
    struct stat st;
    bool current = ::stat(path_.c_str(), &st) == 0 && uint64_t(st.st_ino) == shared_->ino.load() &&
                   uint64_t(st.st_dev) == shared_->dev.load() && shared_->generation.load() != generation_;
    if (!current) {
        int fd;
        if (!open_path(fd)) return;
        if (fstat(fd, &st) == 0) {
            shared_->dev = uint64_t(st.st_dev);
            shared_->ino = uint64_t(st.st_ino);
        }
        ::close(fd);
        shared_->generation.fetch_add(1);
    }
    generation_ = shared_->generation.load();
    open_at_generation();
}

}  // namespace bertd
