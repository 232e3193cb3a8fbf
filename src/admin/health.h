// health.h: what a load balancer asks before it sends a bertd traffic
// (__admin__:health()): ok, degraded (a module without a live worker, or the Erlang link
// down) or draining (a graceful stop waits out drain_timeout). Read from the segment
// alone, without a lock; never blocks and answers every client.
#pragma once

#include <string>

#include "shm/segment.h"

namespace bertd::admin {

enum class Health { Ok, Degraded, Draining };

// `why` (may be null) gets the first reason for anything but ok.
Health health(Segment& seg, bool link_down, std::string* why = nullptr);
const char* health_name(Health h);
// {reply, ok | degraded | draining}, as a whole BERP frame.
std::string health_frame(Segment& seg, bool link_down);

}  // namespace bertd::admin
