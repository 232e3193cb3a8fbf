// test_parser.cc: bert::parse and bert::parse_dotted on Erlang term syntax: values as
// erl reads them (checked with erl_parse:parse_term), error positions, limits.
#include <CppUTest/TestHarness.h>

#include <cmath>
#include <string>
#include <vector>

#include "bert/parser.h"
#include "bert/printer.h"

using bert::Term;

namespace {

Term atom(const char* s) { return Term::atom(s); }

Term parse_ok(const std::string& text) {
    Term t;
    auto err = bert::parse(text, t);
    CHECK_TEXT(!err, (text + " -> " + err.str()).c_str());
    return t;
}

// Parses `text` and prints the result: a compact way to state what was read.
std::string reads_as(const std::string& text) { return bert::to_string(parse_ok(text)); }

// The error for `text`, as "line:column: message".
std::string error_of(const std::string& text) {
    Term t = atom("untouched");
    auto err = bert::parse(text, t);
    CHECK_TEXT(bool(err), (text + " parsed without error").c_str());
    CHECK_TEXT(t == atom("untouched"), "out changed on error");
    return err.str();
}

}  // namespace

TEST_GROUP(Parser){};

TEST(Parser, a_call_from_the_command_line) {
    Term t = parse_ok("{call, nat, add, [1, 2]}");
    CHECK(t == Term::tuple({atom("call"), atom("nat"), atom("add"), Term::list({1, 2})}));
    CHECK(parse_ok("<<\"k\">>") == Term::binary("k"));
    CHECK(parse_ok("{a,[1,2]}.") == Term::tuple({atom("a"), Term::list({1, 2})}));
}

TEST(Parser, integers_with_sign_base_and_separators) {
    CHECK(parse_ok("0") == Term(0));
    CHECK(parse_ok("000123") == Term(123));
    CHECK(parse_ok("-42") == Term(-42));
    CHECK(parse_ok("+7") == Term(7));
    CHECK(parse_ok("- 1") == Term(-1));  // Erlang allows the space
    CHECK(parse_ok("16#FF") == Term(255));
    CHECK(parse_ok("16#ff_ff") == Term(65535));
    CHECK(parse_ok("-2#1010") == Term(-10));
    CHECK(parse_ok("36#zz") == Term(1295));
    CHECK(parse_ok("1_000_000") == Term(1000000));
    CHECK(parse_ok("9223372036854775807") == Term(INT64_MAX));
    CHECK(parse_ok("-9223372036854775808") == Term(INT64_MIN));
    CHECK(parse_ok("-0") == Term(0));
}

TEST(Parser, bignums_of_any_size) {
    Term t = parse_ok("18446744073709551616");  // 2^64
    CHECK(t.kind() == Term::Kind::Big);
    CHECK(t == Term(bert::BigInt{false, std::string("\0\0\0\0\0\0\0\0\1", 9)}));
    CHECK(parse_ok("-16#10000000000000000") ==
          Term(bert::BigInt{true, std::string("\0\0\0\0\0\0\0\0\1", 9)}));
    CHECK(parse_ok("9223372036854775808").kind() == Term::Kind::Big);
    std::string digits = "1" + std::string(3000, '0');  // 10^3000
    STRCMP_EQUAL(digits.c_str(), reads_as(digits).c_str());
    STRCMP_EQUAL(("-" + digits).c_str(), reads_as("-" + digits).c_str());
    STRCMP_EQUAL("1267650600228229401496703205376", reads_as("2#1" + std::string(100, '0')).c_str());
}

TEST(Parser, char_literals_and_escapes) {
    CHECK(parse_ok("$a") == Term(97));
    CHECK(parse_ok("$ ") == Term(32));
    CHECK(parse_ok("-$a") == Term(-97));
    CHECK(parse_ok("$\\n") == Term(10));
    CHECK(parse_ok("$\\s") == Term(32));
    CHECK(parse_ok("$\\d") == Term(127));
    CHECK(parse_ok("$\\e") == Term(27));
    CHECK(parse_ok("$\\101") == Term(65));
    CHECK(parse_ok("$\\x41") == Term(65));
    CHECK(parse_ok("$\\x{1F600}") == Term(0x1F600));
    CHECK(parse_ok("$\\^A") == Term(1));
    CHECK(parse_ok("$\\^a") == Term(1));
    CHECK(parse_ok("$\\\\") == Term(92));
    CHECK(parse_ok("$\\'") == Term(39));
    CHECK(parse_ok("$\\z") == Term(122));       // an unknown escape is the character itself
    CHECK(parse_ok("$\xc3\xa9") == Term(233));  // é in UTF-8
    CHECK(parse_ok("$\xe6\x97\xa5") == Term(0x65E5));
}

TEST(Parser, floats) {
    CHECK(parse_ok("1.0") == Term(1.0));
    CHECK(parse_ok("1.5e-3") == Term(1.5e-3));
    CHECK(parse_ok("1.0e10") == Term(1.0e10));
    CHECK(parse_ok("1.0E+10") == Term(1.0e10));
    CHECK(parse_ok("-2.5") == Term(-2.5));
    CHECK(parse_ok("1_2.3_4e1_0") == Term(1.234e11));
    CHECK(parse_ok("0.1") == Term(0.1));
    CHECK(parse_ok("1.7976931348623157e308") == Term(1.7976931348623157e308));
    CHECK(parse_ok("4.9e-324") == Term(5e-324));
    CHECK(parse_ok("1.0e-400") == Term(0.0));  // underflow reads as 0.0, as in erl
    Term neg_zero = parse_ok("-0.0");
    CHECK(std::signbit(neg_zero.as_float()));
    CHECK(parse_ok("1.") == Term(1));  // "1." is the integer 1 and an end dot
}

TEST(Parser, atoms_bare_and_quoted) {
    CHECK(parse_ok("ok") == atom("ok"));
    CHECK(parse_ok("a@b_C9") == atom("a@b_C9"));
    CHECK(parse_ok("true") == atom("true"));
    CHECK(parse_ok("false") == atom("false"));
    CHECK(parse_ok("maybe") == atom("maybe"));
    CHECK(parse_ok("'Abc'") == atom("Abc"));
    CHECK(parse_ok("'and'") == atom("and"));
    CHECK(parse_ok("''") == atom(""));
    CHECK(parse_ok("'a b'") == atom("a b"));
    CHECK(parse_ok("'a\\'b'") == atom("a'b"));
    CHECK(parse_ok("'a\\nb'") == atom("a\nb"));
    CHECK(parse_ok("'\\x{65E5}'") == atom("\xe6\x97\xa5"));             // kept as UTF-8
    CHECK(parse_ok("\xc3\xa9t\xc3\xa9") == atom("\xc3\xa9t\xc3\xa9"));  // été, bare
    CHECK(parse_ok("'\\351'") == atom("\xc3\xa9"));
    CHECK(parse_ok("'" + std::string(255, 'x') + "'") == Term::atom(std::string(255, 'x')));
}

TEST(Parser, strings_with_every_escape) {
    CHECK(parse_ok("\"abc\"") == Term::string("abc"));
    CHECK(parse_ok("\"\"") == Term::nil());
    CHECK(parse_ok("\"\\n\\r\\t\\v\\b\\f\\e\\s\\d\\\\\\\"\\'\"") ==
          Term::string("\n\r\t\v\b\f\x1b \x7f\\\"'"));
    CHECK(parse_ok("\"\\x41\\x{42}\\101\\1011\\7\"") == Term::list({65, 66, 65, 65, '1', 7}));
    CHECK(parse_ok("\"\\^@\\^a\\^Z\\^?\"") == Term::list({0, 1, 26, 31}));
    CHECK(parse_ok("\"\\x{1F600}\"") == Term::list({0x1F600}));
    CHECK(parse_ok("\"\xc3\xa9\xe6\x97\xa5\"") == Term::list({233, 0x65E5}));  // code points, not bytes
    CHECK(parse_ok("\"a\nb\"") == Term::string("a\nb"));                       // a newline inside is kept
    CHECK(parse_ok("\"\xe9\"") == Term::list({233}));  // a latin-1 byte reads as itself
}

TEST(Parser, adjacent_strings_are_joined) {
    CHECK(parse_ok("\"ab\" \"cd\"") == Term::string("abcd"));
    CHECK(parse_ok("[\"ab\"\n  % comment\n  \"cd\", \"e\"]") ==
          Term::list({Term::string("abcd"), Term::string("e")}));
}

TEST(Parser, binaries) {
    CHECK(parse_ok("<<>>") == Term::binary(""));
    CHECK(parse_ok("<< >>") == Term::binary(""));
    CHECK(parse_ok("<<\"abc\">>") == Term::binary("abc"));
    CHECK(parse_ok("<<1,2,3>>") == Term::binary("\1\2\3"));
    CHECK(parse_ok("<<\"a\",1,$b>>") == Term::binary("a\1b"));
    CHECK(parse_ok("<<\"\xc3\xa9\"/utf8>>") == Term::binary("\xc3\xa9"));
    CHECK(parse_ok("<<\"\xc3\xa9\">>") == Term::binary("\xe9"));  // latin-1 byte without /utf8
    CHECK(parse_ok("<<16#1F600/utf8>>") == Term::binary("\xf0\x9f\x98\x80"));
    CHECK(parse_ok("<<\"ab\"/utf16>>") == Term::binary(std::string("\0a\0b", 4)));
    CHECK(parse_ok("<<$a/utf16-little>>") == Term::binary(std::string("a\0", 2)));
    CHECK(parse_ok("<<16#1F600/utf16>>") == Term::binary(std::string("\xd8\x3d\xde\x00", 4)));
    CHECK(parse_ok("<<$a/utf32>>") == Term::binary(std::string("\0\0\0a", 4)));
    CHECK(parse_ok("<<300>>") == Term::binary(","));  // cut to 8 bits, as erl does
    CHECK(parse_ok("<<-1>>") == Term::binary("\xff"));
    CHECK(parse_ok("<<1:16>>") == Term::binary(std::string("\0\1", 2)));
    CHECK(parse_ok("<<1:16/little>>") == Term::binary(std::string("\1\0", 2)));
    CHECK(parse_ok("<<-1:16/signed>>") == Term::binary("\xff\xff"));
    CHECK(parse_ok("<<1:4,2:4>>") == Term::binary("\x12"));
    CHECK(parse_ok("<<1:7/unit:8>>") == Term::binary(std::string("\0\0\0\0\0\0\1", 7)));
    CHECK(parse_ok("<<1.5/float>>") == Term::binary(std::string("\x3f\xf8\0\0\0\0\0\0", 8)));
    CHECK(parse_ok("<<1.5:32/float>>") == Term::binary(std::string("\x3f\xc0\0\0", 4)));
    CHECK(parse_ok("<<1/float>>") == Term::binary(std::string("\x3f\xf0\0\0\0\0\0\0", 8)));
    CHECK(parse_ok("<<16#0102030405060708090A:80>>") == Term::binary("\1\2\3\4\5\6\7\x08\x09\x0a"));
    CHECK(parse_ok("<<\"ab\":16>>") == Term::binary(std::string("\0a\0b", 4)));
    // Segments off byte boundaries (values checked with erl).
    CHECK(parse_ok("<<1:4, 16#ABC:12>>") == Term::binary("\x1a\xbc"));
    CHECK(parse_ok("<<5:3, 16#1FFFF:21>>") == Term::binary("\xa1\xff\xff"));
    CHECK(parse_ok("<<-1:12, 0:4>>") == Term::binary("\xff\xf0"));
    CHECK(parse_ok("<<1:1, 16#0102030405060708090A:79>>") == Term::binary("\x81\2\3\4\5\6\7\x08\x09\x0a"));
}

TEST(Parser, tuples_lists_and_maps) {
    CHECK(parse_ok("{}") == Term::tuple({}));
    CHECK(parse_ok("[]") == Term::nil());
    CHECK(parse_ok("[ ]") == Term::nil());
    CHECK(parse_ok("{ a , { } , [ ] }") == Term::tuple({atom("a"), Term::tuple({}), Term::nil()}));
    CHECK(parse_ok("[a|b]") == Term(bert::List{{atom("a"), atom("b")}, true}));
    // Tails that are lists fold into one list, as in Erlang.
    CHECK(parse_ok("[a|[b|c]]") == Term(bert::List{{atom("a"), atom("b"), atom("c")}, true}));
    CHECK(parse_ok("[a|[b]]") == Term::list({atom("a"), atom("b")}));
    CHECK(parse_ok("[a|[]]") == Term::list({atom("a")}));
    CHECK(parse_ok("[a|\"bc\"]") == Term::list({atom("a"), 98, 99}));
    STRCMP_EQUAL("#{}", reads_as("#{}").c_str());
    STRCMP_EQUAL("#{a => 1,b => 2}", reads_as("#{b => 2, a => 1}").c_str());
    STRCMP_EQUAL("#{a => 2}", reads_as("#{a => 1, a => 2}").c_str());  // the last value wins
    STRCMP_EQUAL("#{1 => x,1.0 => y}", reads_as("#{1.0 => y, 1 => x}").c_str());
    STRCMP_EQUAL("#{k => #{[1] => <<\"v\">>}}", reads_as("# { k => #{[1]=><<\"v\">>} }").c_str());
    // Sorted on reading, so equal to the map the codec decodes from Erlang.
    Term m = parse_ok("#{b => 1, 2.5 => 2, 3 => 3}");
    const auto& pairs = std::get<bert::Map>(m.value()).pairs;
    CHECK(pairs.at(0).first == Term(3));
    CHECK(pairs.at(1).first == Term(2.5));
    CHECK(pairs.at(2).first == atom("b"));
}

TEST(Parser, comments_and_whitespace) {
    CHECK(parse_ok("  % leading\n\t{a, % inside\n b} % trailing\n") == Term::tuple({atom("a"), atom("b")}));
    CHECK(parse_ok("{a}. % after the dot") == Term::tuple({atom("a")}));
    CHECK(parse_ok("\r\n[1,\r\n2]\r\n") == Term::list({1, 2}));
}

TEST(Parser, ernie_config_file_with_comments) {
    const char* cfg =
        "% Ernie configuration\n"
        "[{module, ext},\n"
        " {type, external},   % a Ruby handler\n"
        " {command, \"ruby ext.rb\"},\n"
        " {count, 2}].\n"
        "\n"
        "%% a native module\n"
        "[{module, nat}, {type, native}, {codepaths, [\"/opt/nat/ebin\"]}].\n"
        "% the end\n";
    std::vector<Term> terms;
    auto err = bert::parse_dotted(cfg, terms);
    CHECK_TEXT(!err, err.str().c_str());
    CHECK_EQUAL(2u, terms.size());
    STRCMP_EQUAL("[{module,ext},{type,external},{command,\"ruby ext.rb\"},{count,2}]",
                 bert::to_string(terms[0]).c_str());
    STRCMP_EQUAL("[{module,nat},{type,native},{codepaths,[\"/opt/nat/ebin\"]}]",
                 bert::to_string(terms[1]).c_str());
}

TEST(Parser, parse_dotted_edge_cases) {
    std::vector<Term> terms;
    CHECK(!bert::parse_dotted("", terms));
    CHECK(!bert::parse_dotted("  % only a comment\n", terms));
    CHECK_EQUAL(0u, terms.size());
    CHECK(!bert::parse_dotted("a. b.c. 1.5.", terms) == false);  // "b.c" is no term end
    terms.clear();
    CHECK(!bert::parse_dotted("a.b. 1.5.%x", terms) == false);
    terms.clear();
    CHECK(!bert::parse_dotted("a. 1.5.\n\"s\".", terms));
    CHECK_EQUAL(3u, terms.size());
    CHECK(terms[1] == Term(1.5));
    terms.clear();
    auto err = bert::parse_dotted("a.\nb.\n{c\n", terms);
    STRCMP_EQUAL("4:1: expected ',' or '}' after tuple element", err.str().c_str());
    CHECK_EQUAL(2u, terms.size());  // the terms before the error are kept
    terms.clear();
    err = bert::parse_dotted("a.\n  b c.", terms);
    STRCMP_EQUAL("2:5: expected '.' after the term", err.str().c_str());
    CHECK_EQUAL(2u, err.line);
    CHECK_EQUAL(5u, err.column);
    STRCMP_EQUAL("expected '.' after the term", err.message.c_str());
    terms.clear();
    err = bert::parse_dotted("a.b.", terms);
    STRCMP_EQUAL("1:2: expected whitespace after the '.' that ends a term", err.str().c_str());
}

TEST(Parser, errors_say_where_and_what_was_expected) {
    STRCMP_EQUAL("1:7: expected ',' or '}' after tuple element", error_of("{a, b c}").c_str());
    STRCMP_EQUAL("1:6: expected ',' or '}' after tuple element", error_of("{a, b").c_str());
    STRCMP_EQUAL("1:5: expected ',', '|' or ']' after list element", error_of("[1,2").c_str());
    STRCMP_EQUAL("1:5: expected ']' after list tail", error_of("[1|2,3]").c_str());
    STRCMP_EQUAL("1:4: expected a term, found ']'", error_of("[a,]").c_str());
    STRCMP_EQUAL("1:2: expected a term, found ','", error_of("{,}").c_str());
    STRCMP_EQUAL("1:1: expected a term, found the end of the text", error_of("").c_str());
    STRCMP_EQUAL("2:1: expected a term, found the end of the text", error_of("  % nothing\n").c_str());
    STRCMP_EQUAL("1:9: expected ',' or '}' after map value", error_of("#{a => 1").c_str());
    STRCMP_EQUAL("1:4: expected '=>' after map key", error_of("#{a, 1}").c_str());
    STRCMP_EQUAL("1:5: ':=' only updates an existing map; a map literal uses '=>'",
                 error_of("#{a := 1}").c_str());
    STRCMP_EQUAL("1:2: expected '{' after '#'", error_of("#[").c_str());
    STRCMP_EQUAL("1:3: expected a string, character or number in a binary", error_of("<<a>>").c_str());
    STRCMP_EQUAL("1:6: expected ',' or '>>' after binary segment", error_of("<<1,2").c_str());
    STRCMP_EQUAL("1:3: a float in a binary needs /float", error_of("<<1.5>>").c_str());
    STRCMP_EQUAL("1:3: a utf segment needs a Unicode code point", error_of("<<16#D800/utf8>>").c_str());
    STRCMP_EQUAL("1:1: unterminated quoted atom", error_of("'abc").c_str());
    STRCMP_EQUAL("2:3: unterminated string", error_of("[\n  \"abc").c_str());
    STRCMP_EQUAL("1:1: expected a character after '$'", error_of("$").c_str());
    STRCMP_EQUAL("1:4: expected digits of base 16 after '#'", error_of("16#").c_str());
    STRCMP_EQUAL("1:1: the base before '#' must be from 2 to 36", error_of("37#1").c_str());
    STRCMP_EQUAL("1:5: expected the exponent's digits in a float", error_of("1.0e").c_str());
    STRCMP_EQUAL("1:1: float out of range", error_of("1.0e400").c_str());
    STRCMP_EQUAL("1:2: float out of range", error_of("[1.0e309]").c_str());
    STRCMP_EQUAL("1:1: variables are not terms; quote an atom that starts with a capital or '_': 'Abc'",
                 error_of("Abc").c_str());
    STRCMP_EQUAL("1:2: 'and' is a reserved word; quote it to use it as an atom", error_of("[and]").c_str());
    STRCMP_EQUAL("1:4: expected the end of the text after the term", error_of("foo(1)").c_str());
    STRCMP_EQUAL("1:2: expected a number after '-'", error_of("-a").c_str());
    STRCMP_EQUAL("1:4: expected the end of the text after the term", error_of("{a}}").c_str());
    STRCMP_EQUAL("1:4: expected the end of the text after the term", error_of("{a}.b").c_str());
    STRCMP_EQUAL("1:4: expected the end of the text after the term", error_of("{a}..").c_str());
    STRCMP_EQUAL("1:2: character code in \\x{...} is above 10FFFF", error_of("'\\x{110000}'").c_str());
    STRCMP_EQUAL("1:4: expected two hexadecimal digits or '{' after \\x", error_of("\"\\x4g\"").c_str());
    STRCMP_EQUAL("1:1: atom longer than 255 characters", error_of("'" + std::string(256, 'x') + "'").c_str());
    STRCMP_EQUAL("1:2: expected a term, found character 127", error_of("[\x7f]").c_str());
    CHECK(parse_ok("[\x01\xc2\xa0]") == Term::nil());  // control characters and U+00A0 are whitespace
    STRCMP_EQUAL("1:2: expected a term, found byte 215 (not UTF-8)", error_of("[\xd7]").c_str());
    CHECK(parse_ok("\xff") == atom("\xc3\xbf"));  // a lone latin-1 byte reads as that letter (ÿ)
    // Columns count bytes; lines start at 1 after each newline.
    STRCMP_EQUAL("3:9: expected ',' or '}' after tuple element",
                 error_of("{a,\n b,\n \"\xc3\xa9\xc3\xa9\" x}").c_str());
}

TEST(Parser, nesting_is_limited) {
    // 1000 levels of non-empty containers (the codec's limit too); empty ones are leaves.
    std::string ok = std::string(1001, '[') + std::string(1001, ']');
    CHECK(parse_ok(ok).is_list());
    std::string deep = std::string(1002, '[') + std::string(1002, ']');
    STRCMP_EQUAL("1:1001: terms nested deeper than 1000 levels", error_of(deep).c_str());
    std::string tuples;
    for (int i = 0; i < 1001; ++i) tuples += "{a,";
    STRCMP_EQUAL("1:3001: terms nested deeper than 1000 levels", error_of(tuples).c_str());
    // Far deeper input fails the same way instead of overflowing the stack.
    std::string very_deep(1u << 20, '{');
    STRCMP_EQUAL("1:1001: terms nested deeper than 1000 levels", error_of(very_deep).c_str());
    std::string maps;
    for (int i = 0; i < 100000; ++i) maps += "#{a=>";
    STRCMP_EQUAL("1:5001: terms nested deeper than 1000 levels", error_of(maps).c_str());
}

TEST(Parser, huge_literals_are_refused_not_slow) {
    STRCMP_EQUAL("1:1: integer literal too long", error_of(std::string(100001, '7')).c_str());
    STRCMP_EQUAL("1:5: binary segment too large", error_of("<<0:99999999999>>").c_str());
}

TEST(Parser, never_crashes_on_mangled_input) {
    // Cut and corrupt valid texts at every position; each must parse or fail cleanly.
    const std::string seeds[] = {
        "[{module, ext}, {type, external}, {command, \"ruby ext.rb\"}, {count, 2}].",
        "#{a => <<\"x\"/utf8, 1:4, 2:4>>, 'q\\x{41}' => [1.5e-3|$\\^A], 16#ff => \"\\101\"}",
        "{-12345678901234567890, 2#101, 1.0e10, 'a b', \"\\x{1F600}\", <<1.5/float>>}"};
    const char junk[] = {'\0', '\\', '"', '\'', '<', '>',  '{',    '[',
                         '|',  '#',  '$', '.',  '%', '\n', '\xc3', '\xff'};
    size_t ok = 0, failed = 0;
    for (const auto& s : seeds) {
        for (size_t i = 0; i <= s.size(); ++i) {
            Term t;
            (bert::parse(s.substr(0, i), t) ? failed : ok)++;
            for (char j : junk) {
                std::string m = s;
                if (i < m.size())
                    m[i] = j;
                else
                    m.push_back(j);
                auto err = bert::parse(m, t);
                if (err) {
                    CHECK(err.line >= 1);
                    CHECK(err.column >= 1);
                    ++failed;
                } else {
                    ++ok;
                }
            }
        }
    }
    CHECK(ok > 0);
    CHECK(failed > 0);
}
