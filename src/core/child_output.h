// child_output.h: a handler worker's stderr as the master relays it. The master
// reads the pipe's other end without ever waiting, cuts what arrives into lines
// (each bounded), passes each line on, and keeps the last few for the report when
// the worker dies young. It never blocks and never holds more than a few KiB.
#pragma once

#include <deque>
#include <functional>
#include <string>
#include <string_view>

#include "io/fd.h"

namespace bertd {

class ChildOutput {
public:
    static constexpr size_t kMaxLine = 1024;  // longer lines are cut, with "..."
    static constexpr size_t kTailLines = 5;   // kept for the report
    static constexpr size_t kTailLineMax = 300;

    // A new incarnation's pipe (the read end, made non-blocking here); the tail starts empty.
    void attach(Fd read_end);
    void close() { fd_.reset(); }
    int fd() const { return fd_.get(); }

    // Reads what the pipe holds now, at most `budget` bytes, and calls `line` for each
    // complete line. At end of file (every writer gone) the pipe is closed and a last
    // unterminated line is passed on too.
    void pump(const std::function<void(std::string_view)>& line, size_t budget = 64 * 1024);

    // The last lines written, oldest first, joined with " | "; empty if none.
    std::string tail() const;

private:
    void take(std::string_view line, const std::function<void(std::string_view)>& out);

    Fd fd_;
    std::string partial_;
    bool cutting_ = false;  // the rest of an over-long line is being skipped
    std::deque<std::string> tail_;
};

}  // namespace bertd
