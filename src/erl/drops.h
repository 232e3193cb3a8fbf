// drops.h: what the link does with a message it cannot deliver: it counts it by
// reason (for `bertd stats`) and says so in the log, at most one line per reason
// per interval, with how many went unmentioned since. Pure; the caller logs.
#pragma once

#include <cstdint>

#include "shm/segment.h"

namespace bertd::erl {

// The order of kErlangDropNames in shm/segment.h.
enum class Drop { Unregistered = 0, DeadPid = 1, Undecodable = 2, QueueFull = 3 };

class DropLog {
public:
    static constexpr int64_t kIntervalUs = 1'000'000;

    // Counts one drop. True when a line should be logged now; `unlogged` is then the
    // number of drops of that reason since the last line that were not logged.
    bool note(Drop why, int64_t now_us, uint64_t& unlogged) {
        K& k = k_[int(why)];
        ++k.count;
        if (k.logged && now_us - k.last_us < kIntervalUs) {
            ++k.unlogged;
            return false;
        }
        unlogged = k.unlogged;
        k.unlogged = 0;
        k.last_us = now_us;
        k.logged = true;
        return true;
    }
    uint64_t count(Drop why) const { return k_[int(why)].count; }

private:
    struct K {
        uint64_t count = 0, unlogged = 0;
        int64_t last_us = 0;
        bool logged = false;
    } k_[kErlangDropKinds];
};

}  // namespace bertd::erl
