// test_byte_queue.cc: a connection's byte queue (net/conn.h): what it holds is charged to
// its acceptor's total and discharged when it goes, and an idle queue holds no memory.
// conn.h first: it brings standard containers that CppUTest's new/delete macros would break.
#include "net/conn.h"

#include <CppUTest/TestHarness.h>

#include <string>

using bertd::ByteQueue;

TEST_GROUP(ByteQueue){};

TEST(ByteQueue, a_queue_that_never_held_a_byte_holds_no_buffer) {
    ByteQueue q;
    CHECK_TRUE(q.empty());
    LONGS_EQUAL(0, q.capacity());
    CHECK_TRUE(q.view().empty());
}

TEST(ByteQueue, a_rested_empty_queue_gives_its_buffer_back) {
    size_t total = 0;
    ByteQueue q;
    q.charge_to(&total);
    q.append(std::string_view("a request of some bytes"));
    LONGS_EQUAL(23, total);
    q.consume(23);
    LONGS_EQUAL(0, total);
    CHECK_TRUE(q.capacity() > 0);  // a busy connection keeps its buffer for the next request
    q.release();
    LONGS_EQUAL(0, q.capacity());
    q.append(std::string("again"));
    STRCMP_EQUAL("again", std::string(q.view()).c_str());
    LONGS_EQUAL(5, total);
}

TEST(ByteQueue, release_keeps_bytes_not_yet_read) {
    size_t total = 0;
    ByteQueue q;
    q.charge_to(&total);
    q.append(std::string_view("half a frame"));
    q.consume(5);
    q.release();
    STRCMP_EQUAL("a frame", std::string(q.view()).c_str());
    LONGS_EQUAL(7, total);
    q.clear();
    LONGS_EQUAL(0, total);
    LONGS_EQUAL(0, q.capacity());
}

TEST(ByteQueue, an_answer_taken_whole_is_sent_from_the_front_and_charged_until_consumed) {
    size_t total = 0;
    ByteQueue q;
    q.charge_to(&total);
    q.append(std::string("first "));
    q.append(std::string("second"));
    LONGS_EQUAL(12, total);
    q.consume(6);
    STRCMP_EQUAL("second", std::string(q.view()).c_str());
    q.compact();
    STRCMP_EQUAL("second", std::string(q.view()).c_str());
    q.consume(100);
    LONGS_EQUAL(0, total);
    CHECK_TRUE(q.empty());
}

TEST(ByteQueue, a_big_frames_room_comes_from_a_spare_and_only_from_one_when_asked) {
    bertd::SpareBuffers spares;
    ByteQueue q;
    q.append(std::string_view("head"));
    q.expect(1u << 20, &spares, true);  // no spare: no new memory for bytes that may not come
    CHECK_TRUE(q.capacity() < (1u << 20));
    std::string spare;
    spare.reserve(2u << 20);
    const char* memory = spare.data();
    spares.give(std::move(spare), 0);
    q.expect(1u << 20, &spares, true);
    CHECK_TRUE(q.capacity() >= (1u << 20));
    POINTERS_EQUAL(memory, q.view().data());
    CHECK_TRUE(q.view() == "head");
    std::string back = q.drop_all();  // a closed connection's buffer, for the spares again
    POINTERS_EQUAL(memory, back.data());
    LONGS_EQUAL(0, q.capacity());
}

// A spare's room is memory in use: it is charged from when the queue takes it, the bytes that
// fill it cost nothing more, and the charge goes with the buffer. A fresh room is not charged.
TEST(ByteQueue, a_spare_buffers_room_is_charged_until_the_buffer_goes) {
    size_t total = 0;
    bertd::SpareBuffers spares;
    ByteQueue q;
    q.charge_to(&total);
    q.append(std::string_view("head"));
    q.expect(1u << 20);  // a fresh reserve: only the bytes held are charged
    LONGS_EQUAL(4, total);
    std::string spare;
    spare.reserve(4u << 20);
    spares.give(std::move(spare), 0);
    q.expect(3u << 20, &spares, true);
    size_t cap = q.capacity();
    CHECK_TRUE(cap >= (4u << 20));
    LONGS_EQUAL(cap, total);  // the bytes held and all the room behind them
    q.append(std::string(1000, 'x'));
    char* room = q.tail(4096);
    room[0] = 'y';
    q.commit(4096);
    LONGS_EQUAL(cap, total);  // filling the room costs nothing more
    q.consume(4 + 1000 + 4096);
    LONGS_EQUAL(cap - 5100, total);  // the room not yet filled is still the queue's
    std::string back = q.drop_all();
    LONGS_EQUAL(0, total);
    CHECK_TRUE(back.capacity() >= (4u << 20));
}

TEST(ByteQueue, a_spares_room_is_uncharged_when_a_fresh_buffer_replaces_it) {
    size_t total = 0;
    bertd::SpareBuffers spares;
    ByteQueue q;
    q.charge_to(&total);
    q.append(std::string_view("head"));
    std::string spare;
    spare.reserve(256u << 10);
    spares.give(std::move(spare), 0);
    q.expect(200u << 10, &spares, true);
    CHECK_TRUE(total >= (256u << 10));
    q.append(std::string(300u << 10, 'z'));  // past the spare's room: a new buffer
    LONGS_EQUAL(4 + (300u << 10), total);
    q.clear();
    LONGS_EQUAL(0, total);
}
