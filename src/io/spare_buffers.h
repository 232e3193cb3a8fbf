// spare_buffers.h: big buffers an acceptor keeps for a moment after their use, for the next
// big request or answer. A buffer over 128 KiB is a mapping of its own (acceptor.cc sets
// M_MMAP_THRESHOLD so that freeing one returns its memory), and a fresh mapping costs a page
// fault for every 4 KiB first written: on this kind of VM about 30 us each, 8 ms for 1 MiB,
// more than the request's own work. An answer's buffer that was sent is given back here,
// and the next answer of a size takes it; what sat unused for a second is freed. Bounded
// in count and bytes; single-threaded, as its acceptor is.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace bertd {

class SpareBuffers {
public:
    static constexpr size_t kBig = 128u << 10;     // smaller buffers come from the heap anyway
    static constexpr size_t kMaxBytes = 32u << 20;  // kept at most, in all
    static constexpr size_t kMaxCount = 16;
    static constexpr int64_t kKeepUs = 1'000'000;

    // Makes `s` hold at least `capacity` bytes, its contents kept: from the smallest spare
    // that fits when the capacity is big (the old buffer then becomes a spare), else, unless
    // `only_spare` (no new memory for bytes that may never come), with reserve(). True when
    // `s` is now a spare: all of its room is memory in use (a fresh reserve's is not, yet).
    bool reserve(std::string& s, size_t capacity, int64_t now_us, bool only_spare = false);
    // Keeps a big buffer's memory for a next reserve(); anything else is just freed.
    void give(std::string&& s, int64_t now_us);
    // Frees the spares unused for kKeepUs.
    void sweep(int64_t now_us);
    void clear();  // frees them all (the acceptor is over its memory budget)
    size_t bytes() const { return bytes_; }

private:
    struct Spare {
        std::string buf;
        int64_t since_us;
    };
    void drop(size_t i);  // removes spares_[i] (order does not matter)

    std::vector<Spare> spares_;
    size_t bytes_ = 0;
};

}  // namespace bertd
