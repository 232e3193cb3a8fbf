// test_request_bytes.cc: what the request path does to a request's bytes before they go on:
// float_format: ernie (net/floats.h) and compressed requests made plain (bert/inflate.h).
#include <CppUTest/TestHarness.h>

#include <zlib.h>

#include <string>

#include "bert/codec.h"
#include "bert/frame.h"
#include "bert/inflate.h"
#include "net/floats.h"

using bert::Term;

namespace {
std::string frame_of(const Term& t, bert::FloatForm form = bert::FloatForm::New) {
    std::string out;
    bert::append_frame(out, bert::encode(t, bert::EncodeOptions{form}));
    return out;
}

Term reply(double x) { return Term::tuple({Term::atom("reply"), Term::list({Term(x), Term::binary("F")})}); }
}  // namespace

TEST_GROUP(RequestBytes){};

TEST(RequestBytes, ernie_floats_rewrites_every_frame_and_keeps_the_values) {
    Term info = Term::tuple({Term::atom("info"), Term::atom("cache"), Term::nil()});
    std::string frames = frame_of(info) + frame_of(reply(2.5));
    bertd::ernie_floats_frames(frames);
    STRCMP_EQUAL((frame_of(info) + frame_of(reply(2.5), bert::FloatForm::Ernie)).c_str(), frames.c_str());
    CHECK(frames.find(char(70)) == frames.find('F'));  // the only 70 left is the letter in the binary
}

TEST(RequestBytes, ernie_floats_leaves_what_holds_no_new_float_or_does_not_read) {
    std::string plain = frame_of(Term::tuple({Term::atom("reply"), Term(int64_t(7))}));
    std::string same = plain;
    bertd::ernie_floats_frames(same);
    CHECK(same == plain);
    std::string out;
    // The letter F (byte 70) in a binary is no float: nothing to re-frame.
    CHECK(!bertd::ernie_floats_frame(bert::encode(Term::binary("FFF")), out));
    CHECK(!bertd::ernie_floats_frame(std::string("\x83\x46\x01", 3), out));  // a cut NEW_FLOAT
    CHECK(out.empty());
}

TEST(RequestBytes, a_compressed_payload_inflates_to_the_plain_one_within_the_limits) {
    std::string plain = bert::encode(Term::tuple({Term::atom("call"), Term::atom("m"), Term::atom("f"),
                                                  Term::list({Term::binary(std::string(1000, 'a'))})}));
    std::string body = plain.substr(1);
    uLongf len = compressBound(uLong(body.size()));
    std::string z(len, '\0');
    compress(reinterpret_cast<Bytef*>(z.data()), &len, reinterpret_cast<const Bytef*>(body.data()), uLong(body.size()));
    std::string payload = "\x83\x50";
    for (int i = 3; i >= 0; --i) payload.push_back(char(body.size() >> (8 * i)));
    payload.append(z.data(), len);
    CHECK(bert::is_compressed(payload));
    CHECK(!bert::is_compressed(plain));
    std::string out;
    CHECK(!bert::inflate_payload(payload, out));
    CHECK(out == plain);
    bert::Limits tight;
    tight.max_inflated = 100;
    out.clear();
    bert::DecodeError e = bert::inflate_payload(payload, out, tight);
    CHECK(bool(e));
    CHECK(e.message.find("max_inflated") != std::string::npos);
    CHECK(out.empty());
}
