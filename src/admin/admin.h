// admin.h: the __admin__ pseudo-module (stats, reload_handlers, halt) and the
// stats text that `bertd stats` prints. Runs inside an acceptor; never blocks.
#pragma once

#include <string>
#include <string_view>

#include "bert/codec.h"
#include "shm/segment.h"

namespace bertd::admin {

// Answers one __admin__ request as a whole BERP frame.
std::string call(Segment& seg, const bert::Peek& pk, std::string_view payload);

// Ernie's key=value lines and bertd's own, one per line, from the segment alone
// (so `bertd stats -P PIDFILE` can print them without a connection).
std::string stats_text(Segment& seg);

}  // namespace bertd::admin
