// parse_literals.cc: the numbers and binary literals of the term parser (parser.cc):
// integers of any size and base, floats, and <<...>> segments to the bit. It never
// builds more than kMaxDigits digits or kMaxBinaryBits bits from one literal.
#include <bit>
#include <charconv>
#include <cstdint>
#include <cstring>

#include "bert/erl_chars.h"
#include "bert/parser_impl.h"

namespace bert::detail {

using erl_chars::append_utf8;

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

void Parser::digits(unsigned base, std::vector<uint8_t>& out, std::string* text) {
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

bool Parser::number(Number& out) {
    size_t start = pos_;
    bool negative = false;
    if (peek() == '-' || peek() == '+') {
        negative = peek() == '-';
        ++pos_;
        skip_space();  // Erlang reads "- 1" as -1
        if (peek() != '$' && !(peek() >= '0' && peek() <= '9'))
            return fail_here(std::string("expected a number after '") + (negative ? '-' : '+') + "'");
    }
    if (peek() == '$') return char_number(negative, out);
    size_t digits_at = pos_;
    std::vector<uint8_t> ds;
    std::string int_text;
    digits(10, ds, &int_text);
    if (peek() == '#') return based_number(start, digits_at, ds, negative, out);
    if (peek() == '.' && peek(1) >= '0' && peek(1) <= '9')
        return float_number(start, negative, int_text, out);
    if (ds.size() > kMaxDigits) return fail(start, "integer literal too long");
    out.i = integer_from_digits(ds, 10, negative);
    return true;
}

// $C or $\Escape: the character's code.
bool Parser::char_number(bool negative, Number& out) {
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

// Base#Digits, at the '#' after the base's digits `ds`.
bool Parser::based_number(size_t start, size_t digits_at, const std::vector<uint8_t>& ds, bool negative,
                          Number& out) {
    unsigned base = 0;
    for (uint8_t d : ds) {
        base = base * 10 + d;
        if (base > 36) break;
    }
    if (base < 2 || base > 36) return fail(digits_at, "the base before '#' must be from 2 to 36");
    ++pos_;
    std::vector<uint8_t> bd;
    digits(base, bd);
    if (bd.empty()) return fail_here("expected digits of base " + std::to_string(base) + " after '#'");
    if (bd.size() > kMaxDigits) return fail(start, "integer literal too long");
    out.i = integer_from_digits(bd, base, negative);
    return true;
}

// The fraction and exponent of a float whose integer part `int_text` was read, at the '.'.
bool Parser::float_number(size_t start, bool negative, const std::string& int_text, Number& out) {
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

bool Parser::make_float(size_t start, bool negative, const std::string& ip, const std::string& fp,
                        bool exp_neg, std::string exp, Number& out) {
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

[[gnu::noinline]] bool Parser::binary(Term& out) {
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

bool Parser::segment(BitWriter& w) {
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

bool Parser::small_uint(uint64_t& v, const char* expected) {
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

bool Parser::type_specifiers(SegSpec& spec) {
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
            return fail(at, "unsupported binary type specifier '" + name +
                                "' (supported: integer, float, utf8, utf16, utf32, signed, unsigned, big, "
                                "little, native, unit:N)");
        }
        skip_space();
        if (peek() != '-') return true;
        ++pos_;
    }
}

bool Parser::emit(BitWriter& w, const Number& n, const SegSpec& spec, size_t at) {
    using T = SegSpec::Type;
    if (spec.type == T::Utf8 || spec.type == T::Utf16 || spec.type == T::Utf32)
        return emit_utf(w, n, spec, at);
    if (spec.type == T::Float) return emit_float(w, n, spec, at);
    if (n.is_float) return fail(at, "a float in a binary needs /float");
    return emit_integer(w, n, spec, at);
}

bool Parser::emit_utf(BitWriter& w, const Number& n, const SegSpec& spec, size_t at) {
    using T = SegSpec::Type;
    if (spec.has_size || spec.has_unit) return fail(at, "a utf segment takes no size or unit");
    if (n.is_float || !n.i.is_int() || n.i.as_int() < 0 || n.i.as_int() > 0x10FFFF ||
        (n.i.as_int() >= 0xD800 && n.i.as_int() <= 0xDFFF))
        return fail(at, "a utf segment needs a Unicode code point");
    uint32_t c = uint32_t(n.i.as_int());
    if (spec.type == T::Utf8) {
        std::string units;
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

bool Parser::emit_float(BitWriter& w, const Number& n, const SegSpec& spec, size_t at) {
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

bool Parser::emit_integer(BitWriter& w, const Number& n, const SegSpec& spec, size_t at) {
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

double Parser::integer_as_double(const Term& t) {
    if (t.is_int()) return double(t.as_int());
    const auto& b = std::get<BigInt>(t.value());
    double d = 0;
    for (size_t i = b.magnitude.size(); i-- > 0;) d = d * 256 + static_cast<unsigned char>(b.magnitude[i]);
    return b.negative ? -d : d;
}

std::string Parser::to_le(uint64_t v, size_t n) {
    std::string s(n, '\0');
    for (size_t k = 0; k < n; ++k) s[k] = char((v >> (8 * k)) & 0xFF);
    return s;
}

void Parser::put_le_bytes(BitWriter& w, const std::string& le, uint64_t bits, bool little) {
    auto byte = [&](size_t k) { return static_cast<unsigned char>(le[k]); };
    size_t whole = size_t(bits / 8);
    if (little && bits % 8 == 0) {
        for (size_t k = 0; k < whole; ++k) w.put_byte(byte(k));
        return;
    }
    for (unsigned i = unsigned(bits % 8); i-- > 0;) w.put_bit((byte(whole) >> i) & 1);
    for (size_t k = whole; k-- > 0;) w.put_byte(byte(k));
}

}  // namespace bert::detail
