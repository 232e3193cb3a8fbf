// test_bounds.cc: work bounded by size, not by shape. Each test states one bound:
// decompression limits (inflated size, expansion ratio), decode's memory budget,
// check() and rewrite_floats() agreeing with decode() without building a term, and
// print_encoded() writing print()'s text while reading only what it shows. Times
// and peak memory are measured by tests/diff/bert_bounds, not here.
#include <CppUTest/TestHarness.h>
#include <zlib.h>

#include <algorithm>
#include <initializer_list>
#include <string>
#include <vector>

#include "bert/codec.h"
#include "bert/parser.h"
#include "bert/printer.h"
#include "bert/term.h"
#include "bytes.h"

using bert::Term;

namespace {

std::string be32s(uint32_t v) {
    return B({int(v >> 24) & 255, int(v >> 16) & 255, int(v >> 8) & 255, int(v) & 255});
}

// LIST_EXT of n NILs: what a hostile client sends to make a decoder build n Terms.
std::string nil_list(size_t n) {
    return B({108}) + be32s(uint32_t(n)) + std::string(n, char(106)) + B({106});
}

std::string compressed(const std::string& inner, int level = 9) {
    uLongf n = compressBound(inner.size());
    std::string z(n, '\0');
    compress2(reinterpret_cast<Bytef*>(z.data()), &n, reinterpret_cast<const Bytef*>(inner.data()),
              inner.size(), level);
    z.resize(n);
    return B({131, 80}) + be32s(uint32_t(inner.size())) + z;
}

std::string v(const std::string& inner) { return std::string(1, char(131)) + inner; }

Term parsed(const char* text) {
    Term t;
    bert::ParseError e = bert::parse(text, t);
    CHECK_TEXT(!e, e.str().c_str());
    return t;
}

std::string printed(std::string_view bytes, size_t max = 0, const bert::Limits& limits = {}) {
    std::string out;
    bert::DecodeError e = bert::print_encoded(bytes, out, max, limits);
    return e ? "error: " + e.message : out;
}

bool same_error(const bert::DecodeError& a, const bert::DecodeError& b) {
    return a.message == b.message && a.offset == b.offset;
}

}  // namespace

TEST_GROUP(Decompression){};

TEST(Decompression, a_compressed_bomb_is_refused_from_its_header_before_inflating) {
    std::string bomb = compressed(nil_list(16u << 20));
    CHECK(bomb.size() < 20000);  // about 16 KB declaring 16 MB
    Term t;
    bert::DecodeError e = bert::decode(bomb, t);
    STRCMP_EQUAL("compressed term declares 16777222 bytes, above max_inflated (8388608)", e.message.c_str());
    CHECK_EQUAL(2u, e.offset);
    CHECK(same_error(e, bert::check(bomb)));
    STRCMP_EQUAL(("error: " + e.message).c_str(), printed(bomb, 4096).c_str());
}

TEST(Decompression, more_than_max_expansion_times_its_size_is_refused_past_the_floor) {
    std::string zeros = compressed(B({109}) + be32s(1u << 20) + std::string(1u << 20, '\0'));
    CHECK(zeros.size() * 64 < (1u << 20));
    Term t;
    bert::DecodeError e = bert::decode(zeros, t);
    CHECK_TEXT(e.message.find("more than max_expansion (64) times its") != std::string::npos,
               e.message.c_str());
    CHECK_EQUAL(2u, e.offset);
    // Below the floor, any ratio is fine; and the limits are the caller's to raise.
    CHECK(!bert::decode(compressed(B({109}) + be32s(200000) + std::string(200000, '\0')), t));
    bert::Limits loose;
    loose.max_expansion = 10000;
    CHECK(!bert::decode(zeros, t, loose));
    CHECK_EQUAL(1u << 20, t.bytes().size());
}

TEST_GROUP(DecodeMemory){};

TEST(DecodeMemory, sixteen_million_nils_are_refused_by_the_memory_budget) {
    // 16 MB of input that would take 1.2 GB as Terms: refused within 4 x its 16,777,223 bytes.
    std::string big = v(nil_list(16u << 20));
    Term t = Term::atom("untouched");
    bert::DecodeError e = bert::decode(big, t);
    STRCMP_EQUAL("decoding needs more than 67108892 bytes of memory (Limits::memory_floor, memory_ratio)",
                 e.message.c_str());
    CHECK(t.is_atom("untouched"));
    // check() builds nothing, so it has no such limit.
    CHECK(!bert::check(big));
}

TEST(DecodeMemory, the_budget_scales_with_the_input_and_can_be_raised_or_lifted) {
    // A million small integers: 2 MB of input, 72 MB of Terms.
    std::string ints = B({131, 108}) + be32s(1u << 20);
    for (int i = 0; i < (1 << 20); ++i) ints += B({97, i & 255});
    ints += B({106});
    Term t;
    CHECK(bert::decode(ints, t).message.find("bytes of memory") != std::string::npos);
    bert::Limits roomy;
    roomy.memory_floor = 128u << 20;
    CHECK(!bert::decode(ints, t, roomy));
    CHECK_EQUAL(size_t(1) << 20, t.size());
    bert::Limits unlimited;
    unlimited.memory_ratio = 0;
    CHECK(!bert::decode(ints, t, unlimited));
    // Binaries cost what they hold: 32 MB of binary is well within 4 x 32 MB.
    std::string blob = B({131, 109}) + be32s(32u << 20) + std::string(32u << 20, 'x');
    CHECK(!bert::decode(blob, t));
}

TEST_GROUP(Check){};

TEST(Check, check_gives_decodes_error_for_every_bad_input) {
    std::vector<std::string> inputs = {
        "",
        B({130, 97, 1}),
        B({131, 97, 1, 0}),
        B({131, 1}),
        B({131, 117, 0}),
        B({131, 104, 3, 97, 1}),
        B({131, 108, 255, 255, 255, 255, 106}),
        B({131, 108, 0, 0, 0, 1, 97, 1}),
        B({131, 116, 0, 0, 0, 2, 97, 1, 106, 97, 1, 106}),              // duplicate keys in order
        B({131, 116, 0, 0, 0, 3, 97, 2, 106, 97, 1, 106, 97, 2, 106}),  // duplicate keys out of order
        B({131, 118, 0, 1, 0xff}),
        B({131, 70, 127, 248, 0, 0, 0, 0, 0, 1}),
        B({131, 77, 0, 0, 0, 1, 0, 1}),
        B({131, 113, 100, 0, 1, 'm'}),
        B({131, 112, 0, 0, 0, 0}),
        B({131, 80, 0, 0, 0, 5, 1, 2, 3}),
        compressed(B({97, 1, 97, 2})),
        compressed(B({104, 2, 97, 1})),
    };
    std::string deep(1, char(131));
    for (int i = 0; i < 1001; ++i) deep += B({108, 0, 0, 0, 1});
    inputs.push_back(deep);
    for (const std::string& in : inputs) {
        Term t;
        bert::DecodeError d = bert::decode(in, t), c = bert::check(in);
        CHECK_TEXT(d, "the input must be bad");
        CHECK_EQUAL_TEXT(d.message, c.message, "message");
        CHECK_EQUAL_TEXT(d.offset, c.offset, d.message.c_str());
    }
    CHECK(!bert::check(bert::encode(parsed("{a,[1,2|3],#{b=>1,a=>[]},<<5,1:3>>,fun m:f/2,\"s\",1.5}"))));
}

// A map's bytes with its pairs in the given order (no version byte).
std::string map_of(const std::vector<std::pair<std::string, std::string>>& pairs) {
    std::string out = B({116}) + be32s(uint32_t(pairs.size()));
    for (const auto& [k, v] : pairs) out += k + v;
    return out;
}

std::string small(int i) { return B({97, i}); }

TEST(Check, maps_inside_keys_are_compared_by_value_whatever_their_wire_order) {
    // The keys are maps of maps, each written in a different pair order: check() sorts
    // each inner map's pairs once and reuses them for every comparison its outer sort
    // makes; the answers must still be decode()'s, duplicate or not.
    auto inner = [](int a, int b, bool flip) {
        std::vector<std::pair<std::string, std::string>> p = {{small(a), small(10)}, {small(b), small(11)}};
        if (flip) std::swap(p[0], p[1]);
        return map_of(p);
    };
    auto key = [&](int a, int b, int last, bool flip) {
        std::vector<std::pair<std::string, std::string>> p = {{inner(a, b, flip), small(1)},
                                                               {inner(a + 1, b + 1, !flip), small(last)}};
        if (flip) std::swap(p[0], p[1]);
        return map_of(p);
    };
    std::vector<std::pair<std::string, std::string>> unique, dup;
    for (int i = 0; i < 12; ++i) unique.push_back({key(i, i + 20, i, i % 2 == 1), small(i)});
    std::reverse(unique.begin(), unique.end());
    dup = unique;
    dup.push_back({key(5, 25, 5, false), small(99)});  // the 6th key (written flipped there) unflipped
    dup.push_back({key(5, 25, 6, false), small(98)});  // a different deepest value: not a duplicate
    Term t;
    std::string u = B({131}) + map_of(unique), d = B({131}) + map_of(dup);
    STRCMP_EQUAL("", bert::decode(u, t).message.c_str());
    STRCMP_EQUAL("", bert::check(u).message.c_str());
    STRCMP_EQUAL("duplicate map key", bert::decode(d, t).message.c_str());
    bert::DecodeError c = bert::check(d);
    STRCMP_EQUAL("duplicate map key", c.message.c_str());
    CHECK_EQUAL(bert::decode(d, t).offset, c.offset);
    dup.erase(dup.end() - 2);  // the only duplicate gone
    std::string n = B({131}) + map_of(dup);
    STRCMP_EQUAL("", bert::check(n).message.c_str());
    STRCMP_EQUAL("", bert::decode(n, t).message.c_str());
}

TEST_GROUP(RewriteFloats){};

TEST(RewriteFloats, floats_change_form_and_every_other_byte_is_copied) {
    Term t = parsed("{1.5,[-0.0,<<\"x\">>|2.5e-300],#{1.0e300 => a},\"abc\",{}}");
    std::string plain = bert::encode(t), ernie = bert::encode(t, {bert::FloatForm::Ernie}), out = "keep:";
    CHECK(!bert::rewrite_floats(plain, bert::FloatForm::Ernie, out));
    CHECK(out == "keep:" + ernie);
    out.clear();
    CHECK(!bert::rewrite_floats(ernie, bert::FloatForm::New, out));
    CHECK(out == plain);
    // term_to_binary(1.5, [{minor_version, 0}]) in erl.
    std::string text = "1.50000000000000000000e+00";
    text.resize(31, '\0');
    CHECK(bert::encode(Term(1.5), {bert::FloatForm::Ernie}) == B({131, 99}) + text);
    out.clear();
    CHECK(!bert::rewrite_floats(compressed(plain.substr(1)), bert::FloatForm::Ernie, out));
    CHECK(out == ernie);  // inflated and rewritten
}

TEST(RewriteFloats, bad_input_is_an_error_and_leaves_the_output_alone) {
    std::string out = "keep";
    bert::DecodeError e = bert::rewrite_floats(B({131, 104, 2, 70, 0}), bert::FloatForm::Ernie, out);
    STRCMP_EQUAL("truncated NEW_FLOAT_EXT", e.message.c_str());
    STRCMP_EQUAL("keep", out.c_str());
    CHECK(bool(bert::rewrite_floats(B({131, 70, 127, 248, 0, 0, 0, 0, 0, 1}), bert::FloatForm::Ernie, out)));
}

TEST(RewriteFloats, the_count_says_how_many_floats_changed_and_a_term_without_any_is_copied) {
    // [1.5, 2.5] with the first float as NEW_FLOAT_EXT and the second as FLOAT_EXT.
    std::string mixed = B({131, 108, 0, 0, 0, 2}) + bert::encode(Term(1.5)).substr(1) +
                        bert::encode(Term(2.5), {bert::FloatForm::Ernie}).substr(1) + B({106});
    Term both = parsed("[1.5,2.5]");
    for (bert::FloatForm to : {bert::FloatForm::Ernie, bert::FloatForm::New}) {
        std::string out;
        size_t n = 99;
        CHECK(!bert::rewrite_floats(mixed, to, out, {}, &n));
        CHECK_EQUAL(1u, n);
        CHECK(out == bert::encode(both, {to}));
    }
    std::string none = bert::encode(parsed("{call,m,f,[1,<<\"2.5\">>,\"3\",#{a => [b]}]}")), out;
    size_t n = 99;
    CHECK(!bert::rewrite_floats(none, bert::FloatForm::Ernie, out, {}, &n));
    CHECK_EQUAL(0u, n);
    CHECK(out == none);
}

TEST(RewriteFloats, every_bad_input_gets_checks_error_at_checks_offset) {
    std::string deep(1, char(131));
    for (int i = 0; i < 1001; ++i) deep += B({104, 1});
    deep += B({70, 63, 248, 0, 0, 0, 0, 0, 0});
    std::string nan_text = "nan";
    nan_text.resize(31, '\0');
    const std::string inputs[] = {
        "",
        B({130, 70, 63, 248, 0, 0, 0, 0, 0, 0}),                        // wrong version byte
        B({131, 70, 127, 240, 0, 0, 0, 0, 0, 0}),                       // infinity
        B({131, 99}) + nan_text,                                        // FLOAT_EXT that is not a number
        B({131, 108, 0, 0, 0, 2, 70, 63, 248, 0, 0, 0, 0, 0, 0, 106}),  // a list cut short
        B({131, 70, 63, 248, 0, 0, 0, 0, 0, 0, 106}),                   // trailing bytes
        B({131, 1}),                                                    // unknown tag
        deep,                                                           // deeper than max_depth
        compressed(B({70, 63, 248, 0, 0, 0, 0, 0, 0})).substr(0, 12),   // zlib stream cut
    };
    for (const std::string& in : inputs) {
        std::string out = "keep";
        size_t n = 99;
        bert::DecodeError c = bert::check(in),
                          r = bert::rewrite_floats(in, bert::FloatForm::Ernie, out, {}, &n);
        CHECK_TEXT(c, "the input must be bad");
        CHECK_EQUAL_TEXT(c.message, r.message, "message");
        CHECK_EQUAL_TEXT(c.offset, r.offset, c.message.c_str());
        STRCMP_EQUAL("keep", out.c_str());
        CHECK_EQUAL(99u, n);
    }
}

TEST(RewriteFloats, duplicate_map_keys_are_copied_for_the_reader_to_refuse) {
    // #{1 => 0.5, 1 => []}: check() looks for duplicates (O(keys log keys) when they
    // are out of order), rewrite_floats() keeps to O(payload) and copies them.
    std::string dup = B({131, 116, 0, 0, 0, 2, 97, 1}) + bert::encode(Term(0.5)).substr(1) + B({97, 1, 106});
    STRCMP_EQUAL("duplicate map key", bert::check(dup).message.c_str());
    std::string out;
    CHECK(!bert::rewrite_floats(dup, bert::FloatForm::Ernie, out));
    CHECK(out == B({131, 116, 0, 0, 0, 2, 97, 1}) +
                     bert::encode(Term(0.5), {bert::FloatForm::Ernie}).substr(1) + B({97, 1, 106}));
    Term t;
    STRCMP_EQUAL("duplicate map key", bert::decode(out, t).message.c_str());
}

TEST(RewriteFloats, the_limits_bound_it_as_they_bound_decode) {
    std::string floats = B({108}) + be32s(1000);
    for (int i = 0; i < 1000; ++i) floats += bert::encode(Term(0.5)).substr(1);
    floats += B({106});
    std::string out;
    bert::Limits small;
    small.max_size = 1000;
    STRCMP_EQUAL("9007 bytes exceed max_size",
                 bert::rewrite_floats(v(floats), bert::FloatForm::Ernie, out, small).message.c_str());
    bert::Limits tight;
    tight.max_inflated = 4096;
    bert::DecodeError e = bert::rewrite_floats(compressed(floats), bert::FloatForm::Ernie, out, tight);
    CHECK(bool(e));
    CHECK_EQUAL(2u, e.offset);
    STRCMP_EQUAL(bert::check(compressed(floats), tight).message.c_str(), e.message.c_str());
    CHECK(out.empty());
}

TEST(RewriteFloats, a_term_too_big_to_decode_is_rewritten_without_building_it) {
    // 100,000 floats: 0.9 MB whose Terms (7.2 MB) are over this budget of
    // max(1 MB, 4 x 0.9 MB), rewritten to 3.2 MB of FLOAT_EXT under the same limits
    // and back to the very same bytes.
    const size_t count = 100000;
    bert::Limits limits;
    limits.memory_floor = 1u << 20;
    std::string one = bert::encode(Term(-1.25e-7)).substr(1), big = B({131, 108}) + be32s(uint32_t(count));
    for (size_t i = 0; i < count; ++i) big += one;
    big += B({106});
    Term t;
    CHECK(bool(bert::decode(big, t, limits)));
    std::string ernie, back;
    size_t n = 0;
    CHECK(!bert::rewrite_floats(big, bert::FloatForm::Ernie, ernie, limits, &n));
    CHECK_EQUAL(count, n);
    CHECK_EQUAL(6 + 32 * count + 1, ernie.size());
    CHECK(ernie.compare(6, 32, bert::encode(Term(-1.25e-7), {bert::FloatForm::Ernie}), 1, 32) == 0);
    CHECK(!bert::rewrite_floats(ernie, bert::FloatForm::New, back, limits, &n));
    CHECK_EQUAL(count, n);
    CHECK(back == big);
}

TEST_GROUP(PrintEncoded){};

TEST(PrintEncoded, the_text_is_prints_at_every_cut) {
    for (const char* text :
         {"{call,calc,add,[1,2]}", "[1,2|3]", "\"abc\\n\"", "[[],[]|x]", "#{b => 1,a => [1.5]}", "<<\"hi\">>",
          "<<1,2,255>>", "{fun lists:reverse/1,<<5,1:3>>}", "[97,98,{c}]", "123456789012345678901234567890",
          "-1.0e-300", "'A b'", "[]", "{}", "#{}"}) {
        Term t = parsed(text);
        std::string bytes = bert::encode(t);
        for (size_t max = 0; max < 40; ++max)
            CHECK_EQUAL_TEXT(bert::to_string(t, max), printed(bytes, max),
                             (std::string(text) + " max " + std::to_string(max)).c_str());
    }
}

TEST(PrintEncoded, keys_out_of_order_on_the_wire_print_in_erlangs_order) {
    // #{c => 3, 1.0 => x, 1 => y, [a] => z}, keys in the order a client may send them.
    std::string bytes =
        B({131, 116, 0,  0, 0,   4, 100, 0,   1,   'c', 97, 3, 70, 63,  240, 0, 0,   0,   0,   0, 0, 100, 0,
           1,   'x', 97, 1, 100, 0, 1,   'y', 108, 0,   0,  0, 1,  100, 0,   1, 'a', 106, 100, 0, 1, 'z'});
    STRCMP_EQUAL("#{1 => y,1.0 => x,c => 3,[a] => z}", printed(bytes).c_str());
    STRCMP_EQUAL("#{1 => y,1.0 => x,c...", printed(bytes, 22).c_str());
}

TEST(PrintEncoded, a_cut_print_reads_no_further_than_it_shows) {
    // Sixteen million NILs whose last byte is garbage: decode() refuses the
    // whole, a 4 KiB print never gets there.
    std::string big = v(nil_list(16u << 20));
    big.back() = 1;
    std::string text = printed(big, 4096);
    CHECK_EQUAL(4096u, text.size());
    CHECK(text.compare(0, 9, "[[],[],[]") == 0);
    CHECK(text.compare(4093, 3, "...") == 0);
    // The same compressed, with a corrupt zlib stream near its end: the cut print
    // inflates only its first part.
    bert::Limits loose;
    loose.max_inflated = 32u << 20;
    loose.max_expansion = 100000;
    std::string bomb = compressed(v(nil_list(16u << 20)).substr(1));
    bomb[bomb.size() - 6] = static_cast<char>(bomb[bomb.size() - 6] ^ 0x55);
    Term t;
    CHECK(bool(bert::decode(bomb, t, loose)));
    CHECK_EQUAL(4096u, printed(bomb, 4096, loose).size());
}

TEST(PrintEncoded, deep_nesting_and_huge_numbers_print_within_the_limits) {
    std::string deep(1, char(131));
    for (int i = 0; i < 1000; ++i) deep += B({104, 1});
    deep += B({106});
    Term t;
    CHECK(!bert::decode(deep, t));
    CHECK_EQUAL(bert::to_string(t), printed(deep));
    std::string deeper = B({131, 104, 1}) + deep.substr(1);
    STRCMP_EQUAL("error: nesting deeper than max_depth (1000)", printed(deeper).c_str());
    // A bignum of a million bytes: cut at once, not converted to decimal.
    std::string big = B({131, 111}) + be32s(1u << 20) + B({0}) + std::string(1u << 20, '\x7f');
    STRCMP_EQUAL("...", printed(big, 100).c_str());
}

TEST(PrintEncoded, bad_bytes_it_reads_are_an_error_and_the_output_is_unchanged) {
    std::string out = "keep";
    CHECK(bool(bert::print_encoded(B({131, 104, 2, 97, 1, 118, 0, 1, 0xff}), out)));
    STRCMP_EQUAL("keep", out.c_str());
    STRCMP_EQUAL("error: trailing bytes after the term", printed(B({131, 97, 1, 97})).c_str());
    STRCMP_EQUAL("error: unknown tag 1", printed(B({131, 108, 0, 0, 0, 1, 1, 106})).c_str());
}
