// test_codec.cc: the BERT codec against bytes written by OTP 25's term_to_binary/1,
// malformed input that must come back as errors, limits, and peek(). Expected
// bytes were taken from erl (OTP 25); the differential test in tests/diff/
// checks many more against a live VM.
#include <CppUTest/TestHarness.h>
#include <pthread.h>
#include <zlib.h>

#include <cmath>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <string>
#include <vector>

#include "bert/codec.h"
#include "bert/term.h"
#include "bytes.h"

using bert::Term;

namespace {

std::string hex(const std::string& s) {
    static const char* d = "0123456789abcdef";
    std::string out;
    for (unsigned char c : s) {
        out += d[c >> 4];
        out += d[c & 15];
        out += ' ';
    }
    return out;
}

uint32_t be32(const std::string& s, size_t at) {
    return (uint32_t(uint8_t(s[at])) << 24) | (uint32_t(uint8_t(s[at + 1])) << 16) |
           (uint32_t(uint8_t(s[at + 2])) << 8) | uint8_t(s[at + 3]);
}

std::string be32s(uint32_t v) {
    return B({int(v >> 24) & 255, int(v >> 16) & 255, int(v >> 8) & 255, int(v) & 255});
}

// Encodes `t`, checks the bytes, decodes them back and checks the term.
void both_ways(const Term& t, const std::string& bytes) {
    std::string enc = bert::encode(t);
    CHECK_EQUAL_TEXT(hex(bytes), hex(enc), "encoding");
    CHECK_EQUAL(enc.size(), bert::encoded_size(t));
    Term back;
    bert::DecodeError e = bert::decode(bytes, back);
    CHECK_TEXT(!e, e.message.c_str());
    CHECK_TEXT(back == t, hex(bytes).c_str());
}

// Decodes `bytes`, expecting `t`, and checks that it re-encodes as `reencoded`.
void decodes_to(const std::string& bytes, const Term& t, const std::string& reencoded) {
    Term back;
    bert::DecodeError e = bert::decode(bytes, back);
    CHECK_TEXT(!e, (e.message + " in " + hex(bytes)).c_str());
    CHECK_TEXT(back == t, hex(bytes).c_str());
    CHECK_EQUAL_TEXT(hex(reencoded), hex(bert::encode(back)), "re-encoding");
}

std::string decode_error(const std::string& bytes, const bert::Limits& limits = {}) {
    Term t = Term::atom("untouched");
    bert::DecodeError e = bert::decode(bytes, t, limits);
    if (e) CHECK_TEXT(t.is_atom("untouched"), "a failed decode left its output changed");
    return e.message;
}

Term big(bool negative, std::string magnitude) { return Term(bert::BigInt{negative, std::move(magnitude)}); }

std::string compress_term(const std::string& inner) {
    uLongf n = compressBound(inner.size());
    std::string z(n, '\0');
    compress2(reinterpret_cast<Bytef*>(z.data()), &n, reinterpret_cast<const Bytef*>(inner.data()),
              inner.size(), 6);
    z.resize(n);
    return B({131, 80}) + be32s(static_cast<uint32_t>(inner.size())) + z;
}

std::string nested_tuple_bytes(size_t depth) {
    std::string s(1, char(131));
    for (size_t i = 0; i < depth; ++i) s += B({104, 1});
    return s + B({106});
}

// A mix of every kind of term, for the truncation and size tests.
std::vector<Term> sample_terms() {
    bert::Map m;
    m.pairs = {{Term::atom("k"), Term(1.5)}, {Term(2), Term::binary("v")}};
    return {Term(0),
            Term(255),
            Term(-70000),
            Term(INT64_MIN),
            big(false, std::string(20, '\x7f')),
            Term(3.25),
            Term::atom("atom"),
            Term::atom("\xce\xb1\xce\xb2"),
            Term::binary("bin\0ary"),
            Term::tuple({Term(1), Term::atom("x")}),
            Term::string("str"),
            Term::list({Term(1000), Term::nil()}),
            Term(bert::List{{Term(1), Term::atom("tail")}, true}),
            Term(m),
            Term(bert::Pid{"a@b", 1, 2, 3}),
            Term(bert::Ref{"a@b", {1, 2, 3}, 4}),
            Term(bert::Port{"a@b", 5, 6}),
            Term(bert::Port{"a@b", uint64_t(1) << 40, 6}),
            Term::tuple({Term::list({Term::tuple({Term::atom("deep"), Term(bert::Map{})})})})};
}

}  // namespace

TEST_GROUP(CodecIntegers){};

TEST(CodecIntegers, small_integer_covers_0_to_255) {
    both_ways(Term(0), B({131, 97, 0}));
    both_ways(Term(255), B({131, 97, 255}));
}

TEST(CodecIntegers, integer_ext_covers_int32_outside_0_to_255) {
    both_ways(Term(256), B({131, 98, 0, 0, 1, 0}));
    both_ways(Term(-1), B({131, 98, 255, 255, 255, 255}));
    both_ways(Term(INT32_MAX), B({131, 98, 127, 255, 255, 255}));
    both_ways(Term(INT32_MIN), B({131, 98, 128, 0, 0, 0}));
    // ei's encoder stops at 28 bits here; term_to_binary/1 does not.
    both_ways(Term(1 << 27), B({131, 98, 8, 0, 0, 0}));
}

TEST(CodecIntegers, small_big_beyond_int32) {
    both_ways(Term(int64_t{INT32_MAX} + 1), B({131, 110, 4, 0, 0, 0, 0, 128}));
    both_ways(Term(int64_t{INT32_MIN} - 1), B({131, 110, 4, 1, 1, 0, 0, 128}));
    both_ways(Term(INT64_MAX), B({131, 110, 8, 0, 255, 255, 255, 255, 255, 255, 255, 127}));
    both_ways(Term(INT64_MIN), B({131, 110, 8, 1, 0, 0, 0, 0, 0, 0, 0, 128}));
    both_ways(big(false, std::string("\0\0\0\0\0\0\0\0\1", 9)),
              B({131, 110, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}));
    both_ways(big(true, std::string("\0\0\0\0\0\0\0\0\1", 9)),
              B({131, 110, 9, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1}));
    both_ways(big(false, std::string(8, '\xff')),
              B({131, 110, 8, 0, 255, 255, 255, 255, 255, 255, 255, 255}));
}

TEST(CodecIntegers, large_big_above_255_magnitude_bytes) {
    // [{1 bsl 2400}] from erl: LARGE_BIG with 301 bytes.
    std::string mag(300, '\0');
    mag.push_back('\1');
    std::string bytes = B({131, 108, 0, 0, 0, 1, 104, 1, 111, 0, 0, 1, 45, 0}) + mag + B({106});
    both_ways(Term::list({Term::tuple({big(false, mag)})}), bytes);
    std::string neg = B({131, 111, 0, 0, 1, 0, 1}) + std::string(256, '\x5a');
    both_ways(big(true, std::string(256, '\x5a')), neg);
    both_ways(big(false, std::string(255, '\x01')), B({131, 110, 255, 0}) + std::string(255, '\x01'));
}

TEST(CodecIntegers, bignums_that_fit_int64_decode_as_int) {
    decodes_to(B({131, 110, 2, 0, 1, 0}), Term(1), B({131, 97, 1}));
    decodes_to(B({131, 110, 2, 7, 1, 0}), Term(-1), B({131, 98, 255, 255, 255, 255}));  // any sign byte
    decodes_to(B({131, 110, 0, 0}), Term(0), B({131, 97, 0}));
    decodes_to(B({131, 110, 0, 1}), Term(0), B({131, 97, 0}));
    decodes_to(B({131, 111, 0, 0, 0, 1, 0, 5}), Term(5), B({131, 97, 5}));
    decodes_to(B({131, 110, 8, 1, 0, 0, 0, 0, 0, 0, 0, 128}), Term(INT64_MIN),
               B({131, 110, 8, 1, 0, 0, 0, 0, 0, 0, 0, 128}));
}

TEST(CodecIntegers, hand_built_bignum_is_normalised_on_encode) {
    Term t;
    t.value() = bert::BigInt{false, std::string("\x05\0\0", 3)};
    CHECK_EQUAL(hex(B({131, 97, 5})), hex(bert::encode(t)));
    CHECK_EQUAL(2u, bert::encoded_size(t) - 1);
}

TEST_GROUP(CodecFloats){};

TEST(CodecFloats, new_float_both_ways) {
    both_ways(Term(1.5), B({131, 70, 63, 248, 0, 0, 0, 0, 0, 0}));
    both_ways(Term(-0.0), B({131, 70, 128, 0, 0, 0, 0, 0, 0, 0}));
    CHECK(std::signbit(std::get<double>([] {
        Term t;
        bert::decode(B({131, 70, 128, 0, 0, 0, 0, 0, 0, 0}), t);
        return t.value();
    }())));
}

TEST(CodecFloats, old_float_text_decodes_and_reencodes_as_new_float) {
    std::string text = "1.50000000000000000000e+00";
    text.resize(31, '\0');
    decodes_to(B({131, 99}) + text, Term(1.5), B({131, 70, 63, 248, 0, 0, 0, 0, 0, 0}));
    std::string comma = "-2,5e3";
    comma.resize(31, '\0');
    decodes_to(B({131, 99}) + comma, Term(-2500.0), bert::encode(Term(-2500.0)));
    // 31 bytes without any NUL are read whole, never past the end.
    decodes_to(B({131, 99}) + "111111111111111111111111111.111", Term(111111111111111111111111111.111),
               bert::encode(Term(111111111111111111111111111.111)));
}

TEST(CodecFloats, bad_old_float_text_is_refused_as_erlang_does) {
    for (const char* s : {"1", " 1.5", "1.5 ", ".5", "1.", "1.5e", "inf", "nan", "1.5e400", "abc"}) {
        std::string text = s;
        text.resize(31, '\0');
        CHECK_TEXT(!decode_error(B({131, 99}) + text).empty(), s);
    }
}

TEST(CodecFloats, nan_and_infinity_are_refused) {
    CHECK(!decode_error(B({131, 70, 127, 248, 0, 0, 0, 0, 0, 0})).empty());
    CHECK(!decode_error(B({131, 70, 127, 240, 0, 0, 0, 0, 0, 0})).empty());
    CHECK(!decode_error(B({131, 70, 255, 240, 0, 0, 0, 0, 0, 0})).empty());
}

TEST_GROUP(CodecAtoms){};

TEST(CodecAtoms, latin1_atoms_go_out_as_atom_ext) {
    both_ways(Term::atom("abc"), B({131, 100, 0, 3, 'a', 'b', 'c'}));
    both_ways(Term::atom(""), B({131, 100, 0, 0}));
    both_ways(Term::atom("\xc3\xa9"), B({131, 100, 0, 1, 233}));  // 'é' as one latin-1 byte
    std::string a255(255, 'a');
    both_ways(Term::atom(a255), B({131, 100, 0, 255}) + a255);
}

TEST(CodecAtoms, other_atoms_go_out_as_utf8) {
    both_ways(Term::atom("\xce\xb1"), B({131, 119, 2, 206, 177}));
    std::string alpha100;
    for (int i = 0; i < 100; ++i) alpha100 += "\xce\xb1";
    both_ways(Term::atom(alpha100), B({131, 119, 200}) + alpha100);
    std::string alpha255;
    for (int i = 0; i < 255; ++i) alpha255 += "\xce\xb1";
    both_ways(Term::atom(alpha255), B({131, 118, 1, 254}) + alpha255);
    std::string emoji = "\xf0\x9f\x98\x80";
    both_ways(Term::atom(emoji), B({131, 119, 4}) + emoji);
}

TEST(CodecAtoms, every_atom_tag_decodes) {
    decodes_to(B({131, 115, 2, 'o', 'k'}), Term::atom("ok"), B({131, 100, 0, 2, 'o', 'k'}));
    decodes_to(B({131, 115, 1, 233}), Term::atom("\xc3\xa9"), B({131, 100, 0, 1, 233}));
    decodes_to(B({131, 118, 0, 2, 'o', 'k'}), Term::atom("ok"), B({131, 100, 0, 2, 'o', 'k'}));
    decodes_to(B({131, 119, 2, 'o', 'k'}), Term::atom("ok"), B({131, 100, 0, 2, 'o', 'k'}));
    decodes_to(B({131, 118, 0, 2, 195, 169}), Term::atom("\xc3\xa9"), B({131, 100, 0, 1, 233}));
    // Latin-1 bytes C3 A9 are two characters, not UTF-8.
    decodes_to(B({131, 100, 0, 2, 195, 169}), Term::atom("\xc3\x83\xc2\xa9"), B({131, 100, 0, 2, 195, 169}));
    decodes_to(B({131, 100, 0, 1, 0}), Term::atom(std::string(1, '\0')), B({131, 100, 0, 1, 0}));
}

TEST(CodecAtoms, invalid_utf8_atoms_are_refused) {
    CHECK(!decode_error(B({131, 118, 0, 2, 192, 128})).empty());       // overlong
    CHECK(!decode_error(B({131, 118, 0, 3, 237, 160, 128})).empty());  // surrogate
    CHECK(!decode_error(B({131, 118, 0, 1, 255})).empty());
    CHECK(!decode_error(B({131, 119, 2, 206})).empty());                     // truncated payload
    CHECK(!decode_error(B({131, 119, 1, 206})).empty());                     // cut sequence
    CHECK(!decode_error(B({131, 119, 4, 0xf4, 0x90, 0x80, 0x80})).empty());  // above U+10FFFF
}

TEST(CodecAtoms, atom_length_counts_characters) {
    std::string alpha255, alpha256;
    for (int i = 0; i < 255; ++i) alpha255 += "\xce\xb1";
    alpha256 = alpha255 + "\xce\xb1";
    Term t;
    CHECK(!bert::decode(B({131, 118, 1, 254}) + alpha255, t));  // 510 bytes, 255 characters
    CHECK(decode_error(B({131, 118, 2, 0}) + alpha256).find("max_atom_chars") != std::string::npos);
    CHECK(!decode_error(B({131, 100, 1, 0}) + std::string(256, 'a')).empty());
    bert::Limits small;
    small.max_atom_chars = 3;
    CHECK(!bert::decode(B({131, 119, 6, 206, 177, 206, 177, 206, 177}), t, small));
    CHECK(!decode_error(B({131, 100, 0, 4, 'a', 'b', 'c', 'd'}), small).empty());
    bert::Limits large;
    large.max_atom_chars = 100000;  // acts as 255
    CHECK(!decode_error(B({131, 100, 1, 0}) + std::string(256, 'a'), large).empty());
}

TEST(CodecAtoms, invalid_utf8_atom_text_is_encoded_as_latin1_bytes) {
    CHECK_EQUAL(hex(B({131, 100, 0, 2, 'a', 0xff})), hex(bert::encode(Term::atom("a\xff"))));
}

TEST_GROUP(CodecContainers){};

TEST(CodecContainers, tuples_small_and_large) {
    both_ways(Term::tuple({}), B({131, 104, 0}));
    both_ways(Term::tuple({Term(1), Term::atom("a")}), B({131, 104, 2, 97, 1, 100, 0, 1, 'a'}));
    std::vector<Term> items(256, Term(7));
    std::string bytes = B({131, 105, 0, 0, 1, 0});
    for (int i = 0; i < 256; ++i) bytes += B({97, 7});
    both_ways(Term::tuple(items), bytes);
    items.pop_back();
    bytes = B({131, 104, 255});
    for (int i = 0; i < 255; ++i) bytes += B({97, 7});
    both_ways(Term::tuple(items), bytes);
    decodes_to(B({131, 105, 0, 0, 0, 1, 97, 1}), Term::tuple({Term(1)}), B({131, 104, 1, 97, 1}));
}

TEST(CodecContainers, nil_strings_and_lists) {
    both_ways(Term::nil(), B({131, 106}));
    both_ways(Term::string("abc"), B({131, 107, 0, 3, 'a', 'b', 'c'}));
    both_ways(Term::list({Term(256)}), B({131, 108, 0, 0, 0, 1, 98, 0, 0, 1, 0, 106}));
    both_ways(Term::list({Term(-1)}), B({131, 108, 0, 0, 0, 1, 98, 255, 255, 255, 255, 106}));
    both_ways(Term::list({Term::nil()}), B({131, 108, 0, 0, 0, 1, 106, 106}));
    decodes_to(B({131, 107, 0, 0}), Term::nil(), B({131, 106}));
}

TEST(CodecContainers, string_ext_up_to_65535_elements) {
    std::string chars(65535, 'x');
    both_ways(Term::string(chars), B({131, 107, 255, 255}) + chars);
    std::string longer = B({131, 108, 0, 1, 0, 0});
    for (int i = 0; i < 65536; ++i) longer += B({97, 'x'});
    both_ways(Term::string(chars + "x"), longer + B({106}));
}

TEST(CodecContainers, improper_lists) {
    both_ways(Term(bert::List{{Term(1), Term(2)}, true}), B({131, 108, 0, 0, 0, 1, 97, 1, 97, 2}));
    both_ways(Term(bert::List{{Term(1), Term(2), Term::binary("t")}, true}),
              B({131, 108, 0, 0, 0, 2, 97, 1, 97, 2, 109, 0, 0, 0, 1, 't'}));
    // Even small ints: an improper list is never a STRING_EXT.
    CHECK(bert::encode(Term(bert::List{{Term(1), Term(2)}, true}))[1] == 108);
}

TEST(CodecContainers, list_tails_that_are_lists_join_the_list) {
    // [1 | [2]], [1 | "ab"], [|5] and [| []] as Erlang reads them.
    decodes_to(B({131, 108, 0, 0, 0, 1, 97, 1, 108, 0, 0, 0, 1, 97, 2, 106}), Term::string("\x01\x02"),
               B({131, 107, 0, 2, 1, 2}));
    decodes_to(B({131, 108, 0, 0, 0, 1, 97, 1, 107, 0, 2, 1, 2}), Term::string("\x01\x01\x02"),
               B({131, 107, 0, 3, 1, 1, 2}));
    decodes_to(B({131, 108, 0, 0, 0, 0, 97, 5}), Term(5), B({131, 97, 5}));
    decodes_to(B({131, 108, 0, 0, 0, 0, 106}), Term::nil(), B({131, 106}));
    decodes_to(B({131, 108, 0, 0, 0, 1, 97, 1, 108, 0, 0, 0, 0, 97, 9}),
               Term(bert::List{{Term(1), Term(9)}, true}), B({131, 108, 0, 0, 0, 1, 97, 1, 97, 9}));
    // A hand-built [1 | [2 | 3]] encodes as Erlang's [1, 2 | 3].
    Term t(bert::List{{Term(1), Term(bert::List{{Term(2), Term(3)}, true})}, true});
    CHECK_EQUAL(hex(B({131, 108, 0, 0, 0, 2, 97, 1, 97, 2, 97, 3})), hex(bert::encode(t)));
    CHECK_EQUAL(12u, bert::encoded_size(t));
}

TEST(CodecContainers, long_chains_of_list_tails_do_not_recurse) {
    std::string s(1, char(131));
    for (int i = 0; i < 200000; ++i) s += B({108, 0, 0, 0, 1, 97, 1});
    s += B({106});
    Term t;
    bert::DecodeError e = bert::decode(s, t);
    CHECK_TEXT(!e, e.message.c_str());
    CHECK_EQUAL(200000u, t.size());
}

TEST(CodecContainers, binaries) {
    both_ways(Term::binary(""), B({131, 109, 0, 0, 0, 0}));
    both_ways(Term::binary(std::string("a\0b", 3)), B({131, 109, 0, 0, 0, 3, 'a', 0, 'b'}));
}

TEST(CodecContainers, map_keys_in_otp25_order) {
    // #{1.5 => a, 2 => b, {1} => c, <<"k">> => d, k => e, [] => f, "s" => g}
    std::string erl = B({131, 116, 0,   0,  0, 7,   97,  2, 100, 0,   1,   98,  70,  63,  248, 0,
                         0,   0,   0,   0,  0, 100, 0,   1, 97,  100, 0,   1,   107, 100, 0,   1,
                         101, 104, 1,   97, 1, 100, 0,   1, 99,  106, 100, 0,   1,   102, 107, 0,
                         1,   115, 100, 0,  1, 103, 109, 0, 0,   0,   1,   107, 100, 0,   1,   100});
    bert::Map m;
    m.pairs = {{Term(1.5), Term::atom("a")},
               {Term(2), Term::atom("b")},
               {Term::tuple({Term(1)}), Term::atom("c")},
               {Term::binary("k"), Term::atom("d")},
               {Term::atom("k"), Term::atom("e")},
               {Term::nil(), Term::atom("f")},
               {Term::string("s"), Term::atom("g")}};
    CHECK_EQUAL(hex(erl), hex(bert::encode(Term(m))));
    Term back;
    CHECK(!bert::decode(erl, back));
    CHECK(back == Term(m));  // pair order does not matter to ==
    const auto& pairs = std::get<bert::Map>(back.value()).pairs;
    CHECK(pairs[0].first == Term(2));  // decoded in key order: integers before floats
    CHECK(pairs[1].first == Term(1.5));
}

TEST(CodecContainers, mixed_number_keys_order_integers_first_at_any_depth) {
    // #{-1 => a, 0 => c, -1.0 => b, 0.0 => d} and #{{2} => a, {1.5} => b} from erl.
    bert::Map m;
    m.pairs = {{Term(0.0), Term::atom("d")},
               {Term(-1.0), Term::atom("b")},
               {Term(0), Term::atom("c")},
               {Term(-1), Term::atom("a")}};
    both_ways(Term(m), B({131, 116, 0,  0, 0,  4,  98,  255, 255, 255, 255, 100, 0, 1, 97,  97,
                          0,   100, 0,  1, 99, 70, 191, 240, 0,   0,   0,   0,   0, 0, 100, 0,
                          1,   98,  70, 0, 0,  0,  0,   0,   0,   0,   0,   100, 0, 1, 100}));
    bert::Map n;
    n.pairs = {{Term::tuple({Term(1.5)}), Term::atom("b")}, {Term::tuple({Term(2)}), Term::atom("a")}};
    both_ways(Term(n), B({131, 116, 0,  0,   0, 2, 104, 1, 97, 2, 100, 0, 1, 97, 104,
                          1,   70,  63, 248, 0, 0, 0,   0, 0,  0, 100, 0, 1, 98}));
}

TEST(CodecContainers, duplicate_map_keys_are_refused) {
    CHECK(!decode_error(B({131, 116, 0, 0, 0, 2, 97, 1, 97, 1, 97, 1, 97, 2})).empty());
    // 0.0 and -0.0 are the same key in OTP 25.
    CHECK(!decode_error(B({131, 116, 0, 0,  0,   2, 70, 0, 0, 0, 0, 0, 0,  0,
                           0,   97,  1, 70, 128, 0, 0,  0, 0, 0, 0, 0, 97, 2}))
               .empty());
    decodes_to(B({131, 116, 0, 0, 0, 2, 97, 2, 97, 1, 97, 1, 97, 2}),
               Term(bert::Map{{{Term(1), Term(2)}, {Term(2), Term(1)}}}),
               B({131, 116, 0, 0, 0, 2, 97, 1, 97, 2, 97, 2, 97, 1}));
}

TEST(CodecContainers, empty_map) { both_ways(Term(bert::Map{}), B({131, 116, 0, 0, 0, 0})); }

TEST_GROUP(CodecIdentifiers){};

TEST(CodecIdentifiers, pids_go_out_as_new_pid) {
    both_ways(Term(bert::Pid{"a@b", 1, 2, 3}),
              B({131, 88, 100, 0, 3, 'a', '@', 'b', 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3}));
    both_ways(
        Term(bert::Pid{"a@b", 0xffffffff, 0xffffffff, 0xffffffff}),
        B({131, 88, 100, 0, 3, 'a', '@', 'b', 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255}));
    // The node is an atom like any other: latin-1 as ATOM_EXT, UTF-8 otherwise.
    both_ways(Term(bert::Pid{"\xce\xb1@b", 1, 2, 3}),
              B({131, 88, 119, 4, 206, 177, '@', 'b', 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3}));
}

TEST(CodecIdentifiers, old_pid_ext_decodes) {
    decodes_to(B({131, 103, 100, 0, 3, 'a', '@', 'b', 0, 0, 0, 1, 0, 0, 0, 2, 3}),
               Term(bert::Pid{"a@b", 1, 2, 3}),
               B({131, 88, 100, 0, 3, 'a', '@', 'b', 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3}));
    decodes_to(B({131, 88, 115, 3, 'a', '@', 'b', 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3}),
               Term(bert::Pid{"a@b", 1, 2, 3}),
               B({131, 88, 100, 0, 3, 'a', '@', 'b', 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3}));
    decodes_to(B({131, 88, 100, 0, 3, 'a', 233, 'b', 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3}),
               Term(bert::Pid{"a\xc3\xa9"
                              "b",
                              1, 2, 3}),
               B({131, 88, 100, 0, 3, 'a', 233, 'b', 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3}));
    CHECK(!decode_error(B({131, 103, 100, 0, 3, 'a', '@', 'b', 0, 0, 0, 1, 0, 0, 0, 2, 4})).empty());
    CHECK(
        !decode_error(B({131, 88, 97, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3})).empty());  // node not an atom
}

TEST(CodecIdentifiers, refs_go_out_as_newer_reference) {
    both_ways(Term(bert::Ref{"a@b", {1, 2, 3}, 9}),
              B({131, 90, 0, 3, 100, 0, 3, 'a', '@', 'b', 0, 0, 0, 9, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3}));
    both_ways(Term(bert::Ref{"a@b", {1, 2, 3, 4, 5}, 9}),
              B({131, 90, 0, 5, 100, 0, 3, 'a', '@', 'b', 0, 0, 0, 9, 0, 0, 0,
                 1,   0,  0, 0, 2,   0, 0, 0,   3,   0,   0, 0, 4, 0, 0, 0, 5}));
    CHECK(!decode_error(B({131, 90, 0, 0, 100, 0, 3, 'a', '@', 'b', 0, 0, 0, 9})).empty());  // no ids
    CHECK(!decode_error(B({131, 90, 0, 6, 100, 0, 3, 'a', '@', 'b', 0, 0, 0, 9}) + std::string(24, '\0'))
               .empty());
}

TEST(CodecIdentifiers, old_references_decode) {
    decodes_to(B({131, 101, 100, 0, 3, 'a', '@', 'b', 0, 3, 255, 255, 3}),
               Term(bert::Ref{"a@b", {0x3ffff}, 3}),
               B({131, 90, 0, 1, 100, 0, 3, 'a', '@', 'b', 0, 0, 0, 3, 0, 3, 255, 255}));
    decodes_to(B({131, 114, 0, 2, 100, 0, 3, 'a', '@', 'b', 1, 0, 0, 0, 7, 255, 255, 255, 255}),
               Term(bert::Ref{"a@b", {7, 0xffffffff}, 1}),
               B({131, 90, 0, 2, 100, 0, 3, 'a', '@', 'b', 0, 0, 0, 1, 0, 0, 0, 7, 255, 255, 255, 255}));
    CHECK(!decode_error(B({131, 114, 0, 0, 100, 0, 3, 'a', '@', 'b', 0})).empty());
    CHECK(!decode_error(B({131, 101, 100, 0, 3, 'a', '@', 'b', 0, 4, 0, 0, 0})).empty());  // id above 18 bits
    CHECK(!decode_error(B({131, 101, 100, 0, 3, 'a', '@', 'b', 0, 0, 0, 0, 4})).empty());  // creation above 3
    CHECK(!decode_error(B({131, 114, 0, 1, 100, 0, 3, 'a', '@', 'b', 4, 0, 0, 0, 0})).empty());
}

TEST(CodecIdentifiers, ports_go_out_as_new_port_or_v4_port) {
    both_ways(Term(bert::Port{"a@b", 5, 2}), B({131, 89, 100, 0, 3, 'a', '@', 'b', 0, 0, 0, 5, 0, 0, 0, 2}));
    both_ways(Term(bert::Port{"a@b", 0x0fffffff, 0}),
              B({131, 89, 100, 0, 3, 'a', '@', 'b', 15, 255, 255, 255, 0, 0, 0, 0}));
    both_ways(Term(bert::Port{"a@b", 0x10000000, 0}),
              B({131, 120, 100, 0, 3, 'a', '@', 'b', 0, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0}));
    both_ways(Term(bert::Port{"a@b", UINT64_MAX, 2}),
              B({131, 120, 100, 0, 3, 'a', '@', 'b', 255, 255, 255, 255, 255, 255, 255, 255, 0, 0, 0, 2}));
}

TEST(CodecIdentifiers, old_ports_decode_without_sign_extension) {
    decodes_to(B({131, 102, 100, 0, 3, 'a', '@', 'b', 0, 0, 0, 5, 2}), Term(bert::Port{"a@b", 5, 2}),
               B({131, 89, 100, 0, 3, 'a', '@', 'b', 0, 0, 0, 5, 0, 0, 0, 2}));
    decodes_to(B({131, 89, 100, 0, 3, 'a', '@', 'b', 255, 255, 255, 255, 255, 255, 255, 255}),
               Term(bert::Port{"a@b", 0xffffffff, 0xffffffff}),
               B({131, 120, 100, 0, 3, 'a', '@', 'b', 0, 0, 0, 0, 255, 255, 255, 255, 255, 255, 255, 255}));
    CHECK(!decode_error(B({131, 102, 100, 0, 3, 'a', '@', 'b', 0, 0, 0, 5, 4})).empty());
}

TEST_GROUP(CodecCompressed){};

TEST(CodecCompressed, erlang_compressed_term_decodes) {
    // term_to_binary({lists:duplicate(20, hello), <<"x" * 43>>}, [compressed])
    std::string z =
        B({131, 80,  0,   0,  0,   216, 120, 156, 203, 96,  202, 97, 96,  96, 16, 73,  97,  96, 205, 72,
           205, 201, 201, 31, 172, 116, 86,  46,  208, 149, 218, 21, 196, 3,  0,  186, 177, 71, 217});
    std::vector<Term> hellos(20, Term::atom("hello"));
    Term expected = Term::tuple({Term::list(hellos), Term::binary(std::string(43, 'x'))});
    Term t;
    bert::DecodeError e = bert::decode(z, t);
    CHECK_TEXT(!e, e.message.c_str());
    CHECK(t == expected);
    CHECK_EQUAL(216u + 1, bert::encode(t).size());
}

TEST(CodecCompressed, compressed_input_of_every_sample_round_trips) {
    for (const Term& t : sample_terms()) {
        std::string plain = bert::encode(t);
        Term back;
        bert::DecodeError e = bert::decode(compress_term(plain.substr(1)), back);
        CHECK_TEXT(!e, e.message.c_str());
        CHECK(back == t);
    }
}

TEST(CodecCompressed, declared_size_over_max_size_is_refused_before_inflating) {
    bert::Limits limits;
    limits.max_size = 1000;
    std::string z = compress_term(std::string(1, char(106)));
    z.replace(2, 4, be32s(1001));
    Term t;
    bert::DecodeError e = bert::decode(z, t, limits);
    CHECK(e.message.find("max_size") != std::string::npos);
    CHECK_EQUAL(2u, e.offset);
    z.replace(2, 4, be32s(0xffffffff));
    CHECK(!decode_error(z).empty());
}

TEST(CodecCompressed, zlib_bomb_stops_at_the_declared_size) {
    // 10 MB of one binary, declared as 1000 bytes.
    std::string inner = B({109}) + be32s(10u << 20) + std::string(10u << 20, 'A');
    std::string z = compress_term(inner);
    CHECK(z.size() < 100000);
    z.replace(2, 4, be32s(1000));
    CHECK(decode_error(z).find("beyond its declared size") != std::string::npos);
    // Declared honestly but above the limit.
    bert::Limits limits;
    limits.max_size = 1u << 20;
    CHECK(!decode_error(compress_term(inner), limits).empty());
}

TEST(CodecCompressed, bad_compressed_data_is_refused) {
    std::string good = compress_term(bert::encode(Term::string("hello world")).substr(1));
    CHECK(!decode_error(good.substr(0, good.size() - 3)).empty());  // truncated zlib stream
    std::string corrupt = good;
    corrupt[8] = static_cast<char>(corrupt[8] ^ 0x55);
    CHECK(!decode_error(corrupt).empty());
    CHECK(!decode_error(good + "x").empty());  // trailing bytes after the stream
    std::string wrong = good;
    wrong.replace(2, 4, be32s(be32(good, 2) + 1));  // declared one byte more than inflates
    CHECK(!decode_error(wrong).empty());
    CHECK(!decode_error(compress_term(B({97, 1, 97, 2}))).empty());  // inner trailing bytes
    CHECK(!decode_error(B({131, 80, 0, 0, 0, 0, 120, 156, 3, 0, 0, 0, 0, 1})).empty());
    CHECK(!decode_error(compress_term(B({80, 0, 0, 0, 1, 106}))).empty());  // nested compression
    CHECK(!decode_error(B({131, 80, 0, 0})).empty());
}

TEST_GROUP(CodecMalformed){};

TEST(CodecMalformed, every_truncation_of_valid_encodings_is_an_error) {
    for (const Term& t : sample_terms()) {
        std::string bytes = bert::encode(t);
        for (size_t n = 0; n < bytes.size(); ++n) {
            Term out;
            bert::DecodeError e = bert::decode(std::string_view(bytes).substr(0, n), out);
            CHECK_TEXT(e, ("prefix " + std::to_string(n) + " of " + hex(bytes)).c_str());
            CHECK(e.offset <= n);
        }
        std::string z = compress_term(bytes.substr(1));
        for (size_t n = 0; n < z.size(); ++n) {
            Term out;
            CHECK_TEXT(bert::decode(std::string_view(z).substr(0, n), out), "compressed prefix");
        }
    }
}

TEST(CodecMalformed, table_of_bad_inputs) {
    struct Case {
        const char* what;
        std::string bytes;
        const char* message_part;
    };
    std::vector<Case> cases = {
        {"empty", "", "empty"},
        {"bad version", B({130, 97, 1}), "version"},
        {"trailing bytes", B({131, 97, 1, 0}), "trailing"},
        {"unknown tag", B({131, 1}), "unknown tag 1"},
        {"new fun", B({131, 112, 0, 0, 0, 0}), "truncated NEW_FUN_EXT header"},
        {"export", B({131, 113, 100, 0, 1, 'm'}), "truncated"},
        {"bit binary without bits", B({131, 77, 0, 0, 0, 1, 0, 1}), "bad bit count"},
        {"old fun", B({131, 117, 0, 0, 0, 0}), "117 (FUN_EXT)"},
        {"atom cache ref", B({131, 82, 0}), "82"},
        {"tuple arity past the end", B({131, 105, 255, 255, 255, 255, 97, 1}), "arity"},
        {"small tuple arity past the end", B({131, 104, 3, 97, 1}), "arity"},
        {"list length past the end", B({131, 108, 255, 255, 255, 255, 106}), "list length"},
        {"list without tail", B({131, 108, 0, 0, 0, 1, 97, 1}), "truncated list tail"},
        {"map size past the end", B({131, 116, 127, 255, 255, 255, 97, 1}), "map size"},
        {"map missing value", B({131, 116, 0, 0, 0, 1, 97, 1}), "truncated"},
        {"binary past the end", B({131, 109, 255, 255, 255, 255, 1}), "truncated"},
        {"string past the end", B({131, 107, 255, 255, 1}), "truncated"},
        {"large big past the end", B({131, 111, 255, 255, 255, 255, 0, 1}), "truncated"},
        {"small big past the end", B({131, 110, 9, 0, 1}), "truncated"},
        {"atom past the end", B({131, 100, 255, 255, 'a'}), "truncated"},
        {"nested compressed tag", B({131, 104, 1, 80, 0, 0, 0, 1}), "80"},
        {"pid node not an atom", B({131, 88, 106, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3}), "atom"},
        {"ref too many ids", B({131, 114, 0, 6, 100, 0, 0, 0}), "5 id"},
        {"nan", B({131, 70, 127, 248, 0, 0, 0, 0, 0, 1}), "NaN"},
    };
    for (const auto& c : cases) {
        std::string m = decode_error(c.bytes);
        CHECK_TEXT(m.find(c.message_part) != std::string::npos,
                   (std::string(c.what) + ": got '" + m + "'").c_str());
    }
}

TEST(CodecMalformed, every_unassigned_tag_is_an_error) {
    for (int tag = 0; tag < 256; ++tag) {
        std::string bytes = B({131, tag});
        Term t;
        // Alone, every tag is either a complete NIL or an error; none reads further.
        bert::DecodeError e = bert::decode(bytes, t);
        CHECK_TEXT(tag == 106 ? !e : static_cast<bool>(e), std::to_string(tag).c_str());
    }
}

TEST(CodecMalformed, depth_is_bounded) {
    Term t;
    bert::DecodeError e = bert::decode(nested_tuple_bytes(1000), t);
    CHECK_TEXT(!e, e.message.c_str());
    e = bert::decode(nested_tuple_bytes(1001), t);
    CHECK(e.message.find("max_depth") != std::string::npos);
    // A bomb of nested one-element lists, far deeper than the limit.
    std::string bomb(1, char(131));
    for (int i = 0; i < 100000; ++i) bomb += B({108, 0, 0, 0, 1});
    CHECK(decode_error(bomb).find("max_depth") != std::string::npos);
    std::string maps(1, char(131));
    for (int i = 0; i < 100000; ++i) maps += B({116, 0, 0, 0, 1, 106});
    CHECK(decode_error(maps).find("max_depth") != std::string::npos);
    bert::Limits shallow;
    shallow.max_depth = 2;
    CHECK(!bert::decode(nested_tuple_bytes(2), t, shallow));
    CHECK(static_cast<bool>(bert::decode(nested_tuple_bytes(3), t, shallow)));
}

// The default depth must be safe with sanitizer-sized frames: decode, encode,
// compare and destroy terms at the limit on a 2 MB stack, a quarter of what
// threads get by default. (Measured under ASan+UBSan: at most ~1.3 KB a level.)
static void* depth_worker(void* arg) {
    auto* ok = static_cast<bool*>(arg);
    std::string lists(1, char(131));
    for (int i = 0; i < 1000; ++i) lists += B({108, 0, 0, 0, 1});
    lists += B({106});
    for (int i = 0; i < 1000; ++i) lists += B({106});
    for (const std::string& bytes : {nested_tuple_bytes(1000), lists}) {
        Term t, u;
        if (bert::decode(bytes, t) || bert::decode(bytes, u)) return nullptr;
        if (bert::encode(t) != bytes || !(t == u) || bert::compare(t, u) != 0) return nullptr;
    }
    *ok = true;
    return nullptr;
}

TEST(CodecMalformed, default_depth_fits_a_small_stack) {
    bool ok = false;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 2u << 20);
    pthread_t th;
    CHECK_EQUAL(0, pthread_create(&th, &attr, depth_worker, &ok));
    pthread_join(th, nullptr);
    pthread_attr_destroy(&attr);
    CHECK(ok);
}

TEST(CodecMalformed, max_size_bounds_plain_input) {
    bert::Limits limits;
    limits.max_size = 11;
    Term t;
    CHECK(!bert::decode(bert::encode(Term::binary("12345")), t, limits));
    CHECK(decode_error(bert::encode(Term::binary("123456")), limits).find("max_size") != std::string::npos);
}

TEST(CodecMalformed, huge_claimed_counts_do_not_allocate_up_front) {
    // Each claims ~4G elements with a few bytes present; all must fail fast.
    CHECK(!decode_error(B({131, 105, 255, 255, 255, 255}) + std::string(1000, char(106))).empty());
    CHECK(!decode_error(B({131, 108, 0, 0, 3, 232}) + std::string(999, char(106))).empty());
    CHECK(!decode_error(B({131, 116, 0, 0, 1, 244}) + std::string(999, char(106))).empty());
}

TEST_GROUP(CodecMisc){};

TEST(CodecMisc, encoded_size_matches_encode) {
    for (const Term& t : sample_terms()) CHECK_EQUAL(bert::encode(t).size(), bert::encoded_size(t));
}

TEST(CodecMisc, encode_append_appends) {
    std::string out = "head";
    bert::encode_append(Term(1), out);
    CHECK_EQUAL(hex("head" + B({131, 97, 1})), hex(out));
}

TEST(CodecMisc, complex_types_round_trip) {
    std::vector<Term> terms = {
        bert::complex::nil(), bert::complex::boolean(true), bert::complex::dict({{Term::atom("a"), Term(1)}}),
        bert::complex::time(1255, 295581, 446228), bert::complex::regex("^c(a*)t$", {"caseless"})};
    for (const Term& t : terms) {
        Term back;
        CHECK(!bert::decode(bert::encode(t), back));
        CHECK(back == t);
    }
    // {bert, true} as any BERT library writes it.
    both_ways(bert::complex::boolean(true),
              B({131, 104, 2, 100, 0, 4, 'b', 'e', 'r', 't', 100, 0, 4, 't', 'r', 'u', 'e'}));
}

TEST(CodecMisc, every_sample_round_trips) {
    for (const Term& t : sample_terms()) {
        Term back;
        bert::DecodeError e = bert::decode(bert::encode(t), back);
        CHECK_TEXT(!e, e.message.c_str());
        CHECK(back == t);
    }
}

TEST_GROUP(CodecPeek){};

TEST(CodecPeek, call_with_list_arguments) {
    std::string p = bert::encode(Term::tuple(
        {Term::atom("call"), Term::atom("nat"), Term::atom("add"), Term::list({Term(1), Term(1000)})}));
    bert::Peek pk;
    CHECK(bert::peek(p, pk));
    CHECK(pk.kind == bert::Peek::Kind::Call);
    CHECK_EQUAL(std::string("nat"), std::string(pk.module));
    CHECK_EQUAL(std::string("add"), std::string(pk.function));
    CHECK_EQUAL(2u, pk.arity);
    CHECK_EQUAL(p[pk.args_offset], char(108));
    CHECK(pk.module.data() >= p.data() && pk.module.data() < p.data() + p.size());
}

TEST(CodecPeek, arity_from_nil_and_string_ext) {
    bert::Peek pk;
    CHECK(bert::peek(
        bert::encode(Term::tuple({Term::atom("cast"), Term::atom("m"), Term::atom("f"), Term::nil()})), pk));
    CHECK(pk.kind == bert::Peek::Kind::Cast);
    CHECK_EQUAL(0u, pk.arity);
    CHECK(bert::peek(bert::encode(Term::tuple(
                         {Term::atom("call"), Term::atom("m"), Term::atom("f"), Term::string("abc")})),
                     pk));
    CHECK_EQUAL(3u, pk.arity);
}

TEST(CodecPeek, info) {
    std::string p = bert::encode(
        Term::tuple({Term::atom("info"), Term::atom("priority"), Term::list({Term::atom("low")})}));
    bert::Peek pk;
    CHECK(bert::peek(p, pk));
    CHECK(pk.kind == bert::Peek::Kind::Info);
    CHECK_EQUAL(std::string("priority"), std::string(pk.module));
    CHECK(pk.function.empty());
    CHECK_EQUAL(1u, pk.arity);
    Term opts;
    CHECK(!bert::decode(B({131}) + p.substr(pk.args_offset), opts));
    CHECK(opts == Term::list({Term::atom("low")}));
}

TEST(CodecPeek, info_options_may_be_any_term) {
    // {info, priority, low} is how Ernie's README writes it; unknown shapes are the server's to ignore.
    for (const Term& opts : {Term::atom("low"), Term::binary("x"), Term::tuple({})}) {
        std::string p = bert::encode(Term::tuple({Term::atom("info"), Term::atom("priority"), opts}));
        bert::Peek pk;
        CHECK(bert::peek(p, pk));
        CHECK(pk.kind == bert::Peek::Kind::Info);
        CHECK_EQUAL(0u, pk.arity);
        Term got;
        CHECK(!bert::decode(B({131}) + p.substr(pk.args_offset), got));
        CHECK(got == opts);
    }
}

TEST(CodecPeek, atom_forms_and_latin1_flag) {
    std::string p = B({131, 104, 4, 115, 4, 'c', 'a', 'l', 'l', 119, 1, 'm', 100, 0, 2, 'f', 233, 106});
    bert::Peek pk;
    CHECK(bert::peek(p, pk));
    CHECK_EQUAL(std::string("m"), std::string(pk.module));
    CHECK(!pk.module_latin1);
    CHECK(pk.function_latin1);
    CHECK_EQUAL(std::string("f\xe9"), std::string(pk.function));
}

TEST(CodecPeek, garbage_and_wrong_shapes_are_other) {
    std::vector<std::string> bad = {
        "",
        B({131}),
        B({130, 104, 4}),
        B({131, 104, 4}),
        B({131, 105, 0, 0, 0, 4}),
        bert::encode(Term::tuple({Term::atom("call"), Term::atom("m"), Term::atom("f")})),
        bert::encode(Term::tuple({Term::atom("info"), Term::atom("m"), Term::atom("f"), Term::nil()})),
        bert::encode(Term::tuple({Term::atom("reply"), Term::atom("m"), Term::atom("f"), Term::nil()})),
        B({131, 104, 3, 100, 0, 4, 'i', 'n', 'f', 'o', 100, 0, 1, 'm'}),  // an info cut after its command
        bert::encode(Term::tuple({Term::atom("call"), Term::binary("m"), Term::atom("f"), Term::nil()})),
        bert::encode(Term::tuple({Term::atom("call"), Term::atom("m"), Term(1), Term::nil()})),
        bert::encode(Term::tuple({Term::atom("call"), Term::atom("m"), Term::atom("f"), Term(1)})),
        bert::encode(Term::tuple({Term::atom("call"), Term::atom("m"), Term::atom("f"), Term::tuple({})})),
        B({131, 104, 4, 100, 0,   4,   'c', 'a', 'l', 'l', 100, 0, 1,
           'm', 100, 0, 1,   'f', 108, 0,   0,   0,   5,   97,  1, 106}),
        B({131, 104, 4, 100, 0, 4, 'c', 'a', 'l', 'l', 100, 0, 1, 'm', 100, 0, 1, 'f', 107, 0, 5, 1}),
        B({131, 104, 4, 100, 0, 4, 'c', 'a', 'l', 'l', 100, 0, 9, 'm'}),
    };
    for (const auto& p : bad) {
        bert::Peek pk;
        pk.arity = 77;
        CHECK_TEXT(!bert::peek(p, pk), hex(p).c_str());
        CHECK(pk.kind == bert::Peek::Kind::Other);
        CHECK_EQUAL(0u, pk.arity);
    }
}

TEST(CodecPeek, names_past_erlangs_255_characters_are_refused) {
    // ATOM_EXT's 16-bit length allows 65535 bytes; Erlang writes at most 255 characters.
    auto call_named = [](unsigned tag, const std::string& name) {
        std::string p = B({131, 104, 4, 100, 0, 4, 'c', 'a', 'l', 'l', uint8_t(tag),
                           uint8_t(name.size() >> 8), uint8_t(name.size())});
        return p + name + B({100, 0, 1, 'f', 106});
    };
    bert::Peek pk;
    CHECK(bert::peek(call_named(100, std::string(255, 'm')), pk));
    CHECK(!bert::peek(call_named(100, std::string(256, 'm')), pk));
    CHECK(!bert::peek(call_named(118, std::string(65535, 'm')), pk));
    // UTF-8: 255 two-byte characters are 510 bytes, and allowed.
    std::string e_acute = "\xc3\xa9";
    std::string ok, long_one;
    for (int i = 0; i < 255; ++i) ok += e_acute;
    CHECK(bert::peek(call_named(118, ok), pk));
    CHECK_EQUAL(510u, pk.module.size());
    CHECK(!bert::peek(call_named(118, ok + e_acute), pk));
}

TEST(CodecPeek, every_truncation_of_a_call_is_other) {
    std::string p = bert::encode(Term::tuple(
        {Term::atom("call"), Term::atom("mod"), Term::atom("fun"), Term::list({Term(1), Term(2)})}));
    bert::Peek pk;
    CHECK(bert::peek(p, pk));
    // Every cut up to the list header's tail byte is refused.
    for (size_t n = 0; n + 2 < p.size(); ++n)
        CHECK_TEXT(!bert::peek(p.substr(0, n), pk), std::to_string(n).c_str());
}
