// test_cache.cc: a module's answer cache (shm/cache.h), in a region of its own and in a
// real segment: what it finds, when entries expire, what the wrapping log pushes out and
// what it keeps.
#include <CppUTest/TestHarness.h>

#include <unistd.h>

#include <string>
#include <vector>

#include "shm/cache.h"
#include "shm/segment.h"

using bertd::AnswerCache;

namespace {
struct Region {
    explicit Region(size_t size) : bytes(AnswerCache::region_size(size) + 64) {
        base = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(bytes.data()) + 63) & ~uintptr_t(63));
        AnswerCache::init(base, size);
    }
    std::vector<char> bytes;
    char* base;
};

std::string key(int i) { return "request " + std::to_string(i); }
}  // namespace

TEST_GROUP(AnswerCache){};

TEST(AnswerCache, a_stored_answer_is_found_by_its_request_bytes_and_only_by_them) {
    Region r(64 << 10);
    AnswerCache c(r.base, 0);
    c.store("{call,m,f,[1]}", "answer one", 0);
    std::string v;
    CHECK(c.find("{call,m,f,[1]}", 1, v));
    STRCMP_EQUAL("answer one", v.c_str());
    CHECK_FALSE(c.find("{call,m,f,[2]}", 1, v));
    CHECK_EQUAL(1u, c.header().hits.load());
    CHECK_EQUAL(1u, c.header().misses.load());
}

TEST(AnswerCache, an_answer_is_not_served_once_it_expired) {
    Region r(64 << 10);
    AnswerCache c(r.base, 0);
    c.store("k", "v", 1000);
    std::string v;
    CHECK(c.find("k", 999, v));
    CHECK_FALSE(c.find("k", 1000, v));
    CHECK_FALSE(c.find("k", 1, v));  // forgotten, not just hidden
}

TEST(AnswerCache, storing_the_same_request_again_replaces_its_answer) {
    Region r(64 << 10);
    AnswerCache c(r.base, 0);
    c.store("k", "old", 0);
    c.store("k", "new", 0);
    std::string v;
    CHECK(c.find("k", 1, v));
    STRCMP_EQUAL("new", v.c_str());
}

TEST(AnswerCache, the_oldest_answers_go_when_the_log_wraps_and_a_used_one_stays) {
    Region r(16 << 10);
    AnswerCache c(r.base, 0);
    std::string value(200, 'x'), v;
    c.store("kept", value, 0);
    for (int i = 0; i < 1000; ++i) {
        c.store(key(i), value, 0);
        if (i % 10 == 0) CHECK(c.find("kept", 1, v));  // used all along: copied forward
    }
    CHECK(c.find("kept", 1, v));
    CHECK(c.find(key(999), 1, v));
    CHECK_FALSE(c.find(key(0), 1, v));
    CHECK(c.header().head > 16u << 10);
}

TEST(AnswerCache, an_answer_over_a_quarter_of_the_cache_is_not_stored) {
    Region r(16 << 10);
    AnswerCache c(r.base, 0);
    c.store("small", "v", 0);
    c.store("big", std::string(5000, 'y'), 0);
    std::string v;
    CHECK_FALSE(c.find("big", 1, v));
    CHECK(c.find("small", 1, v));
    CHECK_EQUAL(1u, c.header().refused.load());
}

TEST(AnswerCache, a_segment_gives_each_module_the_cache_it_asked_for) {
    std::string name = "/bertd-unit-cache." + std::to_string(getpid());
    auto seg = bertd::Segment::create(name, 3, 1, 1, 4, {1 << 20, 0, 64 << 10});
    CHECK(seg->cache(0) != nullptr);
    CHECK(seg->cache(1) == nullptr);
    CHECK(seg->cache(2) != nullptr);
    seg->cache(0)->store("a", "zero", 0);
    seg->cache(2)->store("a", "two", 0);
    std::string v;
    CHECK(seg->cache(0)->find("a", 1, v));
    STRCMP_EQUAL("zero", v.c_str());
    CHECK(seg->cache(2)->find("a", 1, v));
    STRCMP_EQUAL("two", v.c_str());
}
