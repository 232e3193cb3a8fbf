// parser_impl.h: the Parser class behind parse() and parse_dotted(), shared by
// parser.cc (terms, atoms, strings, funs) and parse_literals.cc (numbers and
// binaries). Internal to src/bert; see parser.h for what it reads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "bert/erl_chars.h"
#include "bert/parser.h"
#include "bert/term.h"

namespace bert::detail {

inline constexpr size_t kMaxDepth = 1000;     // tuples, lists, maps and binaries inside each other
inline constexpr size_t kMaxDigits = 100000;  // of one integer literal (conversion is quadratic)
inline constexpr size_t kMaxAtomChars = 255;  // Erlang's own limit
inline constexpr size_t kMaxBinaryBits = size_t(16) << 23;  // 16 MiB from one binary literal

inline bool white(uint32_t c) { return c <= ' ' || (c >= 0x80 && c <= 0xA0); }

inline int digit_value(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'z') return c - 'a' + 10;
    if (c >= 'A' && c <= 'Z') return c - 'A' + 10;
    return 99;
}

// Digits (most significant first, values < base) -> integer Term, exact at any size.
Term integer_from_digits(const std::vector<uint8_t>& digits, unsigned base, bool negative);

// Accumulates a binary literal bit by bit (segments need not be whole bytes, the
// total must be).
class BitWriter {
public:
    size_t bits() const { return bits_; }
    std::string take() { return std::move(bytes_); }
    void put_bit(bool b) {
        if (bits_ % 8 == 0) bytes_.push_back(0);
        if (b) bytes_.back() = char(bytes_.back() | (0x80 >> (bits_ % 8)));
        ++bits_;
    }
    void put_byte(uint8_t v) {
        unsigned off = bits_ % 8;
        if (off == 0) {
            bytes_.push_back(char(v));
        } else {
            bytes_.back() = char(static_cast<unsigned char>(bytes_.back()) | (v >> off));
            bytes_.push_back(char((v << (8 - off)) & 0xFF));
        }
        bits_ += 8;
    }

private:
    std::string bytes_;
    size_t bits_ = 0;
};

// A number read from the text: an integer (as a Term, which may be big) or a float.
struct Number {
    bool is_float = false;
    double f = 0;
    Term i;
};

// Segment options of a binary literal, as in <<V:Size/Type-Endian-unit:U>>.
struct SegSpec {
    enum class Type { Integer, Float, Utf8, Utf16, Utf32 } type = Type::Integer;
    bool little = false;
    bool has_size = false;
    uint64_t size = 0;
    uint64_t unit = 1;
    bool has_unit = false;
};

class Parser {
public:
    explicit Parser(std::string_view s) : s_(s) {}

    ParseError error() const;

    bool at_end() const { return pos_ >= s_.size(); }
    int peek(size_t k = 0) const {
        return pos_ + k < s_.size() ? static_cast<unsigned char>(s_[pos_ + k]) : -1;
    }

    // Whitespace (Erlang's: control characters, space, and U+0080..U+00A0) and % comments.
    void skip_space();

    // A '.' that ends a term: followed by whitespace, a comment or the end.
    bool dot_end() const;
    void skip_dot() { ++pos_; }

    bool fail(size_t at, std::string msg);
    bool fail_here(std::string msg) { return fail(pos_, std::move(msg)); }

    // Dispatches on the first character. Kept small, with the work in functions that
    // are not inlined, so that 1000 levels of nesting fit the stack even under ASan.
    bool term(Term& out, size_t depth);

private:
    // What stands at the current position, for messages.
    std::string found() const;

    uint32_t code_point_at(size_t& p) const { return erl_chars::next_code_point(s_, p); }

    [[gnu::noinline]] bool string_term(Term& out);

    [[gnu::noinline]] bool number_term(Term& out);

    // An unquoted atom, or a helpful error for a variable or a stray character.
    [[gnu::noinline]] bool name_term(Term& out);

    uint32_t code_point_after(size_t p) const { return p < s_.size() ? code_point_at(p) : 0; }

    // fun Module:Function/Arity, the only fun with a literal syntax. Its atoms may be
    // reserved words, as erlang:fun_to_list/1 writes them bare (fun erlang:'if'/0
    // prints as fun erlang:if/0).
    [[gnu::noinline]] bool fun(Term& out);

    bool fun_atom(Term& out, const char* after);

    // Only non-empty containers count towards the depth, as in the codec, so that a
    // term it decodes prints to text that parses.
    bool enter(size_t depth, size_t open);

    [[gnu::noinline]] bool tuple(Term& out, size_t depth);

    [[gnu::noinline]] bool list(Term& out, size_t depth);

    [[gnu::noinline]] bool map(Term& out, size_t depth);

    // Erlang's key order, and a repeated key keeps its last value.
    [[gnu::noinline]] static Map canonical(Map m);

    // --- characters, strings and atoms ---------------------------------------------

    // After a backslash (pos_ at the character after it): one escape, as Erlang reads it.
    bool escape(uint32_t& out, size_t backslash);

    // Characters up to the closing `quote` (pos_ at the opening one).
    bool quoted(char quote, std::vector<uint32_t>& out, const char* what);

    // "..." with any adjacent "..." appended, as Erlang joins them.
    bool string_literal(std::vector<uint32_t>& out);

    bool make_atom(size_t start, const std::vector<uint32_t>& chars, Term& out);

    [[gnu::noinline]] bool quoted_atom(Term& out);

    bool bare_atom(Term& out, bool reserved_ok = false);

    // --- numbers -----------------------------------------------------------------------

    // Digits of `base`, single underscores allowed between them (1_000).
    void digits(unsigned base, std::vector<uint8_t>& out, std::string* text = nullptr);

    bool number(Number& out);
    bool char_number(bool negative, Number& out);
    bool based_number(size_t start, size_t digits_at, const std::vector<uint8_t>& ds, bool negative,
                      Number& out);
    bool float_number(size_t start, bool negative, const std::string& int_text, Number& out);

    bool make_float(size_t start, bool negative, const std::string& ip, const std::string& fp, bool exp_neg,
                    std::string exp, Number& out);

    // --- binaries ------------------------------------------------------------------------

    [[gnu::noinline]] bool binary(Term& out);

    // One segment: Value[:Size][/Type-Specifiers].
    bool segment(BitWriter& w);

    bool small_uint(uint64_t& v, const char* expected);

    bool type_specifiers(SegSpec& spec);

    bool emit(BitWriter& w, const Number& n, const SegSpec& spec, size_t at);
    bool emit_utf(BitWriter& w, const Number& n, const SegSpec& spec, size_t at);
    bool emit_float(BitWriter& w, const Number& n, const SegSpec& spec, size_t at);
    bool emit_integer(BitWriter& w, const Number& n, const SegSpec& spec, size_t at);

    static double integer_as_double(const Term& t);

    static std::string to_le(uint64_t v, size_t n);

    // Writes the low `bits` bits of a little-endian value, most significant first
    // (or whole bytes in reverse when `little`).
    static void put_le_bytes(BitWriter& w, const std::string& le, uint64_t bits, bool little);

    std::string_view s_;
    size_t pos_ = 0;
    std::string msg_;
    size_t err_at_ = 0;
};

}  // namespace bert::detail
