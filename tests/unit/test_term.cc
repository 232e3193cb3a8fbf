// test_term.cc: the Term value, term order and BERT complex types.
#include <CppUTest/TestHarness.h>

#include "bert/term.h"

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
