// parser.cc: Erlang literal-term text -> Term (Ernie .cfg files, bertc arguments), with
// Erlang's own scanning rules: terms, atoms, strings and funs here, numbers and binaries
// in parse_literals.cc. It never evaluates anything, never recurses deeper than kMaxDepth
// and never crashes or stalls on hostile text: every failure is a ParseError.
#include "bert/parser.h"

#include <algorithm>
#include <cstdint>

#include "bert/codec.h"
#include "bert/erl_chars.h"
#include "bert/parser_impl.h"

namespace bert {

std::string ParseError::str() const {
    return std::to_string(line) + ":" + std::to_string(column) + ": " + message;
}

namespace detail {

using erl_chars::append_utf8;

ParseError Parser::error() const {
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

void Parser::skip_space() {
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

bool Parser::dot_end() const {
    if (peek() != '.') return false;
    if (pos_ + 1 >= s_.size() || peek(1) == '%') return true;
    size_t p = pos_ + 1;
    return white(code_point_at(p));
}

bool Parser::fail(size_t at, std::string msg) {
    if (msg_.empty()) {
        msg_ = std::move(msg);
        err_at_ = at;
    }
    return false;
}

bool Parser::term(Term& out, size_t depth) {
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

std::string Parser::found() const {
    if (at_end()) return "the end of the text";
    size_t p = pos_;
    uint32_t c = code_point_at(p);
    if (c < ' ' || c == 127) return "character " + std::to_string(c);
    if (c >= 0x80 && p - pos_ == 1) return "byte " + std::to_string(c) + " (not UTF-8)";
    return "'" + std::string(s_.substr(pos_, p - pos_)) + "'";
}

[[gnu::noinline]] bool Parser::string_term(Term& out) {
    std::vector<uint32_t> chars;
    if (!string_literal(chars)) return false;
    std::vector<Term> items;
    items.reserve(chars.size());
    for (uint32_t ch : chars) items.emplace_back(int64_t{ch});
    out = Term::list(std::move(items));
    return true;
}

[[gnu::noinline]] bool Parser::number_term(Term& out) {
    Number n;
    if (!number(n)) return false;
    out = n.is_float ? Term(n.f) : std::move(n.i);
    return true;
}

[[gnu::noinline]] bool Parser::name_term(Term& out) {
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

[[gnu::noinline]] bool Parser::fun(Term& out) {
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
    while (peek() >= '0' && peek() <= '9' && arity <= 255) arity = arity * 10 + uint64_t(s_[pos_++] - '0');
    if (pos_ == digits_at) return fail_here("expected the arity (0 to 255) after '/'");
    if (arity > 255) return fail(digits_at, "a fun's arity must be from 0 to 255");
    out = export_fun(module.atom_name(), function.atom_name(), uint8_t(arity));
    return true;
}

bool Parser::fun_atom(Term& out, const char* after) {
    if (peek() == '\'') return quoted_atom(out);
    size_t p = pos_;
    if (at_end() || !erl_chars::atom_start(code_point_at(p)))
        return fail_here(std::string("expected an atom after ") + after + ", found " + found());
    return bare_atom(out, true);
}

bool Parser::enter(size_t depth, size_t open) {
    if (depth >= kMaxDepth)
        return fail(open, "terms nested deeper than " + std::to_string(kMaxDepth) + " levels");
    return true;
}

[[gnu::noinline]] bool Parser::tuple(Term& out, size_t depth) {
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

[[gnu::noinline]] bool Parser::list(Term& out, size_t depth) {
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

[[gnu::noinline]] bool Parser::map(Term& out, size_t depth) {
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

[[gnu::noinline]] Map Parser::canonical(Map m) {
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

bool Parser::escape(uint32_t& out, size_t backslash) {
    if (at_end()) return fail(backslash, "unfinished escape sequence");
    int c = peek();
    if (c >= '0' && c <= '7') {
        uint32_t v = 0;
        for (int k = 0; k < 3 && peek() >= '0' && peek() <= '7'; ++k) v = v * 8 + uint32_t(s_[pos_++] - '0');
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
            if (n == 0 || peek() != '}') return fail_here("expected hexadecimal digits and '}' in \\x{...}");
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

bool Parser::quoted(char quote, std::vector<uint32_t>& out, const char* what) {
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

bool Parser::string_literal(std::vector<uint32_t>& out) {
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

bool Parser::make_atom(size_t start, const std::vector<uint32_t>& chars, Term& out) {
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

[[gnu::noinline]] bool Parser::quoted_atom(Term& out) {
    size_t start = pos_;
    std::vector<uint32_t> chars;
    if (!quoted('\'', chars, "quoted atom")) return false;
    return make_atom(start, chars, out);
}

bool Parser::bare_atom(Term& out, bool reserved_ok) {
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
        return fail(start, "'" + std::string(text) + "' is a reserved word; quote it to use it as an atom");
    return make_atom(start, chars, out);
}

}  // namespace detail

using detail::Parser;

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
