// test_term.cc: the Term value, term order and BERT complex types.
#include <CppUTest/TestHarness.h>

#include "bert/codec.h"
#include "bert/term.h"
#include "bert/wire.h"

using bert::Term;

TEST_GROUP(Term){};

TEST(Term, big_int_that_fits_is_normalised_to_int) {
    Term t(bert::BigInt{true, std::string("\x00\x00\x00\x00\x00\x00\x00\x80", 8)});
    CHECK(t.is_int());
    CHECK_EQUAL(INT64_MIN, t.as_int());
    Term u(bert::BigInt{false, std::string("\x00\x00\x00\x00\x00\x00\x00\x80", 8)});
    CHECK(u.kind() == Term::Kind::Big);
}

TEST(Term, term_order_follows_erlang) {
    // number < atom < ref < port < pid < tuple < map < nil < list < binary
    std::vector<Term> ordered = {Term(1), Term(1.0), Term(2), Term::atom("a"),
                                 bert::Ref{"n@h", {1}, 0}, bert::Port{"n@h", 1, 0}, bert::Pid{"n@h", 1, 0, 0},
                                 Term::tuple({}), Term(bert::Map{}), Term::nil(), Term::list({Term(1)}),
                                 Term::binary("")};
    for (size_t i = 0; i + 1 < ordered.size(); ++i) {
        CHECK_TEXT(bert::compare(ordered[i], ordered[i + 1]) < 0, std::to_string(i).c_str());
        CHECK(bert::compare(ordered[i + 1], ordered[i]) > 0);
    }
    CHECK_EQUAL(0, bert::compare(Term::atom("x"), Term::atom("x")));
}

TEST(Term, big_integers_compare_by_sign_and_magnitude) {
    Term neg_big(bert::BigInt{true, std::string(9, '\x01')});
    Term pos_big(bert::BigInt{false, std::string(9, '\x01')});
    CHECK(bert::compare(neg_big, Term(-5)) < 0);
    CHECK(bert::compare(pos_big, Term(INT64_MAX)) > 0);
    CHECK(bert::compare(neg_big, pos_big) < 0);
}

TEST(Term, complex_types_round_trip) {
    CHECK(bert::complex::is_nil(bert::complex::nil()));
    CHECK(*bert::complex::as_boolean(bert::complex::boolean(true)) == true);
    CHECK(*bert::complex::as_boolean(bert::complex::boolean(false)) == false);
    CHECK_FALSE(bert::complex::as_boolean(Term::atom("true")).has_value());
    auto d = bert::complex::as_dict(bert::complex::dict({{Term::atom("k"), Term(1)}}));
    CHECK(d.has_value());
    CHECK_EQUAL(1u, d->size());
    CHECK((*d)[0].first == Term::atom("k"));
    auto tm = bert::complex::as_time(bert::complex::time(1255, 295581, 446228));
    CHECK(tm.has_value());
    CHECK_EQUAL(295581, tm->sec);
    auto re = bert::complex::as_regex(bert::complex::regex("^c(a)t$", {"caseless"}));
    CHECK(re.has_value());
    STRCMP_EQUAL("^c(a)t$", re->source.c_str());
    STRCMP_EQUAL("caseless", re->options.at(0).c_str());
}

// The orders below were read from OTP 25 (lists:sort/1 and map key order).
namespace {
Term improper(std::vector<Term> items) { return Term(bert::List{std::move(items), true}); }
Term big(bool negative, std::string magnitude) { return Term(bert::BigInt{negative, std::move(magnitude)}); }
void ascending(const std::vector<Term>& ts, int (*cmp)(const Term&, const Term&)) {
    for (size_t i = 0; i + 1 < ts.size(); ++i) {
        CHECK_TEXT(cmp(ts[i], ts[i + 1]) < 0, std::to_string(i).c_str());
        CHECK_TEXT(cmp(ts[i + 1], ts[i]) > 0, std::to_string(i).c_str());
        CHECK_EQUAL(0, cmp(ts[i], ts[i]));
    }
}
}  // namespace

TEST(Term, lists_compare_cell_by_cell_then_tails) {
    // [1|2] < [1|x] < [1] < [1,2]: after the 1, 2 < x < [] < [2]. Nil against nil is equal.
    ascending({improper({Term(1), Term(2)}), improper({Term(1), Term::atom("x")}), Term::list({Term(1)}),
               Term::list({Term(1), Term(2)})},
              bert::compare);
    CHECK_EQUAL(0, bert::compare(Term::nil(), Term::nil()));
    CHECK(bert::compare(improper({Term(1), Term(2)}), Term::list({Term(1), Term(2)})) != 0);
    // A hand-built list tail counts as more cells: [1 | [2]] is [1, 2].
    CHECK_EQUAL(0, bert::compare(improper({Term(1), Term::list({Term(2)})}), Term::list({Term(1), Term(2)})));
}

TEST(Term, exact_order_puts_integers_before_floats_at_any_depth) {
    ascending({Term(1), Term(1.0), Term(1.5), Term(2)}, bert::compare);
    ascending({Term(-1), Term(1), Term(2), Term(-1.0), Term(1.0), Term(1.5)}, bert::compare_exact);
    ascending({Term::tuple({Term(2)}), Term::tuple({Term(1.5)})}, bert::compare_exact);
    ascending({Term::tuple({Term(1.5)}), Term::tuple({Term(2)})}, bert::compare);
    ascending({big(false, std::string(9, '\x01')), Term(1.0)}, bert::compare_exact);
}

TEST(Term, integers_and_floats_compare_exactly_beyond_2_to_53) {
    Term two53(int64_t{1} << 53), two53_plus_1((int64_t{1} << 53) + 1);
    CHECK(bert::compare(two53_plus_1, Term(9007199254740992.0)) > 0);
    CHECK(bert::compare(two53, Term(9007199254740992.0)) < 0);  // equal value: integer first
    Term two64 = big(false, std::string("\0\0\0\0\0\0\0\0\1", 9));
    Term two64_plus_1 = big(false, std::string("\1\0\0\0\0\0\0\0\1", 9));
    CHECK(bert::compare(two64, Term(18446744073709551616.0)) < 0);
    CHECK(bert::compare(two64_plus_1, Term(18446744073709551616.0)) > 0);
    CHECK(bert::compare(Term(INT64_MAX), Term(9223372036854775808.0)) < 0);
    CHECK(bert::compare(Term(INT64_MIN), Term(-9223372036854775808.0)) < 0);
    CHECK(bert::compare(big(true, std::string(9, '\x01')), Term(-1e300)) > 0);
    CHECK(bert::compare(Term(2), Term(1.5)) > 0);
    CHECK(bert::compare(Term(-2), Term(-1.5)) < 0);
}

TEST(Term, identifiers_order_as_otp25) {
    // Pids: serial, then number, then node, then creation.
    ascending(
        {Term(bert::Pid{"b@a", 0, 0, 0}), Term(bert::Pid{"b@a", 0, 1, 0}), Term(bert::Pid{"a@a", 1, 1, 0}),
         Term(bert::Pid{"a@b", 1, 1, 2}), Term(bert::Pid{"a@b", 1, 1, 4}), Term(bert::Pid{"ab", 1, 1, 1}),
         Term(bert::Pid{"a@b", 2, 1, 3}), Term(bert::Pid{"a@b", 1, 2, 0})},
        bert::compare);
    // Refs: node, creation, then ids from the last word down.
    ascending({Term(bert::Ref{"a@a", {5}, 7}), Term(bert::Ref{"a@b", {1, 2, 3}, 0}),
               Term(bert::Ref{"a@b", {9}, 1}), Term(bert::Ref{"a@b", {1, 2}, 1}),
               Term(bert::Ref{"a@b", {3, 1, 2}, 1}), Term(bert::Ref{"a@b", {2, 1, 3}, 1}),
               Term(bert::Ref{"a@b", {1, 2, 3}, 1}), Term(bert::Ref{"a@b", {1, 2, 3}, 2})},
              bert::compare);
    CHECK_EQUAL(0, bert::compare(Term(bert::Ref{"a@b", {1}, 1}), Term(bert::Ref{"a@b", {1, 0}, 1})));
    // Ports: node, creation, id.
    ascending({Term(bert::Port{"a@a", 9, 9}), Term(bert::Port{"a@b", 5, 0}), Term(bert::Port{"a@b", 5, 1}),
               Term(bert::Port{"a@b", uint64_t(1) << 40, 1}), Term(bert::Port{"a@b", 4, 2})},
              bert::compare);
}

TEST(Term, maps_compare_by_size_keys_then_values_and_equal_in_any_order) {
    auto map = [](std::vector<std::pair<Term, Term>> pairs) { return Term(bert::Map{std::move(pairs)}); };
    ascending({map({{Term(1), Term::atom("a")}}), map({{Term(1.0), Term::atom("a")}})}, bert::compare);
    ascending({map({{Term::atom("a"), Term(2)}}), map({{Term::atom("b"), Term(1)}})}, bert::compare);
    ascending({map({{Term::atom("b"), Term(3)}, {Term::atom("a"), Term(1)}}),
               map({{Term::atom("a"), Term(2)}, {Term::atom("b"), Term(1)}})},
              bert::compare);
    ascending(
        {map({{Term::atom("z"), Term(1)}}), map({{Term::atom("a"), Term(1)}, {Term::atom("b"), Term(1)}})},
        bert::compare);
    // Values compare as numbers: #{a => 1} == #{a => 1.0} in Erlang, so only the tie-break orders them.
    CHECK(bert::compare(map({{Term::atom("a"), Term(1)}}), map({{Term::atom("a"), Term(1.0)}})) < 0);
    Term x = map({{Term(1), Term::atom("a")}, {Term::atom("k"), Term::nil()}});
    Term y = map({{Term::atom("k"), Term::nil()}, {Term(1), Term::atom("a")}});
    CHECK(x == y);
    CHECK_EQUAL(0, bert::compare(x, y));
    CHECK_FALSE(x == map({{Term(1), Term::atom("a")}, {Term::atom("k"), Term(0)}}));
}

TEST(Term, maps_inside_maps_compare_by_value_in_any_order_at_every_level) {
    auto map = [](std::vector<std::pair<Term, Term>> pairs) { return Term(bert::Map{std::move(pairs)}); };
    auto inner = [&](const char* second, bool reversed) {
        std::pair<Term, Term> one{Term(1), Term::atom("a")}, two{Term(2), Term::atom(second)};
        return reversed ? map({two, one}) : map({one, two});
    };
    auto outer = [&](const char* second, bool reversed) {
        std::pair<Term, Term> p{inner(second, reversed), Term(1)}, q{Term::atom("k"), inner("b", !reversed)};
        return reversed ? map({q, p}) : map({p, q});
    };
    Term x = outer("b", false), y = outer("b", true), z = outer("c", true);
    CHECK(x == y);
    CHECK_EQUAL(0, bert::compare(x, y));
    CHECK_EQUAL(0, bert::compare_exact(x, y));
    CHECK_FALSE(x == z);
    CHECK(bert::compare(x, z) < 0);  // the first key's map: b before c
    CHECK(bert::compare(z, y) > 0);
    // Decoded, every map is in key order, and the decoder's trusted comparison agrees.
    Term dx, dy, dz;
    CHECK_FALSE(bert::decode(bert::encode(x), dx));
    CHECK_FALSE(bert::decode(bert::encode(y), dy));
    CHECK_FALSE(bert::decode(bert::encode(z), dz));
    CHECK(dx == y);
    bert::detail::MapsInKeyOrder in_order;
    CHECK_EQUAL(0, bert::compare_exact(dx, dy));
    CHECK(bert::compare_exact(dx, dz) < 0);
    CHECK(bert::compare_exact(dz, dx) > 0);
}
