// erl_chars.h: the character rules that printer.cc and parser.cc must agree on (which
// atoms need quotes, reserved words, lenient UTF-8 reading), in one place so that what
// one writes the other reads. Internal to src/bert; no state, no allocation.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <string>
#include <string_view>

namespace bert::erl_chars {

// Words the Erlang scanner reserves in OTP 25 (the `maybe` feature is off by default,
// so `maybe` and `else` are plain atoms there).
inline bool reserved_word(std::string_view s) {
    static constexpr std::string_view words[] = {
        "after", "and",  "andalso", "band",   "begin",   "bnot", "bor", "bsl",  "bsr",
        "bxor",  "case", "catch",   "cond",   "div",     "end",  "fun", "if",   "let",
        "not",   "of",   "or",      "orelse", "receive", "rem",  "try", "when", "xor"};
    return std::find(std::begin(words), std::end(words), s) != std::end(words);
}

// An unquoted atom starts with a lowercase latin-1 letter and goes on with latin-1
// letters, digits, '_' and '@' (ª, µ and º are not letters here; × and ÷ never are).
inline bool atom_start(uint32_t c) { return (c >= 'a' && c <= 'z') || (c >= 223 && c <= 255 && c != 247); }
inline bool atom_char(uint32_t c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '@' || (c >= 192 && c <= 255 && c != 215 && c != 247);
}
// A variable starts with an uppercase latin-1 letter or '_'.
inline bool variable_start(uint32_t c) {
    return (c >= 'A' && c <= 'Z') || c == '_' || (c >= 192 && c <= 222 && c != 215);
}

// Decodes the UTF-8 character at `i` and moves `i` past it. A byte that does not start
// a valid, shortest-form sequence stands for itself as a latin-1 character, the way
// Erlang reads a latin-1 file; so any bytes decode.
inline uint32_t next_code_point(std::string_view s, size_t& i) {
    auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
    unsigned c = byte(i);
    size_t n = (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2 : (c & 0xF8) == 0xF0 ? 3 : 0;
    if (n == 0 || i + n >= s.size()) {
        ++i;
        return c;
    }
    uint32_t cp = c & (0x3F >> n);
    for (size_t k = 1; k <= n; ++k) {
        if ((byte(i + k) & 0xC0) != 0x80) {
            ++i;
            return c;
        }
        cp = (cp << 6) | (byte(i + k) & 0x3F);
    }
    static constexpr uint32_t min_for_len[] = {0, 0x80, 0x800, 0x10000};
    if (cp < min_for_len[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
        ++i;
        return c;
    }
    i += n + 1;
    return cp;
}

inline void append_utf8(std::string& s, uint32_t c) {
    if (c < 0x80) {
        s.push_back(char(c));
    } else if (c < 0x800) {
        s.push_back(char(0xC0 | (c >> 6)));
        s.push_back(char(0x80 | (c & 0x3F)));
    } else if (c < 0x10000) {
        s.push_back(char(0xE0 | (c >> 12)));
        s.push_back(char(0x80 | ((c >> 6) & 0x3F)));
        s.push_back(char(0x80 | (c & 0x3F)));
    } else {
        s.push_back(char(0xF0 | (c >> 18)));
        s.push_back(char(0x80 | ((c >> 12) & 0x3F)));
        s.push_back(char(0x80 | ((c >> 6) & 0x3F)));
        s.push_back(char(0x80 | (c & 0x3F)));
    }
}

}  // namespace bert::erl_chars
