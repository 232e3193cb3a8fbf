// parser.cc: Erlang literal-term text -> Term (Ernie .cfg files, bertc arguments), with
// Erlang's own scanning rules. It never evaluates anything, never recurses deeper than
// kMaxDepth and never crashes or stalls on hostile text: every failure is a ParseError.
#include "bert/parser.h"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cstdint>
#include <cstring>

#include "bert/codec.h"
#include "bert/erl_chars.h"

namespace bert {

std::string ParseError::str() const {
    return std::to_string(line) + ":" + std::to_string(column) + ": " + message;
}

namespace {

using erl_chars::append_utf8;

constexpr size_t kMaxDepth = 1000;                   // tuples, lists, maps and binaries inside each other
constexpr size_t kMaxDigits = 100000;                // of one integer literal (conversion is quadratic)
constexpr size_t kMaxAtomChars = 255;                // Erlang's own limit
constexpr size_t kMaxBinaryBits = size_t(16) << 23;  // 16 MiB from one binary literal

bool white(uint32_t c) { return c <= ' ' || (c >= 0x80 && c <= 0xA0); }

int digit_value(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'z') return c - 'a' + 10;
    if (c >= 'A' && c <= 'Z') return c - 'A' + 10;
    return 99;
}

// Digits (most significant first, values < base) -> integer Term, exact at any size.
Term integer_from_digits(const std::vector<uint8_t>& digits, unsigned base, bool negative) {
    // Small enough for int64_t: the common case, without the limb arithmetic.
    unsigned __int128 small = 0;
    bool fits = true;
    for (uint8_t d : digits) {
        small = small * base + d;
        if (small > (unsigned __int128)(UINT64_MAX)) {
            fits = false;
            break;
        }
    }
    std::vector<uint32_t> limbs;  // little-endian base 2^32
    if (fits) {
        uint64_t v = uint64_t(small);
        if (!negative && v <= uint64_t(INT64_MAX)) return Term(int64_t(v));
        if (negative && v <= uint64_t(INT64_MAX) + 1)
            return Term(v == 0 ? int64_t(0) : int64_t(-(v - 1)) - 1);
        limbs = {uint32_t(v), uint32_t(v >> 32)};
    } else {
        // Feed as many digits at once as keep the multiplier below 2^32.
        unsigned per = 1;
        uint64_t mul = base;
        while (mul * base < (uint64_t(1) << 32)) {
            mul *= base;
            ++per;
        }
        for (size_t i = 0; i < digits.size();) {
            size_t n = std::min<size_t>(per, digits.size() - i);
            uint64_t m = 1, add = 0;
            for (size_t k = 0; k < n; ++k, ++i) {
                m *= base;
                add = add * base + digits[i];
            }
            uint64_t carry = add;
            for (auto& l : limbs) {
                uint64_t cur = uint64_t(l) * m + carry;
                l = uint32_t(cur);
                carry = cur >> 32;
            }
            if (carry) limbs.push_back(uint32_t(carry));
        }
    }
    BigInt b;
    b.negative = negative;
    for (uint32_t l : limbs)
        for (int k = 0; k < 4; ++k) b.magnitude.push_back(char((l >> (8 * k)) & 0xFF));
    return Term(std::move(b));  // Term trims zero bytes and narrows to int64_t if it fits
}

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

    ParseError error() const {
        ParseError e;
        e.message = msg_;
        if (msg_.empty()) return e;
        e.line = 1;
        size_t line_start = 0;
        for (size_t i = 0; i < err_at_ && i < s_.size(); ++i)
            if (s_[i] == '\n') {
                ++e.line;
                line_start = i + 1;
            }
        e.column = err_at_ - line_start + 1;
        return e;
    }

    bool at_end() const { return pos_ >= s_.size(); }
    int peek(size_t k = 0) const {
        return pos_ + k < s_.size() ? static_cast<unsigned char>(s_[pos_ + k]) : -1;
    }

    // Whitespace (Erlang's: control characters, space, and U+0080..U+00A0) and % comments.
    void skip_space() {
        while (!at_end()) {
            if (peek() == '%') {
                while (!at_end() && peek() != '\n') ++pos_;
                continue;
            }
            size_t p = pos_;
            if (!white(code_point_at(p))) return;
            pos_ = p;
        }
    }

    // A '.' that ends a term: followed by whitespace, a comment or the end.
    bool dot_end() const {
        if (peek() != '.') return false;
        if (pos_ + 1 >= s_.size() || peek(1) == '%') return true;
        size_t p = pos_ + 1;
        return white(code_point_at(p));
    }
    void skip_dot() { ++pos_; }

    bool fail(size_t at, std::string msg) {
        if (msg_.empty()) {
            msg_ = std::move(msg);
            err_at_ = at;
        }
        return false;
    }
    bool fail_here(std::string msg) { return fail(pos_, std::move(msg)); }

    // Dispatches on the first character. Kept small, with the work in functions that
    // are not inlined, so that 1000 levels of nesting fit the stack even under ASan.
    bool term(Term& out, size_t depth) {
        skip_space();
        int c = peek();
        switch (c) {
            case -1: return fail_here("expected a term, found the end of the text");
            case '{': return tuple(out, depth);
            case '[': return list(out, depth);
            case '#': return map(out, depth);
            case '<':
                if (peek(1) == '<') return binary(out);
                return fail_here("expected a term, found '<'");
            case '"': return string_term(out);
            case '\'': return quoted_atom(out);
            default: break;
        }
        if (c == '-' || c == '+' || c == '$' || (c >= '0' && c <= '9')) return number_term(out);
        return name_term(out);
    }

private:
    // What stands at the current position, for messages.
    std::string found() const {
        if (at_end()) return "the end of the text";
        size_t p = pos_;
        uint32_t c = code_point_at(p);
        if (c < ' ' || c == 127) return "character " + std::to_string(c);
        if (c >= 0x80 && p - pos_ == 1) return "byte " + std::to_string(c) + " (not UTF-8)";
        return "'" + std::string(s_.substr(pos_, p - pos_)) + "'";
    }

    uint32_t code_point_at(size_t& p) const { return erl_chars::next_code_point(s_, p); }

    [[gnu::noinline]] bool string_term(Term& out) {
        std::vector<uint32_t> chars;
        if (!string_literal(chars)) return false;
        std::vector<Term> items;
        items.reserve(chars.size());
        for (uint32_t ch : chars) items.emplace_back(int64_t{ch});
        out = Term::list(std::move(items));
        return true;
    }

    [[gnu::noinline]] bool number_term(Term& out) {
        Number n;
        if (!number(n)) return false;
        out = n.is_float ? Term(n.f) : std::move(n.i);
        return true;
    }

    // An unquoted atom, or a helpful error for a variable or a stray character.
    [[gnu::noinline]] bool name_term(Term& out) {
        size_t start = pos_, p = pos_;
        uint32_t cp = code_point_at(p);
        if (s_.substr(pos_, 3) == "fun" && !erl_chars::atom_char(code_point_after(pos_ + 3))) return fun(out);
        if (erl_chars::atom_start(cp)) return bare_atom(out);
        if (erl_chars::variable_start(cp)) {
            size_t q = pos_;
            std::string name;
            while (q < s_.size()) {
                size_t r = q;
                uint32_t ch = code_point_at(r);
                if (!erl_chars::atom_char(ch)) break;
                append_utf8(name, ch);
                q = r;
            }
            return fail(start, "variables are not terms; quote an atom that starts with a capital or '_': '" +
                                   name + "'");
        }
        return fail_here("expected a term, found " + found());
    }

    uint32_t code_point_after(size_t p) const { return p < s_.size() ? code_point_at(p) : 0; }

    // fun Module:Function/Arity, the only fun with a literal syntax. Its atoms may be
    // reserved words, as erlang:fun_to_list/1 writes them bare (fun erlang:'if'/0
    // prints as fun erlang:if/0).
    [[gnu::noinline]] bool fun(Term& out) {
        pos_ += 3;
        Term module, function;
        skip_space();
        if (!fun_atom(module, "fun")) return false;
        skip_space();
        if (peek() != ':')
            return fail_here(
                "expected ':' in fun Module:Function/Arity (a local fun or a closure is "
                "no literal term)");
        ++pos_;
        skip_space();
        if (!fun_atom(function, "':'")) return false;
        skip_space();
        if (peek() != '/') return fail_here("expected '/' and the arity in fun Module:Function/Arity");
        ++pos_;
        skip_space();
        uint64_t arity = 0;
        size_t digits_at = pos_;
        while (peek() >= '0' && peek() <= '9' && arity <= 255)
            arity = arity * 10 + uint64_t(s_[pos_++] - '0');
        if (pos_ == digits_at) return fail_here("expected the arity (0 to 255) after '/'");
        if (arity > 255) return fail(digits_at, "a fun's arity must be from 0 to 255");
        out = export_fun(module.atom_name(), function.atom_name(), uint8_t(arity));
        return true;
    }

    bool fun_atom(Term& out, const char* after) {
        if (peek() == '\'') return quoted_atom(out);
        size_t p = pos_;
        if (at_end() || !erl_chars::atom_start(code_point_at(p)))
            return fail_here(std::string("expected an atom after ") + after + ", found " + found());
        return bare_atom(out, true);
    }

    // Only non-empty containers count towards the depth, as in the codec, so that a
    // term it decodes prints to text that parses.
    bool enter(size_t depth, size_t open) {
        if (depth >= kMaxDepth)
            return fail(open, "terms nested deeper than " + std::to_string(kMaxDepth) + " levels");
        return true;
    }

    [[gnu::noinline]] bool tuple(Term& out, size_t depth) {
        size_t open = pos_++;  // {
        std::vector<Term> items;
        skip_space();
        if (peek() == '}') {
            ++pos_;
            out = Term::tuple({});
            return true;
        }
        if (!enter(depth, open)) return false;
        for (;;) {
            Term t;
            if (!term(t, depth + 1)) return false;
            items.push_back(std::move(t));
            skip_space();
            if (peek() == ',') {
                ++pos_;
            } else if (peek() == '}') {
                ++pos_;
                out = Term::tuple(std::move(items));
                return true;
            } else {
                return fail_here("expected ',' or '}' after tuple element");
            }
        }
    }

    [[gnu::noinline]] bool list(Term& out, size_t depth) {
        size_t open = pos_++;  // [
        List l;
        skip_space();
        if (peek() == ']') {
            ++pos_;
            out = Term(std::move(l));
            return true;
        }
        if (!enter(depth, open)) return false;
        for (;;) {
            Term t;
            if (!term(t, depth + 1)) return false;
            l.items.push_back(std::move(t));
            skip_space();
            if (peek() == ',') {
                ++pos_;
            } else if (peek() == '|') {
                ++pos_;
                Term tail;
                if (!term(tail, depth + 1)) return false;
                skip_space();
                if (peek() != ']') return fail_here("expected ']' after list tail");
                ++pos_;
                // [a|[b|c]] is [a,b|c] and [a|[]] is [a]: keep one canonical form.
                if (tail.kind() == Term::Kind::List) {
                    auto& tl = std::get<List>(tail.value());
                    for (auto& e : tl.items) l.items.push_back(std::move(e));
                    l.improper = tl.improper;
                } else {
                    l.items.push_back(std::move(tail));
                    l.improper = true;
                }
                out = Term(std::move(l));
                return true;
            } else if (peek() == ']') {
                ++pos_;
                out = Term(std::move(l));
                return true;
            } else {
                return fail_here("expected ',', '|' or ']' after list element");
            }
        }
    }

    [[gnu::noinline]] bool map(Term& out, size_t depth) {
        size_t open = pos_++;  // #
        skip_space();
        if (s_.substr(pos_, 4) == "Fun<")
            return fail(open, "#Fun<...> is how Erlang shows a closure; a closure is no literal term");
        if (peek() != '{') return fail_here("expected '{' after '#'");
        ++pos_;
        Map m;
        skip_space();
        if (peek() != '}') {
            if (!enter(depth, open)) return false;
            for (;;) {
                Term k, v;
                if (!term(k, depth + 1)) return false;
                skip_space();
                if (peek() == ':' && peek(1) == '=')
                    return fail_here("':=' only updates an existing map; a map literal uses '=>'");
                if (peek() != '=' || peek(1) != '>') return fail_here("expected '=>' after map key");
                pos_ += 2;
                if (!term(v, depth + 1)) return false;
                m.pairs.emplace_back(std::move(k), std::move(v));
                skip_space();
                if (peek() == ',') {
                    ++pos_;
                } else if (peek() == '}') {
                    break;
                } else {
                    return fail_here("expected ',' or '}' after map value");
                }
            }
        }
        ++pos_;  // }
        out = Term(canonical(std::move(m)));
        return true;
    }

    // Erlang's key order, and a repeated key keeps its last value.
    [[gnu::noinline]] static Map canonical(Map m) {
        std::stable_sort(m.pairs.begin(), m.pairs.end(),
                         [](const auto& a, const auto& b) { return compare_exact(a.first, b.first) < 0; });
        Map unique;
        for (auto& kv : m.pairs) {
            if (!unique.pairs.empty() && compare_exact(unique.pairs.back().first, kv.first) == 0)
                unique.pairs.back() = std::move(kv);
            else
                unique.pairs.push_back(std::move(kv));
        }
        return unique;
    }

    // --- characters, strings and atoms ---------------------------------------------

    // After a backslash (pos_ at the character after it): one escape, as Erlang reads it.
    bool escape(uint32_t& out, size_t backslash) {
        if (at_end()) return fail(backslash, "unfinished escape sequence");
        int c = peek();
        if (c >= '0' && c <= '7') {
            uint32_t v = 0;
            for (int k = 0; k < 3 && peek() >= '0' && peek() <= '7'; ++k)
                v = v * 8 + uint32_t(s_[pos_++] - '0');
            out = v;
            return true;
        }
        if (c == 'x') {
            ++pos_;
            if (peek() == '{') {
                ++pos_;
                uint64_t v = 0;
                size_t n = 0;
                while (digit_value(peek()) < 16) {
                    v = v * 16 + uint64_t(digit_value(s_[pos_++]));
                    if (v > 0x10FFFF) return fail(backslash, "character code in \\x{...} is above 10FFFF");
                    ++n;
                }
                if (n == 0 || peek() != '}')
                    return fail_here("expected hexadecimal digits and '}' in \\x{...}");
                ++pos_;
                out = uint32_t(v);
                return true;
            }
            if (digit_value(peek()) < 16 && digit_value(peek(1)) < 16) {
                out = uint32_t(digit_value(peek()) * 16 + digit_value(peek(1)));
                pos_ += 2;
                return true;
            }
            return fail_here("expected two hexadecimal digits or '{' after \\x");
        }
        if (c == '^') {
            ++pos_;
            if (at_end()) return fail(backslash, "unfinished escape sequence");
            out = code_point_at(pos_) & 31;
            return true;
        }
        static constexpr std::pair<char, uint32_t> named[] = {
            {'b', 8}, {'d', 127}, {'e', 27}, {'f', 12}, {'n', 10}, {'r', 13}, {'s', 32}, {'t', 9}, {'v', 11}};
        for (auto [k, v] : named)
            if (c == k) {
                ++pos_;
                out = v;
                return true;
            }
        out = code_point_at(pos_);  // any other character stands for itself
        return true;
    }

    // Characters up to the closing `quote` (pos_ at the opening one).
    bool quoted(char quote, std::vector<uint32_t>& out, const char* what) {
        size_t open = pos_++;
        for (;;) {
            if (at_end()) return fail(open, std::string("unterminated ") + what);
            if (peek() == quote) {
                ++pos_;
                return true;
            }
            if (peek() == '\\') {
                size_t bs = pos_++;
                uint32_t ch;
                if (!escape(ch, bs)) return false;
                out.push_back(ch);
            } else {
                out.push_back(code_point_at(pos_));
            }
        }
    }

    // "..." with any adjacent "..." appended, as Erlang joins them.
    bool string_literal(std::vector<uint32_t>& out) {
        for (;;) {
            if (!quoted('"', out, "string")) return false;
            size_t save = pos_;
            skip_space();
            if (peek() != '"') {
                pos_ = save;
                return true;
            }
        }
    }

    bool make_atom(size_t start, const std::vector<uint32_t>& chars, Term& out) {
        if (chars.size() > kMaxAtomChars)
            return fail(start, "atom longer than " + std::to_string(kMaxAtomChars) + " characters");
        std::string name;
        for (uint32_t c : chars) {
            if (c >= 0xD800 && c <= 0xDFFF) return fail(start, "atom contains a UTF-16 surrogate");
            append_utf8(name, c);
        }
        out = Term::atom(name);
        return true;
    }

    [[gnu::noinline]] bool quoted_atom(Term& out) {
        size_t start = pos_;
        std::vector<uint32_t> chars;
        if (!quoted('\'', chars, "quoted atom")) return false;
        return make_atom(start, chars, out);
    }

    bool bare_atom(Term& out, bool reserved_ok = false) {
        size_t start = pos_;
        std::vector<uint32_t> chars;
        while (!at_end()) {
            size_t p = pos_;
            uint32_t c = code_point_at(p);
            if (!erl_chars::atom_char(c)) break;
            chars.push_back(c);
            pos_ = p;
        }
        std::string_view text = s_.substr(start, pos_ - start);
        if (!reserved_ok && erl_chars::reserved_word(text))
            return fail(start,
                        "'" + std::string(text) + "' is a reserved word; quote it to use it as an atom");
        return make_atom(start, chars, out);
    }

    // --- numbers -----------------------------------------------------------------------

    // Digits of `base`, single underscores allowed between them (1_000).
    void digits(unsigned base, std::vector<uint8_t>& out, std::string* text = nullptr) {
        while (!at_end()) {
            int d = digit_value(peek());
            if (unsigned(d) < base) {
                out.push_back(uint8_t(d));
                if (text) text->push_back(char(peek()));
                ++pos_;
            } else if (peek() == '_' && !out.empty() && unsigned(digit_value(peek(1))) < base) {
                ++pos_;
            } else {
                break;
            }
        }
    }

    bool number(Number& out) {
        size_t start = pos_;
        bool negative = false;
        if (peek() == '-' || peek() == '+') {
            negative = peek() == '-';
            ++pos_;
            skip_space();  // Erlang reads "- 1" as -1
            if (peek() != '$' && !(peek() >= '0' && peek() <= '9'))
                return fail_here(std::string("expected a number after '") + (negative ? '-' : '+') + "'");
        }
        if (peek() == '$') {
            size_t dollar = pos_++;
            if (at_end()) return fail(dollar, "expected a character after '$'");
            uint32_t c;
            if (peek() == '\\') {
                size_t bs = pos_++;
                if (!escape(c, bs)) return false;
            } else {
                c = code_point_at(pos_);
            }
            out.i = Term(negative ? -int64_t(c) : int64_t(c));
            return true;
        }
        size_t digits_at = pos_;
        std::vector<uint8_t> ds;
        std::string int_text;
        digits(10, ds, &int_text);
        if (peek() == '#') {
            // Base#Digits
            unsigned base = 0;
            for (uint8_t d : ds) {
                base = base * 10 + d;
                if (base > 36) break;
            }
            if (base < 2 || base > 36) return fail(digits_at, "the base before '#' must be from 2 to 36");
            ++pos_;
            std::vector<uint8_t> bd;
            digits(base, bd);
            if (bd.empty())
                return fail_here("expected digits of base " + std::to_string(base) + " after '#'");
            if (bd.size() > kMaxDigits) return fail(start, "integer literal too long");
            out.i = integer_from_digits(bd, base, negative);
            return true;
        }
        if (peek() == '.' && peek(1) >= '0' && peek(1) <= '9') {
            ++pos_;
            std::string frac, exp;
            std::vector<uint8_t> fd;
            digits(10, fd, &frac);
            bool exp_neg = false;
            if (peek() == 'e' || peek() == 'E') {
                ++pos_;
                if (peek() == '-' || peek() == '+') {
                    exp_neg = peek() == '-';
                    ++pos_;
                }
                std::vector<uint8_t> ed;
                digits(10, ed, &exp);
                if (ed.empty()) return fail_here("expected the exponent's digits in a float");
            }
            return make_float(start, negative, int_text, frac, exp_neg, exp, out);
        }
        if (ds.size() > kMaxDigits) return fail(start, "integer literal too long");
        out.i = integer_from_digits(ds, 10, negative);
        return true;
    }

    bool make_float(size_t start, bool negative, const std::string& ip, const std::string& fp, bool exp_neg,
                    std::string exp, Number& out) {
        // Bound the exponent's text: anything past 5 digits is out of range either way.
        exp.erase(0, std::min(exp.find_first_not_of('0'), exp.size()));
        if (exp.size() > 6) exp = "999999";
        std::string text = ip + "." + fp;
        if (!exp.empty()) text += std::string("e") + (exp_neg ? "-" : "") + exp;
        double d = 0;
        auto r = std::from_chars(text.data(), text.data() + text.size(), d);
        if (r.ec == std::errc::result_out_of_range) {
            // Underflow reads as 0.0, as in Erlang; overflow is an error.
            std::string all = ip + fp;
            size_t first = all.find_first_not_of('0');
            long mag = first == std::string::npos ? -1 : long(ip.size()) - 1 - long(first);
            if (!exp.empty()) mag += (exp_neg ? -1 : 1) * std::stol(exp);
            if (mag >= 0) return fail(start, "float out of range");
            d = 0;
        } else if (r.ec != std::errc() || r.ptr != text.data() + text.size()) {
            return fail(start, "malformed float");
        }
        out.is_float = true;
        out.f = negative ? -d : d;
        return true;
    }

    // --- binaries ------------------------------------------------------------------------

    [[gnu::noinline]] bool binary(Term& out) {
        pos_ += 2;  // <<
        BitWriter w;
        skip_space();
        if (peek() == '>' && peek(1) == '>') {
            pos_ += 2;
            out = Term::binary("");
            return true;
        }
        for (;;) {
            if (!segment(w)) return false;
            skip_space();
            if (peek() == ',') {
                ++pos_;
            } else if (peek() == '>' && peek(1) == '>') {
                pos_ += 2;
                break;
            } else {
                return fail_here("expected ',' or '>>' after binary segment");
            }
        }
        unsigned bits = unsigned(w.bits() % 8);
        if (bits == 0)
            out = Term::binary(w.take());
        else
            out = Term(BitBinary{w.take(), uint8_t(bits)});
        return true;
    }

    // One segment: Value[:Size][/Type-Specifiers].
    bool segment(BitWriter& w) {
        skip_space();
        size_t at = pos_;
        std::vector<uint32_t> chars;
        bool is_string = false;
        Number n;
        if (peek() == '"') {
            if (!string_literal(chars)) return false;
            is_string = true;
        } else if (peek() == '-' || peek() == '+' || peek() == '$' || (peek() >= '0' && peek() <= '9')) {
            if (!number(n)) return false;
        } else {
            return fail_here("expected a string, character or number in a binary");
        }
        SegSpec spec;
        skip_space();
        if (peek() == ':') {
            ++pos_;
            skip_space();
            if (!small_uint(spec.size, "expected a size after ':'")) return false;
            spec.has_size = true;
            skip_space();
        }
        if (peek() == '/') {
            ++pos_;
            if (!type_specifiers(spec)) return false;
        }
        if (is_string) {
            for (uint32_t c : chars) {
                Number cn;
                cn.i = Term(int64_t{c});
                if (!emit(w, cn, spec, at)) return false;
            }
            return true;
        }
        return emit(w, n, spec, at);
    }

    bool small_uint(uint64_t& v, const char* expected) {
        if (!(peek() >= '0' && peek() <= '9')) return fail_here(expected);
        size_t at = pos_;
        v = 0;
        while (peek() >= '0' && peek() <= '9') {
            v = v * 10 + uint64_t(peek() - '0');
            ++pos_;
            if (v > kMaxBinaryBits) return fail(at, "binary segment too large");
        }
        return true;
    }

    bool type_specifiers(SegSpec& spec) {
        for (;;) {
            skip_space();
            size_t at = pos_;
            std::string name;
            while ((peek() >= 'a' && peek() <= 'z') || (!name.empty() && peek() >= '0' && peek() <= '9'))
                name.push_back(char(s_[pos_++]));
            using T = SegSpec::Type;
            if (name == "integer")
                spec.type = T::Integer;
            else if (name == "float")
                spec.type = T::Float;
            else if (name == "utf8")
                spec.type = T::Utf8;
            else if (name == "utf16")
                spec.type = T::Utf16;
            else if (name == "utf32")
                spec.type = T::Utf32;
            else if (name == "signed" || name == "unsigned") {
                // Only matters when reading a binary; writing is the same.
            } else if (name == "big")
                spec.little = false;
            else if (name == "little")
                spec.little = true;
            else if (name == "native")
                spec.little = std::endian::native == std::endian::little;
            else if (name == "unit") {
                skip_space();
                if (peek() != ':') return fail_here("expected ':' after unit");
                ++pos_;
                skip_space();
                if (!small_uint(spec.unit, "expected a number after unit:")) return false;
                if (spec.unit < 1 || spec.unit > 256) return fail(at, "unit must be from 1 to 256");
                spec.has_unit = true;
            } else if (name.empty()) {
                return fail_here("expected a type specifier after '/'");
            } else {
                return fail(at,
                            "unsupported binary type specifier '" + name +
                                "' (supported: integer, float, utf8, utf16, utf32, signed, unsigned, big, "
                                "little, native, unit:N)");
            }
            skip_space();
            if (peek() != '-') return true;
            ++pos_;
        }
    }

    bool emit(BitWriter& w, const Number& n, const SegSpec& spec, size_t at) {
        using T = SegSpec::Type;
        if (spec.type == T::Utf8 || spec.type == T::Utf16 || spec.type == T::Utf32) {
            if (spec.has_size || spec.has_unit) return fail(at, "a utf segment takes no size or unit");
            if (n.is_float || !n.i.is_int() || n.i.as_int() < 0 || n.i.as_int() > 0x10FFFF ||
                (n.i.as_int() >= 0xD800 && n.i.as_int() <= 0xDFFF))
                return fail(at, "a utf segment needs a Unicode code point");
            uint32_t c = uint32_t(n.i.as_int());
            std::string units;
            if (spec.type == T::Utf8) {
                append_utf8(units, c);
                for (char b : units) w.put_byte(uint8_t(b));
                return true;
            }
            std::vector<uint32_t> words;
            size_t width = spec.type == T::Utf16 ? 2 : 4;
            if (spec.type == T::Utf16 && c >= 0x10000) {
                words = {0xD800 + ((c - 0x10000) >> 10), 0xDC00 + ((c - 0x10000) & 0x3FF)};
            } else {
                words = {c};
            }
            for (uint32_t v : words)
                for (size_t k = 0; k < width; ++k) {
                    size_t shift = spec.little ? 8 * k : 8 * (width - 1 - k);
                    w.put_byte(uint8_t(v >> shift));
                }
            return true;
        }
        if (spec.type == T::Float) {
            uint64_t bits = (spec.has_size ? spec.size : 64) * spec.unit;
            double d = n.is_float ? n.f : integer_as_double(n.i);
            if (bits == 64) {
                uint64_t u;
                std::memcpy(&u, &d, 8);
                put_le_bytes(w, to_le(u, 8), 64, spec.little);
            } else if (bits == 32) {
                float f = float(d);
                uint32_t u;
                std::memcpy(&u, &f, 4);
                put_le_bytes(w, to_le(u, 4), 32, spec.little);
            } else {
                return fail(at, "a float segment must be 32 or 64 bits");
            }
            return true;
        }
        if (n.is_float) return fail(at, "a float in a binary needs /float");
        uint64_t bits = (spec.has_size ? spec.size : 8) * spec.unit;
        if (bits > kMaxBinaryBits || w.bits() + bits > kMaxBinaryBits) return fail(at, "binary too large");
        if (spec.little && bits % 8 != 0 && bits > 8)
            return fail(at, "a little-endian segment must be a whole number of bytes");
        // Two's complement of the value, cut to `bits` as Erlang does (<<300>> is <<44>>).
        size_t nbytes = size_t((bits + 7) / 8);
        std::string le;
        bool negative = false;
        if (n.i.is_int()) {
            int64_t v = n.i.as_int();
            negative = v < 0;
            le = to_le(negative ? uint64_t(0) - uint64_t(v) : uint64_t(v), 8);
        } else {
            const auto& b = std::get<BigInt>(n.i.value());
            negative = b.negative;
            le = b.magnitude;
        }
        le.resize(nbytes, '\0');
        if (negative) {
            unsigned carry = 1;
            for (auto& ch : le) {
                unsigned v = (~static_cast<unsigned char>(ch) & 0xFF) + carry;
                ch = char(v & 0xFF);
                carry = v >> 8;
            }
        }
        put_le_bytes(w, le, bits, spec.little);
        return true;
    }

    static double integer_as_double(const Term& t) {
        if (t.is_int()) return double(t.as_int());
        const auto& b = std::get<BigInt>(t.value());
        double d = 0;
        for (size_t i = b.magnitude.size(); i-- > 0;)
            d = d * 256 + static_cast<unsigned char>(b.magnitude[i]);
        return b.negative ? -d : d;
    }

    static std::string to_le(uint64_t v, size_t n) {
        std::string s(n, '\0');
        for (size_t k = 0; k < n; ++k) s[k] = char((v >> (8 * k)) & 0xFF);
        return s;
    }

    // Writes the low `bits` bits of a little-endian value, most significant first
    // (or whole bytes in reverse when `little`).
    static void put_le_bytes(BitWriter& w, const std::string& le, uint64_t bits, bool little) {
        auto byte = [&](size_t k) { return static_cast<unsigned char>(le[k]); };
        size_t whole = size_t(bits / 8);
        if (little && bits % 8 == 0) {
            for (size_t k = 0; k < whole; ++k) w.put_byte(byte(k));
            return;
        }
        for (unsigned i = unsigned(bits % 8); i-- > 0;) w.put_bit((byte(whole) >> i) & 1);
        for (size_t k = whole; k-- > 0;) w.put_byte(byte(k));
    }

    std::string_view s_;
    size_t pos_ = 0;
    std::string msg_;
    size_t err_at_ = 0;
};

}  // namespace

ParseError parse(std::string_view text, Term& out) {
    Parser p(text);
    Term t;
    if (p.term(t, 0)) {
        p.skip_space();
        if (p.dot_end()) {
            p.skip_dot();
            p.skip_space();
        }
        if (p.at_end())
            out = std::move(t);
        else
            p.fail_here("expected the end of the text after the term");
    }
    return p.error();
}

ParseError parse_dotted(std::string_view text, std::vector<Term>& out) {
    Parser p(text);
    for (;;) {
        p.skip_space();
        if (p.at_end()) break;
        Term t;
        if (!p.term(t, 0)) break;
        p.skip_space();
        if (!p.dot_end()) {
            p.fail_here(p.peek() == '.' ? "expected whitespace after the '.' that ends a term"
                                        : "expected '.' after the term");
            break;
        }
        p.skip_dot();
        out.push_back(std::move(t));
    }
    return p.error();
}

}  // namespace bert
