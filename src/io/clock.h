// clock.h: the two clocks every bertd process reads. Wall time for what people
// read (log lines, stats' start time), monotonic time for every interval and
// deadline. No state, no allocation.
#pragma once

#include <cstdint>

namespace bertd {

int64_t now_us();        // CLOCK_REALTIME microseconds
int64_t monotonic_us();  // CLOCK_MONOTONIC microseconds

}  // namespace bertd
