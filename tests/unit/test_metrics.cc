// test_metrics.cc: the Prometheus exposition (admin/metrics.h) and the health answer
// (admin/health.h) from a real segment: cumulative buckets at exact bounds, escaped
// labels, and the health states.
#include <CppUTest/TestHarness.h>

#include <unistd.h>

#include <cstdio>
#include <string>

#include "admin/health.h"
#include "admin/metrics.h"
#include "shm/cache.h"
#include "shm/segment.h"

using namespace bertd;

namespace {
std::unique_ptr<Segment> one_module(const char* name) {
    auto seg = Segment::create("/bertd-test-metrics." + std::to_string(getpid()), 1, 1, 1, 4);
    seg->module(0).first_slot = 0;
    seg->module(0).nslots = 1;
    snprintf(seg->module(0).name, sizeof seg->module(0).name, "%s", name);
    seg->slot(0).module = 0;
    return seg;
}
bool has(const std::string& text, const std::string& line) {
    return text.find(line + "\n") != std::string::npos;
}
}  // namespace

TEST_GROUP(Metrics){};

TEST(Metrics, buckets_are_cumulative_at_powers_of_two_microseconds) {
    auto seg = one_module("m");
    Histogram& h = seg->module(0).stats.latency;
    h.record(10);        // under 16 us
    h.record(15);        // under 16 us
    h.record(16);        // the next bound's
    h.record(1000000);   // a second
    h.record(60000000);  // over the last bound
    std::string t = admin::metrics_text(*seg, false);
    CHECK(has(t, "bertd_request_duration_seconds_bucket{module=\"m\",le=\"1.6e-05\"} 2"));
    CHECK(has(t, "bertd_request_duration_seconds_bucket{module=\"m\",le=\"3.2e-05\"} 3"));
    CHECK(has(t, "bertd_request_duration_seconds_bucket{module=\"m\",le=\"1.04858\"} 4"));
    CHECK(has(t, "bertd_request_duration_seconds_bucket{module=\"m\",le=\"33.5544\"} 4"));
    CHECK(has(t, "bertd_request_duration_seconds_bucket{module=\"m\",le=\"+Inf\"} 5"));
    CHECK(has(t, "bertd_request_duration_seconds_count{module=\"m\"} 5"));
    CHECK(has(t, "bertd_request_duration_seconds_sum{module=\"m\"} 61.000041"));
    seg->remove();
}

TEST(Metrics, label_values_are_escaped) {
    auto seg = one_module("a\"b\\c");
    std::string t = admin::metrics_text(*seg, false);
    CHECK(has(t, "bertd_requests_total{module=\"a\\\"b\\\\c\",kind=\"external\",priority=\"high\"} 0"));
    seg->remove();
}

TEST(Metrics, health_is_degraded_without_a_live_worker_and_draining_when_told) {
    auto seg = one_module("m");
    CHECK(admin::health(*seg, false) == admin::Health::Degraded);  // no worker yet
    seg->slot(0).pid = getpid();
    seg->release(0);  // the master offers the slot: Idle
    CHECK(admin::health(*seg, false) == admin::Health::Ok);
    CHECK(admin::health(*seg, true) == admin::Health::Degraded);  // the Erlang link is down
    seg->header().draining = 1;
    CHECK(admin::health(*seg, false) == admin::Health::Draining);
    CHECK(has(admin::metrics_text(*seg, false), "bertd_health{state=\"draining\"} 1"));
    seg->remove();
}

TEST(Metrics, a_module_with_a_cache_shows_its_hits_and_misses) {
    auto seg =
        Segment::create("/bertd-test-metrics-cache." + std::to_string(getpid()), 1, 1, 1, 4, {64 * 1024});
    snprintf(seg->module(0).name, sizeof seg->module(0).name, "%s", "c");
    seg->module(0).nslots = 1;
    CHECK(seg->cache(0) != nullptr);
    seg->cache(0)->header().hits = 3;
    seg->cache(0)->header().misses = 2;
    std::string t = admin::metrics_text(*seg, false);
    CHECK(has(t, "bertd_cache_hits_total{module=\"c\"} 3"));
    CHECK(has(t, "bertd_cache_misses_total{module=\"c\"} 2"));
    auto plain = one_module("m");
    CHECK(admin::metrics_text(*plain, false).find("bertd_cache_hits_total") == std::string::npos);
    plain->remove();
    seg->remove();
}
