// throttle.h: says a repeated thing once per period, with how often it happened since,
// so nothing a client or another local user does can flood the error log. No I/O.
#pragma once

#include <cstdint>

#include "io/clock.h"

namespace bertd::log {

class Throttle {
public:
    explicit Throttle(int64_t period_us) : period_us_(period_us) {}
    // Counts one occurrence; true when a line is due, with `times` the occurrences it covers.
    bool due(uint64_t& times) {
        ++count_;
        int64_t now = monotonic_us();
        if (said_at_us_ != 0 && now - said_at_us_ < period_us_) return false;
        said_at_us_ = now;
        times = count_;
        count_ = 0;
        return true;
    }

private:
    int64_t period_us_;
    int64_t said_at_us_ = 0;
    uint64_t count_ = 0;
};

}  // namespace bertd::log
