// test_spare_buffers.cc: an acceptor's spare big buffers (io/spare_buffers.h): a big buffer
// given back is the one the next big reserve takes (its memory, not a fresh mapping), the
// contents survive the swap, small buffers are never kept, and what sat a second is freed.
#include "io/spare_buffers.h"

#include <CppUTest/TestHarness.h>

#include <string>

using bertd::SpareBuffers;

namespace {
constexpr size_t kMiB = 1u << 20;
constexpr int64_t kSecond = 1'000'000;

std::string big(size_t capacity) {
    std::string s;
    s.reserve(capacity);
    return s;
}
}  // namespace

TEST_GROUP(SpareBuffers){};

TEST(SpareBuffers, a_big_buffer_given_back_is_the_memory_the_next_big_reserve_gets) {
    SpareBuffers spares;
    std::string sent = big(kMiB);
    const char* memory = sent.data();
    spares.give(std::move(sent), 0);
    LONGS_EQUAL(kMiB, spares.bytes());
    std::string answer = "head";
    spares.reserve(answer, kMiB, 10);
    POINTERS_EQUAL(memory, answer.data());
    STRCMP_EQUAL("head", answer.c_str());  // what was read so far is kept
    LONGS_EQUAL(0, spares.bytes());
}

TEST(SpareBuffers, the_smallest_spare_that_fits_is_taken_and_a_big_old_buffer_becomes_a_spare) {
    SpareBuffers spares;
    std::string four = big(4 * kMiB), two = big(2 * kMiB), half = big(kMiB / 2);
    const char* two_memory = two.data();
    spares.give(std::move(four), 0);
    spares.give(std::move(two), 0);
    spares.give(std::move(half), 0);
    std::string s = big(SpareBuffers::kBig);
    s = "abc";
    spares.reserve(s, kMiB + 1, 0);
    POINTERS_EQUAL(two_memory, s.data());
    STRCMP_EQUAL("abc", s.c_str());
    CHECK_TRUE(spares.bytes() >= 4 * kMiB + kMiB / 2 + SpareBuffers::kBig);  // the old one is kept too
}

TEST(SpareBuffers, small_buffers_and_small_reserves_never_touch_the_spares) {
    SpareBuffers spares;
    spares.give(big(4096), 0);
    LONGS_EQUAL(0, spares.bytes());
    spares.give(big(kMiB), 0);
    std::string s;
    spares.reserve(s, 1000, 0);
    CHECK_TRUE(s.capacity() >= 1000);
    LONGS_EQUAL(kMiB, spares.bytes());  // the big spare stays for a big reserve
}

TEST(SpareBuffers, what_they_keep_is_bounded_in_bytes_and_count) {
    SpareBuffers spares;
    for (int i = 0; i < 64; ++i) spares.give(big(kMiB), 0);
    CHECK_TRUE(spares.bytes() <= SpareBuffers::kMaxBytes);
    CHECK_TRUE(spares.bytes() <= SpareBuffers::kMaxCount * kMiB);
    spares.give(big(2 * SpareBuffers::kMaxBytes), 0);  // never one over the whole bound
    CHECK_TRUE(spares.bytes() <= SpareBuffers::kMaxBytes);
}

TEST(SpareBuffers, a_spare_unused_for_a_second_is_freed) {
    SpareBuffers spares;
    spares.give(big(kMiB), 0);
    spares.give(big(kMiB), kSecond / 2);
    spares.sweep(kSecond - 1);
    LONGS_EQUAL(2 * kMiB, spares.bytes());
    spares.sweep(kSecond);
    LONGS_EQUAL(kMiB, spares.bytes());
    spares.sweep(2 * kSecond);
    LONGS_EQUAL(0, spares.bytes());
}

TEST(SpareBuffers, reserve_says_whether_a_spare_was_taken_and_clear_frees_them_all) {
    SpareBuffers spares;
    std::string s;
    CHECK_FALSE(spares.reserve(s, kMiB, 0));  // none to take: a fresh reserve
    CHECK_TRUE(s.capacity() >= kMiB);
    spares.give(big(2 * kMiB), 0);
    spares.give(big(2 * kMiB), 0);
    std::string t;
    CHECK_TRUE(spares.reserve(t, kMiB, 0));
    LONGS_EQUAL(2 * kMiB, spares.bytes());
    spares.clear();
    LONGS_EQUAL(0, spares.bytes());
    std::string u;
    CHECK_FALSE(spares.reserve(u, kMiB, 0, true));  // only from a spare, and none is left
    CHECK_TRUE(u.capacity() < kMiB);
}
