// test_funs_bits.cc: funs (EXPORT_EXT, NEW_FUN_EXT) and bit strings (BIT_BINARY_EXT)
// through the codec, the order, the printer and the parser. Expected bytes and text
// were taken from erl (OTP 25: term_to_binary/1 and io_lib:print/1); the
// differential tests in tests/diff/ check many more against a live VM.
#include <CppUTest/TestHarness.h>

#include <initializer_list>
#include <string>

#include "bert/codec.h"
#include "bert/parser.h"
#include "bert/printer.h"
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

Term decoded(const std::string& bytes) {
    Term t;
    bert::DecodeError e = bert::decode(bytes, t);
    CHECK_TEXT(!e, (e.message + " in " + hex(bytes)).c_str());
    return t;
}

std::string decode_error(const std::string& bytes) {
    Term t;
    return bert::decode(bytes, t).message;
}

// term_to_binary(fun(X) -> X + 1 end), compiled in module t1.
const std::string kClosure =
    B({131, 112, 0,   0,   0,   70,  1,   25, 203, 242, 85, 225, 56,  109, 102, 129, 21,  70,
       218, 143, 225, 20,  170, 0,   0,   0,  0,   0,   0,  0,   0,   100, 0,   2,   116, 49,
       97,  0,   98,  0,   206, 95,  146, 88, 100, 0,   13, 110, 111, 110, 111, 100, 101, 64,
       110, 111, 104, 111, 115, 116, 0,   0,  0,   9,   0,  0,   0,   0,   0,   0,   0,   0});

// term_to_binary(t4:mk(1.5, <<"x">>)), where mk(X, Y) -> fun(Z) -> {X, Y, Z} end, and
// the same with [{minor_version, 0}].
const std::string kClosureWithEnv =
    B({131, 112, 0,   0,   0,   85,  1,  181, 100, 43,  160, 254, 112, 82,  3,   204, 125, 120,
       221, 216, 209, 122, 228, 0,   0,  0,   0,   0,   0,   0,   2,   100, 0,   2,   116, 52,
       97,  0,   98,  5,   171, 33,  93, 88,  100, 0,   13,  110, 111, 110, 111, 100, 101, 64,
       110, 111, 104, 111, 115, 116, 0,  0,   0,   9,   0,   0,   0,   0,   0,   0,   0,   0,
       70,  63,  248, 0,   0,   0,   0,  0,   0,   109, 0,   0,   0,   1,   120});
const std::string kClosureWithEnvErnie =
    B({131, 112, 0,   0,   0,  108, 1,   181, 100, 43,  160, 254, 112, 82,  3,   204, 125, 120, 221,
       216, 209, 122, 228, 0,  0,   0,   0,   0,   0,   0,   2,   100, 0,   2,   116, 52,  97,  0,
       98,  5,   171, 33,  93, 88,  100, 0,   13,  110, 111, 110, 111, 100, 101, 64,  110, 111, 104,
       111, 115, 116, 0,   0,  0,   9,   0,   0,   0,   0,   0,   0,   0,   0,   99,  49,  46,  53,
       48,  48,  48,  48,  48, 48,  48,  48,  48,  48,  48,  48,  48,  48,  48,  48,  48,  48,  48,
       101, 43,  48,  48,  0,  0,   0,   0,   0,   109, 0,   0,   0,   1,   120});

const std::string kReverse =
    B({131, 113, 100, 0, 5, 'l', 'i', 's', 't', 's', 100, 0, 7, 'r', 'e', 'v', 'e', 'r', 's', 'e', 97, 1});

Term bits(std::string bytes, unsigned n) { return Term(bert::BitBinary{std::move(bytes), uint8_t(n)}); }

}  // namespace

TEST_GROUP(Funs){};

TEST(Funs, an_export_is_written_as_term_to_binary_writes_it) {
    Term f = bert::export_fun("lists", "reverse", 1);
    CHECK_EQUAL_TEXT(hex(kReverse), hex(bert::encode(f)), "encoding");
    CHECK_EQUAL(kReverse.size(), bert::encoded_size(f));
    CHECK(decoded(kReverse) == f);
    auto info = bert::fun_info(std::get<bert::Fun>(f.value()));
    CHECK(info && info->exported);
    STRCMP_EQUAL("lists", info->module.c_str());
    STRCMP_EQUAL("reverse", info->function.c_str());
    CHECK_EQUAL(1u, info->arity);
}

TEST(Funs, a_closure_round_trips_byte_identical_and_shows_its_fields) {
    Term f = decoded(kClosure);
    CHECK(f.is_fun());
    CHECK_EQUAL_TEXT(hex(kClosure), hex(bert::encode(f)), "re-encoding");
    auto info = bert::fun_info(std::get<bert::Fun>(f.value()));
    CHECK(info && !info->exported);
    STRCMP_EQUAL("t1", info->module.c_str());
    CHECK_EQUAL(1u, info->arity);
    CHECK_EQUAL(0, info->old_index);
    CHECK_EQUAL(13524882, info->old_uniq);
    CHECK_EQUAL(0u, info->free_vars);
    STRCMP_EQUAL("nonode@nohost", info->pid.node.c_str());
    CHECK_EQUAL(16u, info->uniq.size());

    Term g = decoded(kClosureWithEnv);
    CHECK_EQUAL_TEXT(hex(kClosureWithEnv), hex(bert::encode(g)), "re-encoding with free variables");
    CHECK_EQUAL(2u, bert::fun_info(std::get<bert::Fun>(g.value()))->free_vars);
}

TEST(Funs, the_ernie_float_form_reaches_into_a_closures_free_variables) {
    Term g = decoded(kClosureWithEnv);
    bert::EncodeOptions ernie{bert::FloatForm::Ernie};
    CHECK_EQUAL_TEXT(hex(kClosureWithEnvErnie), hex(bert::encode(g, ernie)), "minor_version 0");
    CHECK_EQUAL(kClosureWithEnvErnie.size(), bert::encoded_size(g, ernie));
    CHECK(decoded(kClosureWithEnvErnie) == g);  // read back in the canonical form
}

TEST(Funs, rewrite_floats_reaches_into_a_closures_free_variables_and_fixes_its_size) {
    std::string out;
    size_t n = 0;
    CHECK(!bert::rewrite_floats(kClosureWithEnv, bert::FloatForm::Ernie, out, {}, &n));
    CHECK_EQUAL_TEXT(hex(kClosureWithEnvErnie), hex(out), "to FLOAT_EXT");
    CHECK_EQUAL(1u, n);
    out.clear();
    CHECK(!bert::rewrite_floats(kClosureWithEnvErnie, bert::FloatForm::New, out, {}, &n));
    CHECK_EQUAL_TEXT(hex(kClosureWithEnv), hex(out), "to NEW_FLOAT_EXT");
    CHECK_EQUAL(1u, n);
}

TEST(Funs, a_fun_keeps_the_bytes_erlang_would_write_not_a_sloppy_encoding) {
    // SMALL_ATOM atoms and an INTEGER_EXT arity, as OTP 25 reads and rewrites them.
    Term e = decoded(B({131, 113, 115, 1, 'a', 115, 1, 'b', 98, 0, 0, 0, 3}));
    CHECK_EQUAL_TEXT(hex(B({131, 113, 100, 0, 1, 'a', 100, 0, 1, 'b', 97, 3})), hex(bert::encode(e)),
                     "export");
    // Arity 256 cannot be written by make_fun but is read, and written back as INTEGER_EXT.
    Term wide = decoded(B({131, 113, 100, 0, 1, 'a', 100, 0, 1, 'b', 98, 0, 0, 1, 0}));
    CHECK_EQUAL_TEXT(hex(B({131, 113, 100, 0, 1, 'a', 100, 0, 1, 'b', 98, 0, 0, 1, 0})),
                     hex(bert::encode(wide)), "arity 256");
    // A closure's Size field is not checked by OTP; the kept bytes carry the right one.
    std::string wrong = kClosure;
    wrong[5] = 99;
    CHECK_EQUAL_TEXT(hex(kClosure), hex(bert::encode(decoded(wrong))), "closure size");
}

TEST(Funs, bad_funs_are_errors) {
    CHECK(decode_error(B({131, 113, 100, 0, 1, 'a', 100, 0, 1, 'b', 98, 255, 255, 255, 255}))
              .find("negative") != std::string::npos);
    CHECK(decode_error(B({131, 113, 100, 0, 1, 'a', 106, 97, 1})).find("expected an atom") !=
          std::string::npos);
    CHECK(decode_error(B({131, 113, 100, 0, 1, 'a', 100, 0, 1, 'b', 106})).find("expected an integer") !=
          std::string::npos);
    std::string no_pid = kClosure;
    no_pid[43] = 106;  // the creator pid's tag
    CHECK(decode_error(no_pid).find("creator pid") != std::string::npos);
    std::string many_free = kClosure;
    many_free[30] = 9;  // NumFree 9, with no terms after the pid
    CHECK(decode_error(many_free).find("free variables") != std::string::npos);
    for (size_t n = 1; n < kClosureWithEnv.size(); ++n)
        CHECK_TEXT(!decode_error(kClosureWithEnv.substr(0, n)).empty(), "truncated closure");
    CHECK(!bert::fun_info(bert::Fun{"garbage"}));
    CHECK(!bert::fun_info(bert::Fun{kReverse.substr(1) + "x"}));  // trailing bytes
}

TEST(Funs, funs_order_as_in_erlang) {
    // lists:sort([fun lists:map/2, fun a:b/0, Closure, fun lists:reverse/1]) in erl.
    Term closure = decoded(kClosure);
    Term ab = bert::export_fun("a", "b", 0), map = bert::export_fun("lists", "map", 2),
         rev = bert::export_fun("lists", "reverse", 1), rev2 = bert::export_fun("lists", "reverse", 2);
    CHECK(bert::compare(closure, ab) < 0);
    CHECK(bert::compare(ab, map) < 0);
    CHECK(bert::compare(map, rev) < 0);
    CHECK(bert::compare(rev, rev2) < 0);
    CHECK(bert::compare(rev, bert::export_fun("lists", "reverse", 1)) == 0);
    // A fun sits between refs and ports.
    CHECK(bert::compare(Term(bert::Ref{"a@b", {1}, 1}), closure) < 0);
    CHECK(bert::compare(rev, Term(bert::Port{"a@b", 1, 1})) < 0);
    // Closures with the same code compare by their free variables.
    Term g = decoded(kClosureWithEnv);
    std::string smaller = kClosureWithEnv;
    smaller[smaller.size() - 1] = 'w';
    CHECK(bert::compare(decoded(smaller), g) < 0);
}

namespace {

// kClosure with its index (bytes 23..26) or its old uniq (the INTEGER_EXT at 39..42) set.
Term closure_with(size_t at, uint32_t v) {
    std::string b = kClosure;
    for (int k = 0; k < 4; ++k) b[at + k] = static_cast<char>(v >> (8 * (3 - k)));
    return decoded(b);
}

}  // namespace

TEST(Funs, closures_order_by_signed_index_and_uniq_as_erlang_does_within_range) {
    // OTP 25 orders binary_to_term'd closures by the sign of the 32-bit difference
    // of index, then of old uniq: -1 < 0 and -611141826 < 494858500 (a map from a
    // failed differential seed). bert read the index unsigned and wrote that map's
    // keys the other way round.
    CHECK_EQUAL(98, static_cast<unsigned char>(kClosure[38]));  // the old uniq is an INTEGER_EXT here
    for (size_t at : {size_t(23), size_t(39)}) {
        CHECK(bert::compare(closure_with(at, uint32_t(-1)), closure_with(at, 0)) < 0);
        CHECK(bert::compare(closure_with(at, uint32_t(-611141826)), closure_with(at, 494858500u)) < 0);
        CHECK(bert::compare(closure_with(at, 1), closure_with(at, 2)) < 0);
        CHECK(bert::compare(closure_with(at, 5), closure_with(at, 5)) == 0);
        // Where the difference overflows, Erlang's wrapping comparison is not an
        // order (2147483647 < -2147483648 there, and three such closures can form a
        // cycle); bert keeps the signed order so that sorting a map stays sound.
        Term a = closure_with(at, uint32_t(-2000000000)), b = closure_with(at, 0), c = closure_with(at, 2000000000u);
        CHECK(bert::compare(a, b) < 0);
        CHECK(bert::compare(b, c) < 0);
        CHECK(bert::compare(a, c) < 0);
    }
    Term lo = closure_with(23, uint32_t(-611141826)), hi = closure_with(23, 494858500u);
    std::string m = bert::encode(Term(bert::Map{{{hi, Term(1)}, {lo, Term(2)}}}));
    CHECK(m.find(bert::encode(lo).substr(1)) < m.find(bert::encode(hi).substr(1)));
}

TEST(Funs, a_map_keyed_by_many_closures_in_a_wrapping_cycle_decodes_sorted) {
    // 40 closure keys spread over the whole 32-bit range of indexes, written in
    // reverse: the decoder sorts them (a strict order: no read past the range,
    // which ASan builds would catch) and encodes them back in that order.
    bert::Map m;
    for (uint32_t i = 0; i < 40; ++i) m.pairs.push_back({closure_with(23, i * 0x0ccccccdu), Term(int64_t(i))});
    std::string bytes = bert::encode(Term(m));
    Term back = decoded(bytes);
    const auto& pairs = std::get<bert::Map>(back.value()).pairs;
    CHECK_EQUAL(40u, pairs.size());
    for (size_t i = 1; i < pairs.size(); ++i) CHECK(bert::compare(pairs[i - 1].first, pairs[i].first) < 0);
    CHECK_EQUAL_TEXT(hex(bytes), hex(bert::encode(back)), "re-encoding");
}

TEST(Funs, funs_print_as_erlang_shows_them) {
    STRCMP_EQUAL("fun lists:reverse/1", bert::to_string(bert::export_fun("lists", "reverse", 1)).c_str());
    STRCMP_EQUAL("#Fun<t1.0.13524882>", bert::to_string(decoded(kClosure)).c_str());
    // The VM's own atom syntax: '@' quotes, reserved words do not, latin-1 letters stay.
    STRCMP_EQUAL("fun 'a b':c/1", bert::to_string(bert::export_fun("a b", "c", 1)).c_str());
    STRCMP_EQUAL("fun if:maybe/0", bert::to_string(bert::export_fun("if", "maybe", 0)).c_str());
    STRCMP_EQUAL("fun '':'a@b_C9'/0", bert::to_string(bert::export_fun("", "a@b_C9", 0)).c_str());
    STRCMP_EQUAL("fun 'Aa':a_/0", bert::to_string(bert::export_fun("Aa", "a_", 0)).c_str());
    // erl's text would show these UTF-8 characters encoded twice (print_text.h).
    STRCMP_EQUAL("fun \xc3\xa9:\xc3\xbc/0",
                 bert::to_string(bert::export_fun("\xc3\xa9", "\xc3\xbc", 0)).c_str());
    STRCMP_EQUAL("fun '\xce\xb1':'a\\033\\t\\200\x7f'/1",
                 bert::to_string(bert::export_fun("\xce\xb1", "a\x1b\t\xc2\x80\x7f", 1)).c_str());
    STRCMP_EQUAL("#Fun<?>", bert::to_string(Term(bert::Fun{"junk"})).c_str());
}

TEST(Funs, an_export_parses_from_its_printed_text) {
    Term t;
    CHECK(!bert::parse("fun lists:reverse/1", t));
    CHECK(t == bert::export_fun("lists", "reverse", 1));
    CHECK(!bert::parse("[fun 'a b' : if / 255]", t));
    CHECK(t == Term::list({bert::export_fun("a b", "if", 255)}));
    CHECK(!bert::parse("{fun m:f/0,funny}", t));
    CHECK(t == Term::tuple({bert::export_fun("m", "f", 0), Term::atom("funny")}));
    STRCMP_EQUAL(
        "1:6: expected ':' in fun Module:Function/Arity (a local fun or a closure is no literal term)",
        bert::parse("fun f/1", t).str().c_str());
    STRCMP_EQUAL("1:10: a fun's arity must be from 0 to 255", bert::parse("fun m:f/ 256", t).str().c_str());
    STRCMP_EQUAL("1:4: expected an atom after fun, found '('",
                 bert::parse("fun(X) -> X end", t).str().c_str());
    STRCMP_EQUAL("1:1: #Fun<...> is how Erlang shows a closure; a closure is no literal term",
                 bert::parse("#Fun<t1.0.1>", t).str().c_str());
}

TEST_GROUP(BitStrings){};

TEST(BitStrings, bit_strings_are_written_as_term_to_binary_writes_them) {
    CHECK_EQUAL_TEXT(hex(B({131, 77, 0, 0, 0, 1, 3, 32})), hex(bert::encode(bits("\x20", 3))), "<<1:3>>");
    CHECK_EQUAL_TEXT(hex(B({131, 77, 0, 0, 0, 2, 3, 5, 32})), hex(bert::encode(bits("\x05\x20", 3))),
                     "<<5,1:3>>");
    CHECK(decoded(B({131, 77, 0, 0, 0, 2, 3, 5, 32})) == bits("\x05\x20", 3));
    CHECK_EQUAL(9u, bert::encoded_size(bits("\x05\x20", 3)));
}

TEST(BitStrings, unused_bits_are_zero_and_whole_bytes_are_a_binary) {
    // binary_to_term(<<131,77,0,0,0,1,3,255>>) is <<7:3>>, written back with the low bits zero.
    CHECK_EQUAL_TEXT(hex(B({131, 77, 0, 0, 0, 1, 3, 224})),
                     hex(bert::encode(decoded(B({131, 77, 0, 0, 0, 1, 3, 255})))), "garbage bits");
    CHECK(decoded(B({131, 77, 0, 0, 0, 1, 8, 5})) == Term::binary("\x05"));
    CHECK(decoded(B({131, 77, 0, 0, 0, 0, 0})) == Term::binary(""));
    CHECK(bits("\x05", 8) == Term::binary("\x05"));
    CHECK(bits("", 3) == Term::binary(""));
    CHECK(bits("\xff", 1) == bits("\x80", 1));
    CHECK(!decode_error(B({131, 77, 0, 0, 0, 1, 0, 5})).empty());  // bytes without bits
    CHECK(!decode_error(B({131, 77, 0, 0, 0, 0, 3})).empty());     // bits without bytes
    CHECK(!decode_error(B({131, 77, 0, 0, 0, 1, 9, 5})).empty());  // more than 8 bits
    CHECK(!decode_error(B({131, 77, 0, 0, 0, 2, 3, 5})).empty());  // truncated
}

TEST(BitStrings, bit_strings_order_bit_by_bit_then_by_length) {
    // lists:sort([<<1:3>>, <<32>>, <<1:2>>]) in erl.
    CHECK(bert::compare(bits("\x20", 3), Term::binary(" ")) < 0);
    CHECK(bert::compare(Term::binary(" "), bits("\x40", 2)) < 0);
    CHECK(bert::compare(bits("\x20", 3), bits("\x20", 3)) == 0);
    CHECK(bert::compare(bits("\x05\x20", 3), Term::binary("\x05\x21")) < 0);
    CHECK(bert::compare(Term::list({Term(1)}), bits("\x20", 3)) < 0);  // lists before bit strings
}

TEST(BitStrings, bit_strings_print_as_bytes_then_value_and_size) {
    STRCMP_EQUAL("<<1:3>>", bert::to_string(bits("\x20", 3)).c_str());
    STRCMP_EQUAL("<<5,1:3>>", bert::to_string(bits("\x05\x20", 3)).c_str());
    STRCMP_EQUAL("<<97,98,99,1:3>>", bert::to_string(bits("abc\x20", 3)).c_str());  // never as text
    STRCMP_EQUAL("<<97,9...", bert::to_string(bits("abc\x20", 3), 9).c_str());
}

TEST(BitStrings, bit_strings_parse_from_their_printed_text) {
    Term t;
    CHECK(!bert::parse("<<5,1:3>>", t));
    CHECK(t == bits("\x05\x20", 3));
    CHECK(!bert::parse("<<1:4>>", t));
    CHECK(t == bits("\x10", 4));
    CHECK(!bert::parse("<<\"ab\",7:3>>", t));
    CHECK(t == bits("ab\xe0", 3));
}
