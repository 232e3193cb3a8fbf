// test_children.cc: the master's child table against real forked processes: one
// spawn, one reap, asking a child to go once, respawn times, and forgetting a
// finished generation.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

// Before CppUTest, whose operator-new macros <functional> does not survive.
#include "core/children.h"
#include "io/clock.h"

#include <CppUTest/TestHarness.h>

using bertd::Child;
using bertd::ChildKind;
using bertd::Children;

namespace {
// Reaps until `c` is gone (or 5 s pass); returns the status it exited with.
int reap_until_gone(Children& t, Child& c, pid_t& pid_seen) {
    int got = -1;
    int64_t deadline = bertd::monotonic_us() + 5'000'000;
    while (c.pid && bertd::monotonic_us() < deadline) {
        t.reap([&](Child& who, pid_t pid, int status) {
            if (&who == &c) {
                got = status;
                pid_seen = pid;
            }
        });
        usleep(2000);
    }
    return got;
}
}  // namespace

TEST_GROUP(Children){};

TEST(Children, a_spawned_child_runs_its_body_and_is_reaped_with_its_status) {
    Children t;
    Child& c = t.add(ChildKind::Worker, 1, 0, true);
    CHECK(t.spawn(c, [] { _exit(7); }));
    pid_t pid = c.pid;
    CHECK(pid > 0);
    CHECK(t.any_running());
    pid_t seen = 0;
    int status = reap_until_gone(t, c, seen);
    CHECK_EQUAL(0, c.pid);
    CHECK_EQUAL(pid, seen);
    CHECK(WIFEXITED(status));
    CHECK_EQUAL(7, WEXITSTATUS(status));
    CHECK(!t.any_running());
}

TEST(Children, a_child_is_asked_to_go_once_and_dies_of_it) {
    Children t;
    Child& c = t.add(ChildKind::Acceptor, 1, 0, true);
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigprocmask(SIG_BLOCK, &block, &old);  // as in the master: the child unblocks when it is ready
    CHECK(t.spawn(c, [] {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, nullptr);
        for (;;) pause();
    }));
    sigprocmask(SIG_SETMASK, &old, nullptr);
    CHECK(Children::ask_to_go(c, 42));
    CHECK_EQUAL(42, c.term_sent_us);
    CHECK(!Children::ask_to_go(c, 43));  // asked already
    CHECK_EQUAL(42, c.term_sent_us);
    pid_t seen = 0;
    int status = reap_until_gone(t, c, seen);
    CHECK(WIFSIGNALED(status));
    CHECK_EQUAL(SIGTERM, WTERMSIG(status));
}

TEST(Children, a_spawn_resets_the_term_mark) {
    Children t;
    Child& c = t.add(ChildKind::Worker, 1, 0, true);
    c.term_sent_us = 5;
    CHECK(t.spawn(c, [] { _exit(0); }));
    CHECK_EQUAL(0, c.term_sent_us);
    pid_t seen;
    reap_until_gone(t, c, seen);
}

TEST(Children, only_respawns_still_ahead_set_the_next_wake_up) {
    Children t;
    Child& a = t.add(ChildKind::Acceptor, 1, 0, true);
    Child& b = t.add(ChildKind::Worker, 1, 0, true);
    Child& gone = t.add(ChildKind::Worker, 1, 1, false);
    a.backoff.retry_at_us = 100;      // due already: tended this turn, no wake-up needed
    b.backoff.retry_at_us = 5000;     // ahead
    gone.backoff.retry_at_us = 2000;  // not respawned at all
    CHECK_EQUAL(5000, t.next_respawn(1000, 1'000'000));
    CHECK_EQUAL(3000, t.next_respawn(1000, 3000));
}

TEST(Children, a_finished_generation_is_forgotten_and_the_erlang_children_stay) {
    Children t;
    Child& link = t.add(ChildKind::Link, 0, 0, true);
    t.add(ChildKind::Acceptor, 1, 0, true);
    t.add(ChildKind::Worker, 1, 0, true);
    Child& newer = t.add(ChildKind::Worker, 2, 0, true);
    t.forget_generation(1);
    int n = 0;
    t.for_each([&](Child& c) {
        ++n;
        CHECK(&c == &link || &c == &newer);
    });
    CHECK_EQUAL(2, n);
}

TEST(Children, quick_deaths_back_off_and_a_healthy_life_forgets_them) {
    bertd::Backoff b;
    b.failed(0, 10, 1'000'000, 5'000'000);
    CHECK_EQUAL(10, b.retry_at_us);  // the first restart is at once
    b.failed(10, 20, 1'000'000, 5'000'000);
    CHECK_EQUAL(20 + 100'000, b.retry_at_us);
    b.failed(20, 30, 1'000'000, 5'000'000);
    CHECK_EQUAL(30 + 200'000, b.retry_at_us);
    b.failed(0, 2'000'000, 1'000'000, 5'000'000);  // it lived 2 s
    CHECK_EQUAL(1, b.failures);
    CHECK_EQUAL(2'000'000, b.retry_at_us);
}
