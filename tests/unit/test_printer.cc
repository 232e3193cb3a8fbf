// test_printer.cc: bert::print against what OTP 25's io_lib:print(T, 1, Inf, -1) writes
// (every expected text here was checked with erl), and the max_bytes cut.
#include <CppUTest/TestHarness.h>

#include <chrono>
#include <string>
#include <vector>

#include "bert/parser.h"
#include "bert/printer.h"

using bert::Term;

namespace {

std::string p(const Term& t, size_t max = 0) { return bert::to_string(t, max); }

Term atom(const char* s) { return Term::atom(s); }
Term str(std::string_view s) { return Term::string(s); }
Term bin(std::string_view s) { return Term::binary(s); }

Term parsed(const std::string& text) {
    Term t;
    auto err = bert::parse(text, t);
    CHECK_TEXT(!err, (text + ": " + err.str()).c_str());
    return t;
}

// Texts that erl prints exactly so, and that parse back to the term they show.
const char* const kCanonical[] = {
    R"~({call,nat,add,[1,2]})~",
    R"~({reply,3})~",
    R"~({error,{user,0,<<"RuntimeError">>,<<"oops">>,[]}})~",
    R"~([])~",
    R"~({})~",
    R"~(#{})~",
    R"~(<<>>)~",
    R"~([1,2,3])~",
    R"~([1,2|3])~",
    R"~([a|b])~",
    R"~(["a","bc"])~",
    R"~([[]])~",
    R"~("abc")~",
    R"~("a\nb\tc\"d\\e'f")~",
    R"~("\r\v\b\f\e")~",
    R"~(" ")~",
    R"~("é ÿ")~",
    R"~([127])~",
    R"~([97,0])~",
    R"~([97,256])~",
    R"~([128512])~",
    R"~(<<"abc">>)~",
    R"~(<<1,2,3>>)~",
    R"~(<<"é">>)~",
    R"~(<<"Ã©">>)~",
    R"~(<<97,127>>)~",
    R"~(<<"\n\e\"\\">>)~",
    R"~(<<0>>)~",
    R"~(<<255,0>>)~",
    R"~('Abc')~",
    R"~('and')~",
    R"~('a b')~",
    R"~('')~",
    R"~('a\nb')~",
    R"~('a\'b')~",
    R"~('a"b')~",
    R"~('a\\b')~",
    R"~('a\db')~",
    R"~('a\200b')~",
    R"~('a\000b')~",
    R"~('\x{65E5}\x{672C}')~",
    R"~('\x{1F600}')~",
    R"~(é)~",
    R"~(aÉ)~",
    R"~('×')~",
    R"~('ªb')~",
    R"~(maybe)~",
    R"~(else)~",
    R"~(true)~",
    R"~(false)~",
    R"~(a@b)~",
    R"~(a_B9)~",
    R"~('_a')~",
    R"~('1a')~",
    R"~('a.b')~",
    R"~('a-b')~",
    R"~(0)~",
    R"~(-1)~",
    R"~(9223372036854775807)~",
    R"~(-9223372036854775808)~",
    R"~(9223372036854775808)~",
    R"~(-9223372036854775809)~",
    R"~(123456789012345678901234567890)~",
    R"~(-123456789012345678901234567890)~",
    R"~(1.0)~",
    R"~(-1.0)~",
    R"~(0.0)~",
    R"~(-0.0)~",
    R"~(0.1)~",
    R"~(100.0)~",
    R"~(1.0e3)~",
    R"~(0.001)~",
    R"~(0.0001)~",
    R"~(1.0e-5)~",
    R"~(1.2345e-4)~",
    R"~(123456789.0)~",
    R"~(1234567890123456.0)~",
    R"~(9007199254740991.0)~",
    R"~(9.007199254740992e15)~",
    R"~(1.2345678901234567e19)~",
    R"~(1.0e20)~",
    R"~(1.0e100)~",
    R"~(1.7976931348623157e308)~",
    R"~(2.2250738585072014e-308)~",
    R"~(5.0e-324)~",
    R"~(3.141592653589793)~",
    R"~(-2.5e-10)~",
    R"~(#{a => 1})~",
    R"~(#{1 => a,1.0 => b})~",
    R"~(#{2 => b,1.5 => a})~",
    R"~(#{{2} => b,{1.5} => a})~",
    R"~(#{a => 1,b => #{c => [1.5]}})~",
    R"~(#{[] => 1,"a" => 2,<<>> => 3})~",
    R"~(#{1 => x,a => y,{} => z,#{} => w,[] => v,[x] => u,<<>> => t})~",
    R"~({'EXIT',"x",<<"y">>,#{k => v},[1|2]})~",
};

}  // namespace

TEST_GROUP(Printer){};

TEST(Printer, call_tuple_as_in_the_access_log) {
    STRCMP_EQUAL("{call,nat,add,[1,2]}",
                 p(Term::tuple({atom("call"), atom("nat"), atom("add"), Term::list({1, 2})})).c_str());
}

TEST(Printer, integers_and_bignums_in_decimal) {
    STRCMP_EQUAL("0", p(Term(0)).c_str());
    STRCMP_EQUAL("-42", p(Term(-42)).c_str());
    STRCMP_EQUAL("-9223372036854775808", p(Term(INT64_MIN)).c_str());
    // 2^64 and -(2^64 + 1)
    STRCMP_EQUAL("18446744073709551616",
                 p(Term(bert::BigInt{false, std::string("\0\0\0\0\0\0\0\0\1", 9)})).c_str());
    STRCMP_EQUAL("-18446744073709551617",
                 p(Term(bert::BigInt{true, std::string("\1\0\0\0\0\0\0\0\1", 9)})).c_str());
    // 256^40 - 1: 97 decimal digits, more than one base-10^9 chunk with inner zeros
    STRCMP_EQUAL(
        "2135987035920910082395021706169552114602704522356652769947041607822219725780640550022962086936575",
        p(Term(bert::BigInt{false, std::string(40, '\xff')})).c_str());
    STRCMP_EQUAL("1000000000000000000000000000001", p(parsed("1000000000000000000000000000001")).c_str());
}

TEST(Printer, floats_in_shortest_round_trip_form) {
    struct {
        double d;
        const char* text;
    } cases[] = {
        {1.0, "1.0"},
        {0.1, "0.1"},
        {-0.0, "-0.0"},
        {0.0, "0.0"},
        {100.0, "100.0"},    // fixed and scientific equally long: fixed
        {1000.0, "1.0e3"},   // scientific shorter
        {0.0001, "0.0001"},  // tie again
        {0.00012345, "1.2345e-4"},
        {1.0e-5, "1.0e-5"},
        {123456789.0, "123456789.0"},
        {1234567890123456.0, "1234567890123456.0"},
        {9007199254740991.0, "9007199254740991.0"},    // 2^53 - 1: still fixed
        {9007199254740992.0, "9.007199254740992e15"},  // 2^53: scientific although longer
        {12345678901234567890.0, "1.2345678901234567e19"},
        {1.0e20, "1.0e20"},
        {5e-324, "5.0e-324"},
        {1.7976931348623157e308, "1.7976931348623157e308"},
        {2.2250738585072014e-308, "2.2250738585072014e-308"},
        {3.141592653589793, "3.141592653589793"},
        {-2.5e-10, "-2.5e-10"},
        {123.456, "123.456"},
        {1000000000000000.5, "1000000000000000.5"},
    };
    for (auto& c : cases) STRCMP_EQUAL(c.text, p(Term(c.d)).c_str());
}

TEST(Printer, atoms_quoted_when_erlang_needs_it) {
    STRCMP_EQUAL("ok", p(atom("ok")).c_str());
    STRCMP_EQUAL("a@b_C9", p(atom("a@b_C9")).c_str());
    STRCMP_EQUAL("'Abc'", p(atom("Abc")).c_str());
    STRCMP_EQUAL("'_x'", p(atom("_x")).c_str());
    STRCMP_EQUAL("'a b'", p(atom("a b")).c_str());
    STRCMP_EQUAL("''", p(atom("")).c_str());
    STRCMP_EQUAL("'and'", p(atom("and")).c_str());
    STRCMP_EQUAL("'receive'", p(atom("receive")).c_str());
    STRCMP_EQUAL("maybe", p(atom("maybe")).c_str());  // not reserved in OTP 25
    STRCMP_EQUAL("true", p(atom("true")).c_str());
    STRCMP_EQUAL("'a\\'b'", p(atom("a'b")).c_str());
    STRCMP_EQUAL("'a\"b'", p(atom("a\"b")).c_str());
    STRCMP_EQUAL("'a\\\\b'", p(atom("a\\b")).c_str());
    STRCMP_EQUAL("'\\n\\t\\e\\d\\000\\037'", p(Term::atom(std::string("\n\t\x1b\x7f\0\x1f", 6))).c_str());
    STRCMP_EQUAL("'a\\200\\237'", p(atom("a\xc2\x80\xc2\x9f")).c_str());        // U+0080, U+009F: octal
    STRCMP_EQUAL("\xc3\xa9t\xc3\xa9", p(atom("\xc3\xa9t\xc3\xa9")).c_str());    // été: latin-1 letters
    STRCMP_EQUAL("'\xc3\x89t\xc3\xa9'", p(atom("\xc3\x89t\xc3\xa9")).c_str());  // Été: capital start
    STRCMP_EQUAL("'\xc3\x97'", p(atom("\xc3\x97")).c_str());                    // × is no letter
    STRCMP_EQUAL("'\xc2\xb5'", p(atom("\xc2\xb5")).c_str());                    // µ neither
    STRCMP_EQUAL("'\\x{65E5}\\x{672C}'", p(atom("\xe6\x97\xa5\xe6\x9c\xac")).c_str());  // beyond latin-1
    STRCMP_EQUAL("'a\\x{1F600}'", p(atom("a\xf0\x9f\x98\x80")).c_str());
    // A stray byte that is not UTF-8 prints as the latin-1 character it is.
    STRCMP_EQUAL("'\xc3\x89'", p(atom("\xc9")).c_str());
}

TEST(Printer, printable_latin1_lists_are_strings) {
    STRCMP_EQUAL("\"abc\"", p(str("abc")).c_str());
    STRCMP_EQUAL("\"a\\nb\\tc\\\"d\\\\e'f\"", p(str("a\nb\tc\"d\\e'f")).c_str());
    STRCMP_EQUAL("\"\\r\\v\\b\\f\\e\"", p(str("\r\v\b\f\x1b")).c_str());
    STRCMP_EQUAL("\"\xc3\xa9\xc2\xa0\xc3\xbf\"", p(Term::list({233, 160, 255})).c_str());
    STRCMP_EQUAL("[]", p(Term::nil()).c_str());
    STRCMP_EQUAL("[127]", p(Term::list({127})).c_str());
    STRCMP_EQUAL("[97,0]", p(Term::list({97, 0})).c_str());
    STRCMP_EQUAL("[97,7]", p(Term::list({97, 7})).c_str());
    STRCMP_EQUAL("[97,159]", p(Term::list({97, 159})).c_str());
    STRCMP_EQUAL("[97,256]", p(Term::list({97, 256})).c_str());
    STRCMP_EQUAL("[128512]", p(Term::list({128512})).c_str());
    STRCMP_EQUAL("[97,-1]", p(Term::list({97, -1})).c_str());
    STRCMP_EQUAL("[97,4294967306]", p(Term::list({97, int64_t(4294967306)})).c_str());  // 2^32 + '\n'
    STRCMP_EQUAL("[97,-246]", p(Term::list({97, -246})).c_str());
    STRCMP_EQUAL("[97,1.0]", p(Term::list({97, 1.0})).c_str());
    STRCMP_EQUAL("[\"a\",[]]", p(Term::list({str("a"), Term::nil()})).c_str());
}

TEST(Printer, lists_proper_and_improper) {
    STRCMP_EQUAL("[1,2,3]", p(Term::list({1, 2, 3})).c_str());
    STRCMP_EQUAL("[1|2]", p(Term(bert::List{{1, 2}, true})).c_str());
    STRCMP_EQUAL("[97|98]", p(Term(bert::List{{97, 98}, true})).c_str());  // never a string
    STRCMP_EQUAL("[a,b|c]", p(Term(bert::List{{atom("a"), atom("b"), atom("c")}, true})).c_str());
    // A tail that is itself a list is read through, as Erlang's cons cells are.
    Term nested(bert::List{{1, Term(bert::List{{2, 3}, true})}, true});
    STRCMP_EQUAL("[1,2|3]", p(nested).c_str());
    Term ends_proper(bert::List{{97, Term::list({98})}, true});
    STRCMP_EQUAL("\"ab\"", p(ends_proper).c_str());
    Term ends_nil(bert::List{{1, Term::nil()}, true});
    STRCMP_EQUAL("[1]", p(ends_nil).c_str());
    // Shapes Erlang cannot have still print safely: a lone "tail", an empty improper list.
    STRCMP_EQUAL("x", p(Term(bert::List{{atom("x")}, true})).c_str());
    STRCMP_EQUAL("[]", p(Term(bert::List{{}, true})).c_str());
}

TEST(Printer, binaries_printable_or_as_bytes) {
    STRCMP_EQUAL("<<>>", p(bin("")).c_str());
    STRCMP_EQUAL("<<\"abc\">>", p(bin("abc")).c_str());
    STRCMP_EQUAL("<<1,2,3>>", p(bin("\1\2\3")).c_str());
    STRCMP_EQUAL("<<0>>", p(bin(std::string(1, '\0'))).c_str());
    STRCMP_EQUAL("<<\"\\n\\e\\\"\\\\'\">>", p(bin("\n\x1b\"\\'")).c_str());
    STRCMP_EQUAL("<<97,127>>", p(bin("a\x7f")).c_str());
    STRCMP_EQUAL("<<\"\xc3\xa9\">>", p(bin("\xe9")).c_str());  // byte 233 is latin-1 é
    // UTF-8 text is bytes to ~p: é's two bytes are the latin-1 letters Ã and ©...
    STRCMP_EQUAL("<<\"\xc3\x83\xc2\xa9\">>", p(bin("\xc3\xa9")).c_str());
    // ...and a byte in 128..159 makes it a list of numbers.
    STRCMP_EQUAL("<<230,151,165>>", p(bin("\xe6\x97\xa5")).c_str());
}

TEST(Printer, tuples_and_maps) {
    STRCMP_EQUAL("{}", p(Term::tuple({})).c_str());
    STRCMP_EQUAL("{a,{b,[]},\"s\"}",
                 p(Term::tuple({atom("a"), Term::tuple({atom("b"), Term::nil()}), str("s")})).c_str());
    STRCMP_EQUAL("#{}", p(Term(bert::Map{})).c_str());
    // A map built out of order prints in Erlang's key order: integers, then floats,
    // then atoms, ..., at any depth integers before floats.
    bert::Map m;
    m.pairs = {{atom("b"), 1},          {1.5, atom("f")},      {2, atom("i")}, {atom("a"), 2},
               {Term::tuple({1.5}), 3}, {Term::tuple({2}), 4}, {bin("x"), 5},  {Term::nil(), 6}};
    STRCMP_EQUAL("#{2 => i,1.5 => f,a => 2,b => 1,{2} => 4,{1.5} => 3,[] => 6,<<\"x\">> => 5}",
                 p(Term(m)).c_str());
}

TEST(Printer, pids_refs_and_ports_name_their_node) {
    STRCMP_EQUAL("<n@host.80.0>", p(Term(bert::Pid{"n@host", 80, 0, 1})).c_str());
    STRCMP_EQUAL("#Ref<n@host.3.2.1>", p(Term(bert::Ref{"n@host", {1, 2, 3}, 1})).c_str());
    STRCMP_EQUAL("#Port<n@host.7>", p(Term(bert::Port{"n@host", 7, 1})).c_str());
}

TEST(Printer, canonical_texts_round_trip_through_the_parser) {
    for (const char* text : kCanonical) STRCMP_EQUAL(text, p(parsed(text)).c_str());
}

TEST(Printer, print_appends) {
    std::string out = "log: ";
    bert::print(atom("x"), out);
    STRCMP_EQUAL("log: x", out.c_str());
    bert::print(Term::list({1, 2, 3, 4, 5}), out, 6);
    STRCMP_EQUAL("log: x[1,...", out.c_str());
}

TEST(Printer, max_bytes_cuts_with_an_ellipsis) {
    Term t = Term::tuple({atom("call"), atom("store"), atom("put"), Term::list({bin("key"), bin("value")})});
    std::string full = p(t);
    STRCMP_EQUAL("{call,store,put,[<<\"key\">>,<<\"value\">>]}", full.c_str());
    STRCMP_EQUAL(full.c_str(), p(t, full.size()).c_str());  // fits exactly: untouched
    STRCMP_EQUAL("{call,store,put,[<<\"key\">>,<<\"value\"...", p(t, full.size() - 1).c_str());
    STRCMP_EQUAL("{call,...", p(t, 9).c_str());
    STRCMP_EQUAL("...", p(t, 3).c_str());
    STRCMP_EQUAL("..", p(t, 2).c_str());
    for (size_t max = 1; max < full.size(); ++max) {
        std::string cut = p(t, max);
        CHECK(cut.size() <= max);
        if (max >= 3) {
            STRCMP_EQUAL("...", cut.substr(cut.size() - 3).c_str());
            CHECK_EQUAL(0, full.compare(0, cut.size() - 3, cut, 0, cut.size() - 3));
        }
    }
}

TEST(Printer, cut_never_splits_a_utf8_character) {
    Term t = str("\xe9\xe9\xe9\xe9");  // "éééé": two bytes each in UTF-8
    STRCMP_EQUAL("\"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\"", p(t).c_str());
    STRCMP_EQUAL("\"\xc3\xa9...", p(t, 7).c_str());  // 4 bytes would end inside the second é
    STRCMP_EQUAL("\"\xc3\xa9\xc3\xa9...", p(t, 8).c_str());
}

TEST(Printer, huge_binary_is_cut_without_formatting_it_all) {
    std::string bytes(64u << 20, '\x01');  // 64 MiB, shown as <<1,1,...>> it would be 128 MiB
    Term t = bin(bytes);
    auto t0 = std::chrono::steady_clock::now();
    std::string cut = p(t, 100);
    auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
    CHECK_EQUAL(100u, cut.size());
    STRCMP_EQUAL("<<1,1,1,", cut.substr(0, 8).c_str());
    STRCMP_EQUAL("...", cut.substr(97).c_str());
    CHECK_TEXT(ms < 50, ("took " + std::to_string(ms) + " ms").c_str());  // a full scan would not be free
    // Printable start: shown as text even though the whole would not decide so.
    bytes.assign(64u << 20, 'a');
    bytes.back() = '\0';
    STRCMP_EQUAL("<<\"aaaaa...", p(bin(bytes), 11).c_str());
}

TEST(Printer, huge_list_and_bignum_are_cut_early) {
    std::vector<Term> items(1000000, Term(1000));
    std::string cut = p(Term::list(std::move(items)), 20);
    STRCMP_EQUAL("[1000,1000,1000,1...", cut.c_str());
    // A 1 MiB bignum would take minutes to convert; cut before it instead.
    Term big(bert::BigInt{false, std::string(1u << 20, '\x7f')});
    STRCMP_EQUAL("{big,...", p(Term::tuple({atom("big"), big}), 40).c_str());
}

TEST(Printer, map_key_order_matches_erlang) {
    using bert::compare_exact;
    CHECK(compare_exact(Term(2), Term(1.5)) < 0);  // every integer before every float
    CHECK(compare_exact(Term(1), Term(1.0)) < 0);
    CHECK(compare_exact(Term(-1.5), Term(0.0)) < 0);
    CHECK(compare_exact(Term(0.0), Term(-0.0)) == 0);  // one key in OTP 25
    CHECK(compare_exact(Term::tuple({2}), Term::tuple({1.5})) < 0);
    CHECK(compare_exact(Term(1.5), atom("a")) < 0);
    CHECK(compare_exact(atom("z"), Term::tuple({})) < 0);
    CHECK(compare_exact(Term::nil(), Term::list({1})) < 0);
    // [{}|2.5] before [{},-1]: after the heads, the tail 2.5 (a number) meets a list.
    CHECK(compare_exact(Term(bert::List{{Term::tuple({}), 2.5}, true}), Term::list({Term::tuple({}), -1})) <
          0);
    CHECK(compare_exact(Term::list({1}), Term(bert::List{{1, bin("t")}, true})) < 0);
}

TEST(Printer, deep_nesting_prints) {
    // As deep as the codec and the parser allow (1000 levels), of each container kind.
    Term t = Term::nil();
    for (int i = 0; i < 1000; ++i) {
        std::vector<Term> one;
        one.push_back(std::move(t));  // moved, not copied: copying would be quadratic
        switch (i % 3) {
            case 0: t = Term::list(std::move(one)); break;
            case 1: t = Term::tuple(std::move(one)); break;
            default: {
                bert::Map m;
                m.pairs.emplace_back(Term(i), std::move(one[0]));
                t = Term(std::move(m));
            }
        }
    }
    std::string s = p(t);
    STRCMP_EQUAL("[#{998 => {[#{995 => {[#", s.substr(0, 24).c_str());
    CHECK(parsed(s) == t);
}
