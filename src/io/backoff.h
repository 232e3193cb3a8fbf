// backoff.h: the one restart curve bertd uses for everything it retries (a child
// that dies, a node that cannot be reached): the first retry at once, then 100 ms,
// doubling up to a cap. Pure functions, no clock of their own.
#pragma once

#include <algorithm>
#include <cstdint>

namespace bertd {

// The delay before the next attempt after `failures` failures in a row (0 or 1: none).
inline int64_t backoff_us(int failures, int64_t cap_us) {
    if (failures <= 1) return 0;
    int64_t d = int64_t(100'000) << std::min(failures - 2, 10);
    return std::min(d, cap_us);
}

// Failures in a row, forgotten once an attempt has lived for `healthy_us`.
struct Backoff {
    int failures = 0;
    int64_t retry_at_us = 0;

    // An attempt started at `started_us` failed at `now_us`.
    void failed(int64_t started_us, int64_t now_us, int64_t healthy_us, int64_t cap_us) {
        failures = now_us - started_us < healthy_us ? failures + 1 : 1;
        retry_at_us = now_us + backoff_us(failures, cap_us);
    }
    void reset(int64_t now_us = 0) {
        failures = 0;
        retry_at_us = now_us;
    }
};

}  // namespace bertd
