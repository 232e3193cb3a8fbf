// metrics.h: the statistics of the shared segment in Prometheus's text exposition format
// (version 0.0.4), for GET /metrics (net/metrics_http.h): counters, gauges and latency
// histograms, named after Prometheus's conventions. Reads relaxed counters and takes a
// module's lock only for its queue lengths; never blocks on I/O.
#pragma once

#include <string>

#include "shm/segment.h"

namespace bertd::admin {

// `link_down`: this acceptor has no welcomed Erlang link connection (health).
std::string metrics_text(Segment& seg, bool link_down);

}  // namespace bertd::admin
