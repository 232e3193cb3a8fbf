// drops.h: what the link does with a message it cannot deliver: it counts it by
// reason (for `bertd stats`) and says so in the log, at most a few lines per reason
// per interval, with how many went unmentioned since. Pure; the caller logs.
#pragma once

#include <cstdint>

#include "shm/segment.h"

namespace bertd::erl {

// The first four in the order of kErlangDropNames in shm/segment.h (counted in the stats);
// Rex: a request rex does not serve (answered or not); Process: a message to a name whose
// function failed. Those two are only logged.
enum class Drop { Unregistered = 0, DeadPid = 1, Undecodable = 2, QueueFull = 3, Rex = 4, Process = 5 };
constexpr int kDropReasons = 6;

class DropLog {
public:
    static constexpr int64_t kIntervalUs = 1'000'000;
    static constexpr int kLinesPerInterval = 3;

    // Counts one drop. True when a line should be logged now (at most kLinesPerInterval per
    // reason and interval); `unlogged` is then the number of drops of that reason since the
    // last line that were not logged.
    bool note(Drop why, int64_t now_us, uint64_t& unlogged) {
        K& k = k_[int(why)];
        ++k.count;
        if (k.lines == 0 || now_us - k.window_us >= kIntervalUs) {
            k.window_us = now_us;
            k.lines = 0;
        }
        if (k.lines >= kLinesPerInterval) {
            ++k.unlogged;
            return false;
        }
        ++k.lines;
        unlogged = k.unlogged;
        k.unlogged = 0;
        return true;
    }
    uint64_t count(Drop why) const { return k_[int(why)].count; }

private:
    struct K {
        uint64_t count = 0, unlogged = 0;
        int64_t window_us = 0;
        int lines = 0;  // logged in the window that began at window_us
    } k_[kDropReasons];
};

}  // namespace bertd::erl
