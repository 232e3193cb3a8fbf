// test_spans.cc: bert::tuple_elements and bert::is_atom_at, the walks the request path and the
// Erlang link take terms apart with, in place and without building a Term. Good tuples of both
// headers, nested tuples, truncated input, wrong tags, offsets out of range, limits.
#include <CppUTest/TestHarness.h>

#include <initializer_list>
#include <string>
#include <vector>

#include "bert/codec.h"
#include "bert/term.h"
#include "bytes.h"

using bert::Span;
using bert::Term;

namespace {

std::string enc(const Term& t) { return bert::encode(t); }

// The bytes of span `s` of `p`, decoded as a term of their own.
Term term_at(const std::string& p, Span s) {
    Term t;
    bert::DecodeError e = bert::decode(std::string(1, char(131)) + p.substr(s.at, s.size()), t);
    CHECK_TEXT(!e, e.message.c_str());
    return t;
}

}  // namespace

TEST_GROUP(TupleElements){};

TEST(TupleElements, a_small_tuples_elements_are_their_terms_spans_in_order) {
    Term t = Term::tuple({Term::atom("reply"), Term(42), Term::binary("abc")});
    std::string p = enc(t);
    std::vector<Span> out;
    CHECK(!bert::tuple_elements(p, 1, out));
    LONGS_EQUAL(3, out.size());
    LONGS_EQUAL(3, out[0].at);  // 131, 104, 3
    for (size_t i = 1; i < out.size(); ++i) LONGS_EQUAL(out[i - 1].end, out[i].at);
    LONGS_EQUAL(p.size(), out[2].end);
    for (size_t i = 0; i < out.size(); ++i) CHECK(term_at(p, out[i]) == t[i]);
}

TEST(TupleElements, a_large_tuple_header_is_read_as_well) {
    std::vector<Term> items;
    for (int i = 0; i < 300; ++i) items.push_back(Term(i));
    std::string p = enc(Term::tuple(items));
    LONGS_EQUAL(105, uint8_t(p[1]));  // LARGE_TUPLE_EXT
    std::vector<Span> out;
    CHECK(!bert::tuple_elements(p, 1, out));
    LONGS_EQUAL(300, out.size());
    LONGS_EQUAL(6, out[0].at);  // 131, 105, 4 bytes of arity
    CHECK(term_at(p, out[299]) == Term(299));
    // A LARGE_TUPLE_EXT of few elements, as other encoders may write it.
    std::string small = B({131, 105, 0, 0, 0, 2, 97, 1, 106});
    CHECK(!bert::tuple_elements(small, 1, out));
    LONGS_EQUAL(2, out.size());
    CHECK(term_at(small, out[0]) == Term(1));
    CHECK(term_at(small, out[1]) == Term::nil());
}

TEST(TupleElements, the_empty_tuple_has_no_elements) {
    std::vector<Span> out{Span{1, 2}};
    CHECK(!bert::tuple_elements(B({131, 104, 0}), 1, out));
    LONGS_EQUAL(0, out.size());
}

TEST(TupleElements, a_tuple_that_ends_the_payload_is_taken_apart_where_it_lies) {
    // {reply, {bert_rpc_info, [], Result}}: the inner tuple, as the request path reads it.
    Term inner = Term::tuple({Term::atom("bert_rpc_info"), Term::nil(), Term::list({Term(1), Term(2)})});
    std::string p = enc(Term::tuple({Term::atom("reply"), inner}));
    std::vector<Span> outer, parts;
    CHECK(!bert::tuple_elements(p, 1, outer));
    CHECK(!bert::tuple_elements(p, outer[1].at, parts));
    LONGS_EQUAL(3, parts.size());
    CHECK(bert::is_atom_at(p, parts[0], "bert_rpc_info"));
    CHECK(term_at(p, parts[2]) == inner[2]);
    // One that does not end the payload: the bytes after it are trailing.
    std::string q = enc(Term::tuple({Term::tuple({Term(1)}), Term(2)}));
    CHECK(!bert::tuple_elements(q, 1, outer));
    bert::DecodeError e = bert::tuple_elements(q, outer[0].at, parts);
    CHECK(!!e);
    STRCMP_CONTAINS("trailing", e.message.c_str());
}

TEST(TupleElements, truncated_input_is_an_error_at_every_cut) {
    std::string p = enc(Term::tuple({Term::atom("reply"), Term::binary(std::string(40, 'x'))}));
    std::vector<Span> out;
    for (size_t cut = 1; cut < p.size(); ++cut) {
        bert::DecodeError e = bert::tuple_elements(p.substr(0, cut), 1, out);
        CHECK_TEXT(!!e, ("a payload cut at " + std::to_string(cut) + " was accepted").c_str());
        CHECK(e.offset <= cut);
    }
    // A header announcing more elements than there are bytes for.
    CHECK(!!bert::tuple_elements(B({131, 105, 0xff, 0xff, 0xff, 0xff, 106}), 1, out));
    CHECK(!!bert::tuple_elements(B({131, 104, 200, 106, 106}), 1, out));
}

TEST(TupleElements, a_term_that_is_no_tuple_is_refused) {
    std::vector<Span> out;
    for (const Term& t :
         {Term::list({Term(1)}), Term::nil(), Term::atom("reply"), Term::binary("x"), Term(7)}) {
        bert::DecodeError e = bert::tuple_elements(enc(t), 1, out);
        CHECK(!!e);
        STRCMP_EQUAL("not a tuple", e.message.c_str());
        LONGS_EQUAL(1, e.offset);
    }
    // Not a term at all: the version byte, an unknown tag.
    CHECK(!!bert::tuple_elements(B({130, 104, 0}), 1, out));
    CHECK(!!bert::tuple_elements(B({131, 1, 2, 3}), 1, out));
    // Bad bytes inside an element are found, as check() finds them.
    bert::DecodeError e = bert::tuple_elements(B({131, 104, 2, 97, 1, 1}), 1, out);
    CHECK(!!e);
    LONGS_EQUAL(5, e.offset);
}

TEST(TupleElements, an_offset_out_of_range_is_an_error_not_a_read_past_the_end) {
    std::string p = enc(Term::tuple({Term(1), Term(2)}));
    std::vector<Span> out;
    CHECK(!!bert::tuple_elements(p, p.size(), out));
    CHECK(!!bert::tuple_elements(p, p.size() + 100, out));
    CHECK(!!bert::tuple_elements(p, size_t(-1), out));
    CHECK(!!bert::tuple_elements("", 0, out));
    CHECK(!!bert::tuple_elements(B({131}), 1, out));
}

TEST(TupleElements, a_compressed_payload_must_be_inflated_first) {
    std::vector<Span> out;
    bert::DecodeError e = bert::tuple_elements(B({131, 80, 0, 0, 0, 5, 1, 2, 3}), 1, out);
    CHECK(!!e);
    STRCMP_CONTAINS("inflate it first", e.message.c_str());
}

TEST(TupleElements, elements_are_walked_under_the_limits) {
    // {reply, [[[...]]]} 50 levels deep: within the codec's depth, not within 10.
    std::string p = B({131, 104, 2, 119, 5}) + "reply";
    for (int i = 0; i < 50; ++i) p += B({108, 0, 0, 0, 1});
    p += B({106});
    for (int i = 0; i < 50; ++i) p += B({106});
    std::vector<Span> out;
    CHECK(!bert::tuple_elements(p, 1, out));
    bert::Limits tight;
    tight.max_depth = 10;
    bert::DecodeError e = bert::tuple_elements(p, 1, out, tight);
    CHECK(!!e);
    STRCMP_CONTAINS("max_depth", e.message.c_str());
    // And the size: a payload over max_size is refused before it is walked.
    bert::Limits small;
    small.max_size = 8;
    CHECK(!!bert::tuple_elements(p, 1, out, small));
}

TEST_GROUP(IsAtomAt){};

TEST(IsAtomAt, each_of_the_four_atom_tags_is_read) {
    std::string text = "reply";
    for (int tag : {100, 118}) {  // ATOM_EXT, ATOM_UTF8_EXT: 2 bytes of length
        std::string p = B({tag, 0, 5}) + text;
        CHECK(bert::is_atom_at(p, Span{0, p.size()}, "reply"));
    }
    for (int tag : {115, 119}) {  // SMALL_ATOM_EXT, SMALL_ATOM_UTF8_EXT: 1 byte
        std::string p = B({tag, 5}) + text;
        CHECK(bert::is_atom_at(p, Span{0, p.size()}, "reply"));
    }
    std::string empty = B({119, 0});
    CHECK(bert::is_atom_at(empty, Span{0, 2}, ""));
    CHECK(!bert::is_atom_at(empty, Span{0, 2}, "x"));
}

TEST(IsAtomAt, another_name_or_another_span_is_not_the_atom) {
    std::string p = enc(Term::tuple({Term::atom("reply"), Term::atom("replyx")}));
    std::vector<Span> out;
    CHECK(!bert::tuple_elements(p, 1, out));
    CHECK(bert::is_atom_at(p, out[0], "reply"));
    CHECK(!bert::is_atom_at(p, out[0], "repl"));
    CHECK(!bert::is_atom_at(p, out[0], "replyx"));
    CHECK(!bert::is_atom_at(p, out[0], "REPLY"));
    CHECK(!bert::is_atom_at(p, out[1], "reply"));
    CHECK(bert::is_atom_at(p, out[1], "replyx"));
    // A span that is not exactly the atom's bytes.
    CHECK(!bert::is_atom_at(p, Span{out[0].at, out[0].end - 1}, "reply"));
    CHECK(!bert::is_atom_at(p, Span{out[0].at, out[1].end}, "reply"));
}

TEST(IsAtomAt, a_term_that_is_no_atom_is_not_one_whatever_its_bytes_say) {
    for (const Term& t : {Term::binary("reply"), Term::string("reply"), Term::tuple({Term::atom("reply")})}) {
        std::string p = enc(t).substr(1);
        CHECK(!bert::is_atom_at(p, Span{0, p.size()}, "reply"));
    }
}

TEST(IsAtomAt, a_span_out_of_range_or_too_short_is_never_read) {
    std::string p = B({119, 2}) + "ok";
    CHECK(bert::is_atom_at(p, Span{0, 4}, "ok"));
    CHECK(!bert::is_atom_at(p, Span{0, 5}, "ok"));
    CHECK(!bert::is_atom_at(p, Span{0, 400}, "ok"));
    CHECK(!bert::is_atom_at(p, Span{4, 4}, ""));
    CHECK(!bert::is_atom_at(p, Span{3, 4}, ""));
    CHECK(!bert::is_atom_at(p, Span{0, 1}, ""));
    CHECK(!bert::is_atom_at(p, Span{3, 1}, ""));  // at past end: no size() that wraps
    CHECK(!bert::is_atom_at(p, Span{100, 4}, "ok"));
    CHECK(!bert::is_atom_at("", Span{0, 0}, ""));
    // A length byte that claims more than the span holds.
    std::string lying = B({119, 200}) + "ok";
    CHECK(!bert::is_atom_at(lying, Span{0, lying.size()}, "ok"));
    // An ATOM_EXT of 256 bytes whose first four are "info", in a span guessed from sizes.
    std::string longer = B({100, 1, 0}) + "info" + std::string(252, 'x');
    CHECK(!bert::is_atom_at(longer, Span{0, 7}, "info"));
}

// The spans' bytes are passed on, not read here: the search for duplicate map keys, whose
// comparisons of nested maps can cost far more than the bytes (tests/fuzz/RESULTS.md), is
// left to their reader, as check() does when asked to.
TEST(TupleElements, duplicate_map_keys_are_left_to_the_reader) {
    // {reply, #{1 => [], 1 => []}}
    std::string p = B({131, 104, 2, 100, 0, 5, 'r', 'e', 'p', 'l', 'y', 116, 0, 0, 0, 2, 97, 1, 106, 97, 1, 106});
    std::vector<Span> out;
    CHECK(!bert::tuple_elements(p, 1, out));
    LONGS_EQUAL(2, out.size());
    LONGS_EQUAL(p.size(), out[1].end);
    STRCMP_EQUAL("duplicate map key", bert::check(p).message.c_str());
    CHECK(!bert::check(p, {}, false));
    Term t;
    STRCMP_EQUAL("duplicate map key", bert::decode(p, t).message.c_str());
    // Every other fault is still found.
    std::string bad = p;
    bad[bad.size() - 1] = 7;
    CHECK(!bert::tuple_elements(bad, 1, out).message.empty());
    CHECK(!bert::check(bad, {}, false).message.empty());
}
