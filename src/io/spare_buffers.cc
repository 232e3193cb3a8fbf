// spare_buffers.cc: see spare_buffers.h.
#include "io/spare_buffers.h"

#include <utility>

namespace bertd {

bool SpareBuffers::reserve(std::string& s, size_t capacity, int64_t now_us, bool only_spare) {
    if (s.capacity() >= capacity) return false;
    size_t best = spares_.size();
    for (size_t i = 0; i < spares_.size(); ++i) {
        size_t cap = spares_[i].buf.capacity();
        if (cap >= capacity && (best == spares_.size() || cap < spares_[best].buf.capacity())) best = i;
    }
    if (capacity < kBig || best == spares_.size()) {
        if (!only_spare) s.reserve(capacity);
        return false;
    }
    std::string taken = std::move(spares_[best].buf);
    bytes_ -= taken.capacity();
    drop(best);
    taken.assign(s);  // within its capacity: no new memory
    give(std::exchange(s, std::move(taken)), now_us);
    return true;
}

void SpareBuffers::clear() {
    spares_.clear();
    bytes_ = 0;
}

void SpareBuffers::give(std::string&& s, int64_t now_us) {
    size_t cap = s.capacity();
    if (cap < kBig || spares_.size() >= kMaxCount || bytes_ + cap > kMaxBytes) return;  // freed with `s`
    s.clear();
    bytes_ += cap;
    spares_.push_back(Spare{std::move(s), now_us});
}

void SpareBuffers::sweep(int64_t now_us) {
    for (size_t i = 0; i < spares_.size();) {
        if (now_us - spares_[i].since_us < kKeepUs) {
            ++i;
            continue;
        }
        bytes_ -= spares_[i].buf.capacity();
        drop(i);
    }
}

void SpareBuffers::drop(size_t i) {
    if (i + 1 != spares_.size()) spares_[i] = std::move(spares_.back());
    spares_.pop_back();
}

}  // namespace bertd
