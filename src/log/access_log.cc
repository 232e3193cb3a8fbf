// access_log.cc: Ernie's access-log line and rotation by moving the file. A failing
// log write never fails a request.
#include "log/access_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>

namespace bertd {

AccessLog::~AccessLog() {
    if (fd_ >= 0) ::close(fd_);
}

void AccessLog::format(const AccessRecord& r, std::string& out) {
    char head[160];
    time_t secs = time_t(r.arrived_us / 1000000);
    tm t;
    localtime_r(&secs, &t);
    int n = snprintf(head, sizeof head, "%s [%04d-%02d-%02dT%02d:%02d:%02d.%06ld] %.6f %.6f - %u %u %s %s - ",
                     r.ok ? "ACC" : "ERR", t.tm_year + 1900, t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec,
                     long(r.arrived_us % 1000000), double(r.wait_us) / 1e6, double(r.run_us) / 1e6, r.queued_high,
                     r.queued_low, r.native ? "nat" : "ext", r.high ? "high" : "low");
    out.append(head, size_t(n));
    out.append(r.request);
}

void AccessLog::open(const std::string& path, AccessLogShared* shared) {
    path_ = path;
    shared_ = shared;
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

void AccessLog::open_at_generation() {
    int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return;  // keep writing to the old file rather than nowhere
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
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
    [[maybe_unused]] ssize_t n = ::write(fd_, line_.data(), line_.size());
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
        int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0) return;
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
