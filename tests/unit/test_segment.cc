// test_segment.cc: the shared segment's slot table and priority queues, including
// a lock whose holder died.
#include <CppUTest/TestHarness.h>

#include <sys/wait.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "shm/segment.h"

using bertd::Segment;
using bertd::SlotState;

namespace {
std::unique_ptr<Segment> make_segment(uint32_t nslots, uint32_t qcap) {
    std::string name = "/bertd-unit." + std::to_string(getpid());
    auto seg = Segment::create(name, 1, nslots, 2, qcap);
    seg->module(0).first_slot = 0;
    seg->module(0).nslots = nslots;
    for (uint32_t i = 0; i < nslots; ++i) {
        seg->slot(i).module = 0;
        seg->slot(i).state = uint32_t(SlotState::Reaping);
        CHECK_EQUAL(-1, seg->release(i));  // nobody waits: the slot becomes idle
    }
    return seg;
}
}  // namespace

TEST_GROUP(Segment) {
    std::unique_ptr<Segment> seg;
    void teardown() override {
        if (seg) seg->remove();
        seg.reset();
    }
};

TEST(Segment, idle_slots_are_leased_then_requests_queue) {
    seg = make_segment(2, 8);
    uint32_t s1 = 99, s2 = 99, s3 = 99;
    CHECK(seg->lease_or_enqueue(0, 0, 1, true, 0, s1) == Segment::Grant::Leased);
    CHECK(seg->lease_or_enqueue(0, 1, 2, true, 0, s2) == Segment::Grant::Leased);
    CHECK(s1 != s2);
    CHECK(seg->lease_or_enqueue(0, 0, 3, true, 0, s3) == Segment::Grant::Queued);
    CHECK_EQUAL(1u, seg->queue_length(0, true));
    CHECK_EQUAL(0u, seg->queue_length(0, false));
}

// An acceptor is offered the idle slot it held last (it may still be registered there), and
// takes any other idle one when that one is busy.
TEST(Segment, an_idle_slot_goes_back_to_the_acceptor_that_held_it_last) {
    seg = make_segment(3, 8);
    uint32_t a = 99, b = 99, again = 99, other = 99;
    CHECK(seg->lease_or_enqueue(0, 0, 1, true, 0, a) == Segment::Grant::Leased);
    CHECK(seg->lease_or_enqueue(0, 1, 2, true, 0, b) == Segment::Grant::Leased);
    CHECK_EQUAL(-1, seg->release(a));
    CHECK_EQUAL(-1, seg->release(b));
    for (int round = 0; round < 3; ++round) {
        CHECK(seg->lease_or_enqueue(0, 1, 3, true, 0, again) == Segment::Grant::Leased);
        CHECK_EQUAL(b, again);  // not the lowest idle slot: acceptor 1's own
        CHECK_EQUAL(-1, seg->release(again));
    }
    CHECK(seg->lease_or_enqueue(0, 1, 4, true, 0, again) == Segment::Grant::Leased);
    CHECK(seg->lease_or_enqueue(0, 1, 5, true, 0, other) == Segment::Grant::Leased);
    CHECK(other != b);  // its own slot is busy: another idle one
    CHECK_EQUAL(1, seg->slot(other).last_owner.load());
}

TEST(Segment, high_priority_is_served_before_low) {
    seg = make_segment(1, 8);
    uint32_t s = 0, unused = 0;
    CHECK(seg->lease_or_enqueue(0, 0, 1, true, 0, s) == Segment::Grant::Leased);
    CHECK(seg->lease_or_enqueue(0, 1, 10, false, 0, unused) == Segment::Grant::Queued);  // low first
    CHECK(seg->lease_or_enqueue(0, 0, 20, true, 0, unused) == Segment::Grant::Queued);   // then high
    uint64_t conn = 0;
    CHECK_EQUAL(0, seg->release(s));  // goes to acceptor 0, conn 20 (high)
    CHECK(seg->owned_by(s, 0, conn));
    CHECK_EQUAL(20u, conn);
    CHECK_EQUAL(1, seg->release(s));  // then acceptor 1, conn 10 (low)
    CHECK(seg->owned_by(s, 1, conn));
    CHECK_EQUAL(10u, conn);
    CHECK_EQUAL(-1, seg->release(s));
    CHECK_EQUAL(uint32_t(SlotState::Idle), seg->slot(s).state.load());
}

TEST(Segment, queue_is_bounded) {
    seg = make_segment(1, 2);
    uint32_t s = 0;
    CHECK(seg->lease_or_enqueue(0, 0, 1, true, 0, s) == Segment::Grant::Leased);
    CHECK(seg->lease_or_enqueue(0, 0, 2, true, 0, s) == Segment::Grant::Queued);
    CHECK(seg->lease_or_enqueue(0, 0, 3, true, 0, s) == Segment::Grant::Queued);
    CHECK(seg->lease_or_enqueue(0, 0, 4, true, 0, s) == Segment::Grant::QueueFull);
    CHECK(seg->lease_or_enqueue(0, 0, 5, false, 0, s) == Segment::Grant::Queued);  // low has its own ring
}

TEST(Segment, queue_wraps_around_in_order) {
    seg = make_segment(1, 3);
    uint32_t s = 0, unused = 0;
    CHECK(seg->lease_or_enqueue(0, 0, 1, true, 0, s) == Segment::Grant::Leased);
    uint64_t next = 100, expect = 100, conn = 0;
    for (int round = 0; round < 10; ++round) {
        while (seg->lease_or_enqueue(0, 0, next, true, 0, unused) == Segment::Grant::Queued) ++next;
        CHECK_EQUAL(0, seg->release(s));
        CHECK(seg->owned_by(s, 0, conn));
        CHECK_EQUAL(expect, conn);
        ++expect;
    }
}

TEST(Segment, retired_slot_goes_to_the_master_not_to_a_waiter) {
    seg = make_segment(1, 4);
    uint32_t s = 0, unused = 0;
    CHECK(seg->lease_or_enqueue(0, 0, 1, true, 0, s) == Segment::Grant::Leased);
    CHECK(seg->lease_or_enqueue(0, 1, 2, true, 0, unused) == Segment::Grant::Queued);
    seg->slot(s).retire = 1;
    CHECK_EQUAL(-2, seg->release(s));
    CHECK_EQUAL(uint32_t(SlotState::Reaping), seg->slot(s).state.load());
    seg->slot(s).retire = 0;
    CHECK_EQUAL(1, seg->release(s));  // the new worker goes to the waiter
}

TEST(Segment, worker_death_while_leased_tells_the_owner) {
    seg = make_segment(2, 4);
    uint32_t s = 0;
    CHECK(seg->lease_or_enqueue(0, 1, 7, true, 0, s) == Segment::Grant::Leased);
    CHECK_EQUAL(1, seg->worker_died(s));
    CHECK_EQUAL(uint32_t(SlotState::Dead), seg->slot(s).state.load());
    CHECK_EQUAL(-1, seg->worker_died(1 - s));  // an idle one goes straight to the master
    CHECK_EQUAL(uint32_t(SlotState::Reaping), seg->slot(1 - s).state.load());
}

TEST(Segment, slot_whose_worker_died_after_answering_goes_to_the_master_not_to_a_waiter) {
    seg = make_segment(1, 4);
    uint32_t s = 0, unused = 0;
    CHECK(seg->lease_or_enqueue(0, 0, 1, true, 0, s) == Segment::Grant::Leased);
    CHECK(seg->lease_or_enqueue(0, 1, 2, true, 0, unused) == Segment::Grant::Queued);
    CHECK_EQUAL(0, seg->worker_died(s));  // the answer is in; the owner has not given the slot back yet
    CHECK_EQUAL(-2, seg->release(s));
    CHECK_EQUAL(uint32_t(SlotState::Reaping), seg->slot(s).state.load());
    CHECK_EQUAL(1, seg->release(s));  // the replacement goes to the waiter
}

TEST(Segment, a_lock_whose_holder_died_is_taken_over) {
    seg = make_segment(1, 4);
    pid_t pid = fork();
    if (pid == 0) {
        seg->module(0).lock.lock();
        _exit(0);  // dies holding the lock
    }
    int status = 0;
    waitpid(pid, &status, 0);
    uint32_t s = 0;
    CHECK(seg->lease_or_enqueue(0, 0, 1, true, 0, s) == Segment::Grant::Leased);
    CHECK_EQUAL(-1, seg->release(s));
}

TEST(Segment, latency_buckets_are_monotonic_and_bound_the_value) {
    for (uint64_t us : {0ull, 1ull, 3ull, 4ull, 5ull, 100ull, 1000ull, 123456ull, 10000000ull}) {
        int b = bertd::latency_bucket(us);
        CHECK(bertd::latency_bucket_upper(b) >= us);
        if (b > 0) CHECK(bertd::latency_bucket_upper(b - 1) < us);
    }
    bertd::Histogram h{};
    for (int i = 0; i < 99; ++i) h.record(10);
    h.record(5000);
    CHECK(h.percentile(50) >= 10 && h.percentile(50) < 12);
    CHECK(h.percentile(99.9) >= 5000);
}

TEST(Segment, a_failing_modules_reason_is_read_as_the_master_wrote_it_and_cleared) {
    seg = make_segment(1, 4);
    STRCMP_EQUAL("", seg->module_failure(0).c_str());
    seg->set_module_failure(0, "its workers exit within a second of starting (exited with status 127)");
    STRCMP_EQUAL("its workers exit within a second of starting (exited with status 127)",
                 seg->module_failure(0).c_str());
    seg->set_module_failure(0, std::string(5000, 'x'));  // cut to fit, never past the record
    CHECK_EQUAL(sizeof(bertd::FailureNote::text) - 1, seg->module_failure(0).size());
    seg->set_module_failure(0, "");
    STRCMP_EQUAL("", seg->module_failure(0).c_str());
}

TEST(Segment, a_slot_stays_with_its_acceptor_for_a_waiter_queued_just_after_the_oldest) {
    seg = make_segment(1, 8);
    uint32_t s = 0, unused = 0;
    uint64_t conn = 0;
    CHECK(seg->lease_or_enqueue(0, 0, 1, true, 0, s) == Segment::Grant::Leased);
    CHECK(seg->lease_or_enqueue(0, 1, 10, true, 1000, unused) == Segment::Grant::Queued);
    CHECK(seg->lease_or_enqueue(0, 0, 11, true, 1100, unused) == Segment::Grant::Queued);
    CHECK(seg->lease_or_enqueue(0, 1, 12, true, 1150, unused) == Segment::Grant::Queued);
    CHECK_EQUAL(0, seg->release(s));  // acceptor 0 keeps it for its own 11, 100 us younger
    CHECK(seg->owned_by(s, 0, conn));
    CHECK_EQUAL(11u, conn);
    CHECK_EQUAL(1, seg->release(s));  // then the oldest, and the rest in order
    CHECK(seg->owned_by(s, 1, conn));
    CHECK_EQUAL(10u, conn);
    CHECK_EQUAL(1, seg->release(s));
    CHECK(seg->owned_by(s, 1, conn));
    CHECK_EQUAL(12u, conn);
    CHECK_EQUAL(-1, seg->release(s));
}

TEST(Segment, the_oldest_waiter_is_never_passed_by_one_much_younger_or_of_lower_priority) {
    seg = make_segment(1, 8);
    uint32_t s = 0, unused = 0;
    uint64_t conn = 0;
    CHECK(seg->lease_or_enqueue(0, 0, 1, true, 0, s) == Segment::Grant::Leased);
    CHECK(seg->lease_or_enqueue(0, 1, 10, true, 1000, unused) == Segment::Grant::Queued);
    CHECK(seg->lease_or_enqueue(0, 0, 11, true, 1300, unused) == Segment::Grant::Queued);  // 300 us later
    CHECK(seg->lease_or_enqueue(0, 0, 12, false, 1000, unused) == Segment::Grant::Queued);  // low
    CHECK_EQUAL(1, seg->release(s));
    CHECK(seg->owned_by(s, 1, conn));
    CHECK_EQUAL(10u, conn);
    // Acceptor 1 gives it back: acceptor 0's high one, then its low one.
    CHECK_EQUAL(0, seg->release(s));
    CHECK(seg->owned_by(s, 0, conn));
    CHECK_EQUAL(11u, conn);
    CHECK_EQUAL(0, seg->release(s));
    CHECK(seg->owned_by(s, 0, conn));
    CHECK_EQUAL(12u, conn);
}

// What an acceptor asks before it gives a slot back while requests of its own may be unread
// (Leases::finish): would release() pass the slot to another acceptor? It changes nothing.
TEST(Segment, whether_the_next_waiter_is_another_acceptors_is_told_without_passing_the_slot) {
    seg = make_segment(1, 8);
    uint32_t s = 0, unused = 0;
    uint64_t conn = 0;
    CHECK(seg->lease_or_enqueue(0, 0, 1, true, 0, s) == Segment::Grant::Leased);
    CHECK_FALSE(seg->next_waiter_elsewhere(s));  // nobody waits
    CHECK(seg->lease_or_enqueue(0, 1, 10, false, 1000, unused) == Segment::Grant::Queued);
    CHECK(seg->next_waiter_elsewhere(s));  // acceptor 1's low one
    CHECK(seg->owned_by(s, 0, conn));      // still acceptor 0's, for request 1
    CHECK_EQUAL(1u, conn);
    CHECK_EQUAL(1u, seg->queue_length(0, false));
    CHECK(seg->lease_or_enqueue(0, 0, 11, false, 1100, unused) == Segment::Grant::Queued);
    CHECK_FALSE(seg->next_waiter_elsewhere(s));  // its own, 100 us younger, would keep it
    CHECK(seg->lease_or_enqueue(0, 1, 12, true, 1200, unused) == Segment::Grant::Queued);
    CHECK(seg->next_waiter_elsewhere(s));  // a high one of acceptor 1 comes before any low
    CHECK_EQUAL(1, seg->release(s));
    CHECK(seg->owned_by(s, 1, conn));
    CHECK_EQUAL(12u, conn);
    CHECK_FALSE(seg->next_waiter_elsewhere(s));  // acceptor 1 holds it now: its own 10 is oldest
}
