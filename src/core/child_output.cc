// child_output.cc: reading a worker's stderr pipe in bounded, non-blocking bites.
#include "core/child_output.h"

#include <errno.h>
#include <unistd.h>

namespace bertd {

void ChildOutput::attach(Fd read_end) {
    fd_ = std::move(read_end);
    if (fd_) set_nonblocking(fd_.get());
    partial_.clear();
    cutting_ = false;
    tail_.clear();
}

void ChildOutput::take(std::string_view line, const std::function<void(std::string_view)>& out) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    out(line);
    tail_.emplace_back(line.substr(0, kTailLineMax));
    if (tail_.size() > kTailLines) tail_.pop_front();
}

void ChildOutput::pump(const std::function<void(std::string_view)>& line, size_t budget) {
    char buf[8192];
    while (fd_ && budget > 0) {
        ssize_t n = ::read(fd_.get(), buf, std::min(sizeof buf, budget));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            if (n < 0 && errno == EAGAIN) return;
            fd_.reset();  // end of file (or an error that will not go away)
            if (!partial_.empty() && !cutting_) take(partial_, line);
            partial_.clear();
            return;
        }
        budget -= size_t(n);
        std::string_view in(buf, size_t(n));
        while (!in.empty()) {
            size_t nl = in.find('\n');
            std::string_view piece = in.substr(0, nl);
            if (!cutting_)
                partial_.append(piece.substr(0, kMaxLine + 1 - std::min(partial_.size(), kMaxLine + 1)));
            if (!cutting_ && partial_.size() > kMaxLine) {
                partial_.resize(kMaxLine);
                take(partial_ + "...", line);
                partial_.clear();
                cutting_ = true;
            }
            if (nl == std::string_view::npos) break;
            if (!cutting_) take(partial_, line);
            partial_.clear();
            cutting_ = false;
            in.remove_prefix(nl + 1);
        }
    }
}

std::string ChildOutput::tail() const {
    std::string out;
    for (const auto& l : tail_) {
        if (!out.empty()) out += " | ";
        out += l;
    }
    return out;
}

}  // namespace bertd
