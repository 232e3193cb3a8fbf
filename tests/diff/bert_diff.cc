// bert_diff: the C++ half of the codec's differential test against a real Erlang
// VM (driven by test_codec_diff.py with bert_diff_erl.erl). It only reads and
// writes the files it is given; it never talks to erl itself.
//
//   bert_diff gen SEED COUNT FILE   edge cases then random terms, each written as
//                                   `{Description, "hex of encoding"}.` for erl
//   bert_diff check FILE            decodes the records erl wrote, re-encodes them
//                                   and requires identical bytes and equal terms
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "bert/codec.h"
#include "bert/term.h"

using bert::Term;

namespace {

// --- descriptions: an unambiguous Erlang-readable form of a term ------------
// (independent of bert's printer: erl rebuilds the term from it)

// Bytes go out as a hex string: compact, and cheap for erl to parse.
void describe_bytes(const std::string& bytes, std::string& out) {
    static const char* digits = "0123456789abcdef";
    out += '"';
    for (unsigned char c : bytes) {
        out += digits[c >> 4];
        out += digits[c & 15];
    }
    out += '"';
}

void describe(const Term& t, std::string& out);

void describe_seq(const std::vector<Term>& items, size_t n, std::string& out) {
    out += '[';
    for (size_t i = 0; i < n; ++i) {
        if (i) out += ',';
        describe(items[i], out);
    }
    out += ']';
}

void describe(const Term& t, std::string& out) {
    switch (t.kind()) {
        case Term::Kind::Int: out += "{i," + std::to_string(t.as_int()) + "}"; return;
        case Term::Kind::Big: {
            const auto& b = std::get<bert::BigInt>(t.value());
            out += b.negative ? "{big,1," : "{big,0,";
            describe_bytes(b.magnitude, out);
            out += '}';
            return;
        }
        case Term::Kind::Float: {
            uint64_t bits;
            double d = t.as_float();
            std::memcpy(&bits, &d, sizeof bits);
            out += "{f," + std::to_string(bits) + "}";
            return;
        }
        case Term::Kind::Atom:
            out += "{a,";
            describe_bytes(t.atom_name(), out);
            out += '}';
            return;
        case Term::Kind::Binary:
            out += "{b,";
            describe_bytes(t.bytes(), out);
            out += '}';
            return;
        case Term::Kind::Tuple:
            out += "{t,";
            describe_seq(t.items(), t.size(), out);
            out += '}';
            return;
        case Term::Kind::List: {
            const auto& l = std::get<bert::List>(t.value());
            if (!l.improper && l.items.size() > 16 &&
                std::all_of(l.items.begin(), l.items.end(), [](const Term& e) {
                    return e.is_int() && e.as_int() >= 0 && e.as_int() <= 255;
                })) {
                std::string chars;  // long byte lists, e.g. around STRING_EXT's limit, stay short
                for (const Term& e : l.items) chars.push_back(static_cast<char>(e.as_int()));
                out += "{s,";
                describe_bytes(chars, out);
                out += '}';
                return;
            }
            out += "{l,";
            describe_seq(l.items, l.items.size() - (l.improper ? 1 : 0), out);
            out += ',';
            if (l.improper)
                describe(l.items.back(), out);
            else
                out += "nil";
            out += '}';
            return;
        }
        case Term::Kind::Map: {
            out += "{m,[";
            bool first = true;
            for (const auto& [k, v] : std::get<bert::Map>(t.value()).pairs) {
                if (!first) out += ',';
                first = false;
                out += '{';
                describe(k, out);
                out += ',';
                describe(v, out);
                out += '}';
            }
            out += "]}";
            return;
        }
        case Term::Kind::Pid: {
            const auto& p = std::get<bert::Pid>(t.value());
            out += "{pid,";
            describe_bytes(p.node, out);
            out += "," + std::to_string(p.num) + "," + std::to_string(p.serial) + "," +
                   std::to_string(p.creation) + "}";
            return;
        }
        case Term::Kind::Ref: {
            const auto& r = std::get<bert::Ref>(t.value());
            out += "{ref,";
            describe_bytes(r.node, out);
            out += ",[";
            for (size_t i = 0; i < r.ids.size(); ++i) out += (i ? "," : "") + std::to_string(r.ids[i]);
            out += "]," + std::to_string(r.creation) + "}";
            return;
        }
        case Term::Kind::Port: {
            const auto& p = std::get<bert::Port>(t.value());
            out += "{port,";
            describe_bytes(p.node, out);
            out += "," + std::to_string(p.id) + "," + std::to_string(p.creation) + "}";
            return;
        }
        case Term::Kind::Fun: {
            const auto& f = std::get<bert::Fun>(t.value());
            auto info = bert::fun_info(f);
            if (info && info->exported) {  // erl makes it with erlang:make_fun/3
                out += "{export,";
                describe_bytes(info->module, out);
                out += ',';
                describe_bytes(info->function, out);
                out += "," + std::to_string(info->arity) + "}";
            } else {  // erl reads it from its bytes and checks them against term_to_binary
                out += "{closure,";
                describe_bytes(f.bytes, out);
                out += '}';
            }
            return;
        }
        case Term::Kind::BitBinary: {
            const auto& b = std::get<bert::BitBinary>(t.value());
            out += "{bits,";
            describe_bytes(b.bytes, out);
            out += "," + std::to_string(b.bits) + "}";
            return;
        }
    }
}

// --- random terms ------------------------------------------------------------

class Generator {
public:
    explicit Generator(uint64_t seed) : rng_(seed) {}

    Term term(int depth) {
        if (depth == 0) return leaf();
        uint64_t r = below(100);
        if (r < 10) return Term::tuple(items(depth - 1, below(6)));
        if (r < 20) return Term::list(items(depth - 1, below(6)));
        if (r < 27) {
            auto heads = items(depth - 1, 1 + below(4));
            heads.push_back(term(depth - 1));  // a list tail joins the list, as in Erlang
            return Term(bert::List{std::move(heads), true});
        }
        if (r < 33) return map(depth - 1);
        if (r == 33) return Term::tuple(items(0, 250 + below(20)));
        if (r == 34 && below(10) == 0) {  // rare: around STRING_EXT's length limit
            std::string s;
            for (uint64_t i = 0, n = 65530 + below(10); i < n; ++i)
                s.push_back(static_cast<char>(below(256)));
            return Term::string(s);
        }
        return leaf();
    }

    Term leaf() {
        switch (below(16)) {
            case 0: return Term(static_cast<int64_t>(below(256)));
            case 1: return Term(static_cast<int64_t>(static_cast<int32_t>(rng_())));
            case 2: return Term(static_cast<int64_t>(rng_()));
            case 3: return bignum();
            case 4: return random_float();
            case 5: return Term((static_cast<double>(below(2000001)) - 1000000.0) / 1024.0);
            case 6:
            case 7: return Term::atom(atom_text());
            case 8: return Term::binary(bytes(below(20)));
            case 9: return Term::string(bytes(below(8)));
            case 10: return Term(bert::Pid{node(), u32(), u32(), u32()});
            case 11: {
                std::vector<uint32_t> ids(1 + below(5));
                for (auto& id : ids) id = u32();
                return Term(bert::Ref{node(), ids, u32()});
            }
            case 12: {
                uint64_t id = below(2) ? below(1u << 28) : rng_();
                return Term(bert::Port{node(), id, u32()});
            }
            case 13: return bert::export_fun(atom_text(), atom_text(), static_cast<uint8_t>(below(256)));
            case 14: return closure();
            default: {
                std::string b = bytes(1 + below(6));
                return Term(bert::BitBinary{b, static_cast<uint8_t>(1 + below(7))});
            }
        }
    }

    // A closure as a node would send it, with random fields and free variables
    // (floats among them, for the Ernie form), decoded into its canonical bytes.
    // Index and old uniq stay within a window of 2^31: Erlang orders them by
    // their wrapping 32-bit difference, which is no order at all across a wider
    // range (a map's keys would then sort by the sort's whim); the unit tests
    // hold the wrapped comparison itself.
    Term closure() {
        std::string env;
        uint64_t n = below(4);
        for (uint64_t i = 0; i < n; ++i) env += bert::encode(below(2) ? random_float() : term(1)).substr(1);
        std::string head = bert::encode(Term::atom(atom_text())).substr(1) +
                           bert::encode(Term(int64_t(below(300)))).substr(1) +
                           bert::encode(Term(int64_t(below(1u << 31)) - (1 << 30))).substr(1) +
                           bert::encode(Term(bert::Pid{node(), u32(), u32(), u32()})).substr(1);
        std::string body(1, static_cast<char>(below(256)));
        body += bytes(16);
        for (uint32_t v : {u32() >> 1, static_cast<uint32_t>(n)})
            for (int k = 3; k >= 0; --k) body.push_back(static_cast<char>(v >> (8 * k)));
        body += head + env;
        std::string fun = {char(131), char(112)};
        uint32_t size = static_cast<uint32_t>(body.size() + 4);
        for (int k = 3; k >= 0; --k) fun.push_back(static_cast<char>(size >> (8 * k)));
        Term t;
        if (bert::decode(fun + body, t)) return Term::atom("closure_failed_to_decode");
        return t;
    }

private:
    uint64_t below(uint64_t n) { return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng_); }
    uint32_t u32() { return static_cast<uint32_t>(rng_()); }

    std::vector<Term> items(int depth, uint64_t n) {
        std::vector<Term> v;
        for (uint64_t i = 0; i < n; ++i) v.push_back(term(depth));
        return v;
    }

    std::string bytes(uint64_t n) {
        std::string s;
        for (uint64_t i = 0; i < n; ++i) s.push_back(static_cast<char>(below(256)));
        return s;
    }

    Term bignum() {
        size_t n = below(4) == 0 ? 250 + below(150) : 9 + below(12);
        std::string mag = bytes(n - 1);
        mag.push_back(static_cast<char>(1 + below(255)));
        return Term(bert::BigInt{below(2) == 1, mag});
    }

    Term random_float() {
        uint64_t bits;
        do bits = rng_();
        while (((bits >> 52) & 0x7ff) == 0x7ff);  // no NaN or infinity: Erlang has none
        double d;
        std::memcpy(&d, &bits, sizeof d);
        return Term(d);
    }

    static void put_utf8(std::string& s, uint32_t c) {
        if (c < 0x80) {
            s.push_back(static_cast<char>(c));
        } else if (c < 0x800) {
            s.push_back(static_cast<char>(0xc0 | (c >> 6)));
            s.push_back(static_cast<char>(0x80 | (c & 0x3f)));
        } else if (c < 0x10000) {
            s.push_back(static_cast<char>(0xe0 | (c >> 12)));
            s.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3f)));
            s.push_back(static_cast<char>(0x80 | (c & 0x3f)));
        } else {
            s.push_back(static_cast<char>(0xf0 | (c >> 18)));
            s.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3f)));
            s.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3f)));
            s.push_back(static_cast<char>(0x80 | (c & 0x3f)));
        }
    }

    std::string atom_text() {
        static const uint32_t wide[] = {0x3b1, 0x4e2d, 0x1f600, 0x10ffff, 0xe9, 'a', 0xff, 0x100};
        std::string s;
        switch (below(5)) {
            case 0:
                for (uint64_t i = 0, n = 1 + below(10); i < n; ++i) s.push_back("az_@0"[below(5)]);
                break;
            case 1:
                for (uint64_t i = 0, n = 1 + below(10); i < n; ++i) put_utf8(s, 128 + below(128));
                break;
            case 2:
                for (uint64_t i = 0, n = 1 + below(10); i < n; ++i) put_utf8(s, wide[below(8)]);
                break;
            case 3: {
                uint32_t c = wide[below(8)];
                for (int i = 0; i < 255; ++i) put_utf8(s, c);
                break;
            }
            default: break;
        }
        return s;
    }

    std::string node() {
        static const char* nodes[] = {"a@b", "bertd@localhost", "n1@h", "\xce\xb1@h", "nohost", "\xc3\xa9@h"};
        return nodes[below(6)];
    }

    // Up to 32 distinct keys (beyond 32 Erlang orders keys by hash), given in
    // random order; keys favour mixed integers and floats, which decide order.
    Term map(int depth) {
        uint64_t n = below(4) == 0 ? below(33) : below(6);
        bert::Map m;
        while (m.pairs.size() < n) {
            Term k;
            switch (below(4)) {
                case 0: k = Term(static_cast<int64_t>(below(5))); break;
                case 1: k = Term(static_cast<double>(below(5)) + (below(2) ? 0.5 : 0.0)); break;
                case 2: k = Term::tuple({Term(below(2) ? Term(2) : Term(1.5))}); break;
                default: k = term(depth); break;
            }
            bool dup = false;
            for (const auto& p : m.pairs) dup = dup || bert::compare_exact(p.first, k) == 0;
            if (!dup)
                m.pairs.emplace_back(std::move(k), term(depth));
            else if (below(4) == 0)
                break;  // small key spaces may run out
        }
        return Term(std::move(m));
    }

    std::mt19937_64 rng_;
};

Term big(bool negative, std::string magnitude) { return Term(bert::BigInt{negative, std::move(magnitude)}); }

std::vector<Term> edge_cases() {
    std::vector<Term> v = {Term(0),
                           Term(255),
                           Term(256),
                           Term(-1),
                           Term(INT32_MAX),
                           Term(INT32_MIN),
                           Term(int64_t{INT32_MAX} + 1),
                           Term(int64_t{INT32_MIN} - 1),
                           Term(INT64_MAX),
                           Term(INT64_MIN),
                           big(false, std::string(8, '\xff')),
                           big(true, std::string(8, '\xff')),
                           big(false, std::string("\0\0\0\0\0\0\0\0\1", 9)),
                           big(true, std::string("\0\0\0\0\0\0\0\0\1", 9)),
                           big(false, std::string(255, '\x42')),
                           big(true, std::string(256, '\x42')),
                           big(false, std::string(300, '\0') + "\x01"),
                           Term(0.0),
                           Term(-0.0),
                           Term(1.5),
                           Term(0.1),
                           Term(1e300),
                           Term(-1e-300),
                           Term(4.9406564584124654e-324),
                           Term(1.7976931348623157e308),
                           Term(2.2250738585072014e-308),
                           Term(9007199254740993.0),
                           Term::atom(""),
                           Term::atom("ok"),
                           Term::atom("\xc3\xa9"),
                           Term::atom("\xce\xb1"),
                           Term::atom("\xf0\x9f\x98\x80"),
                           Term::atom(std::string(255, 'a')),
                           Term::binary(""),
                           Term::binary(std::string("\0\xff", 2)),
                           Term::tuple({}),
                           Term::nil(),
                           Term::string("abc"),
                           Term::string(std::string(65535, 'x')),
                           Term::string(std::string(65536, 'x')),
                           Term::list({Term(256)}),
                           Term::list({Term::nil()}),
                           Term(bert::List{{Term(1), Term(2)}, true}),
                           Term(bert::List{{Term(1), Term::binary("t")}, true}),
                           Term(bert::List{{Term(1), Term::nil()}, true}),
                           Term(bert::List{{Term(1), Term::list({Term(2)})}, true}),
                           Term(bert::List{{Term(1), Term(bert::List{{Term(2), Term(3)}, true})}, true}),
                           Term(bert::Map{}),
                           Term(bert::Pid{"a@b", 0, 0, 0}),
                           Term(bert::Pid{"a@b", UINT32_MAX, UINT32_MAX, UINT32_MAX}),
                           Term(bert::Pid{"\xce\xb1@h", 1, 2, 3}),
                           Term(bert::Ref{"a@b", {1, 0, 0}, 1}),
                           Term(bert::Ref{"a@b", {1, 2, 3, 4, 5}, UINT32_MAX}),
                           Term(bert::Port{"a@b", 0x0fffffff, 1}),
                           Term(bert::Port{"a@b", 0x10000000, 1}),
                           Term(bert::Port{"a@b", UINT64_MAX, 1}),
                           bert::complex::dict({{Term::atom("k"), Term::binary("v")}}),
                           bert::export_fun("lists", "reverse", 1),
                           bert::export_fun("", "\xce\xb1", 255),
                           Term(bert::BitBinary{"\x20", 3}),
                           Term(bert::BitBinary{"\x05\xff", 7}),
                           Term::list({Term(1.5), Term::tuple({Term(-0.0), Term(1e-300)})}),
                           bert::complex::time(1255, 295581, 446228)};
    std::string alpha;
    for (int i = 0; i < 255; ++i) alpha += "\xce\xb1";
    v.push_back(Term::atom(alpha));
    v.push_back(Term::tuple(std::vector<Term>(256, Term::atom("x"))));
    // Key order: integers before floats at any depth, refs < ports < pids < tuples ...
    bert::Map m;
    for (Term k : {Term(2),
                   Term(1.5),
                   Term(1),
                   Term(1.0),
                   Term(-1),
                   Term(-1.0),
                   Term(INT64_MAX),
                   big(false, std::string(9, '\x01')),
                   Term(1e30),
                   Term::tuple({Term(2)}),
                   Term::tuple({Term(1.5)}),
                   Term::list({Term(2)}),
                   Term::list({Term(1.5)}),
                   Term(bert::List{{Term(1), Term(2)}, true}),
                   Term::atom("b"),
                   Term::atom("\xc3\xa4"),
                   Term::atom("\xce\xb1"),
                   Term::binary("\x01\x02"),
                   Term::binary("\x02"),
                   Term::nil(),
                   Term(bert::Pid{"a@b", 2, 1, 0}),
                   Term(bert::Pid{"a@b", 1, 2, 0}),
                   Term(bert::Pid{"b@a", 1, 1, 0}),
                   Term(bert::Ref{"a@b", {3, 1, 2}, 1}),
                   Term(bert::Ref{"a@b", {2, 1, 3}, 1}),
                   Term(bert::Ref{"a@a", {9}, 7}),
                   Term(bert::Port{"a@b", 5, 1}),
                   Term(bert::Port{"a@b", 4, 2}),
                   Term(bert::Map{{{Term(2), Term(0)}}}),
                   Term(bert::Map{{{Term(1.5), Term(0)}}})})
        m.pairs.emplace_back(k, Term(static_cast<int64_t>(m.pairs.size())));
    v.push_back(Term(m));
    return v;
}

int gen(uint64_t seed, size_t count, const char* path) {
    std::ofstream out(path, std::ios::binary);
    if (!out) {
        std::cerr << "bert_diff: cannot write " << path << "\n";
        return 2;
    }
    std::vector<Term> terms = edge_cases();
    Generator g(seed);
    while (terms.size() < count) terms.push_back(g.term(static_cast<int>(terms.size() % 5)));
    std::string line;
    for (const Term& t : terms) {
        line.clear();
        line += '{';
        describe(t, line);
        line += ',';
        describe_bytes(bert::encode(t), line);
        line += ',';
        describe_bytes(bert::encode(t, {bert::FloatForm::Ernie}), line);
        line += "}.\n";
        out << line;
    }
    return out ? 0 : 2;
}

std::string hex_window(const std::string& s, size_t at) {
    std::string out;
    size_t from = at > 16 ? at - 16 : 0;
    char buf[4];
    for (size_t i = from; i < s.size() && i < from + 48; ++i) {
        std::snprintf(buf, sizeof buf, "%02x", static_cast<unsigned char>(s[i]));
        out += (i == at ? "[" : " ") + std::string(buf) + (i == at ? "]" : "");
    }
    return out;
}

// Checks one term erl wrote: decode, re-encode to the same bytes, decode again.
std::string check_plain(const std::string& bytes, Term& t) {
    if (auto e = bert::decode(bytes, t))
        return "decode failed at " + std::to_string(e.offset) + ": " + e.message;
    std::string again = bert::encode(t);
    if (again != bytes) {
        size_t at = 0;
        while (at < again.size() && at < bytes.size() && again[at] == bytes[at]) ++at;
        return "re-encoding differs at byte " + std::to_string(at) + "\n  erl:  " + hex_window(bytes, at) +
               "\n  bert: " + hex_window(again, at);
    }
    if (bert::encoded_size(t) != bytes.size()) return "encoded_size differs";
    Term back;
    if (bert::decode(again, back) || !(back == t)) return "round trip changed the term";
    if (auto e = bert::check(bytes)) return "check() refuses what decode() takes: " + e.message;
    return "";
}

// The Ernie form (term_to_binary(T, [{minor_version, 0}])) of the term `t` that
// the plain bytes decoded to: it must decode to `t`, and both encode() and
// rewrite_floats() must write exactly those bytes.
std::string check_ernie(const std::string& ernie, const std::string& plain, const Term& t) {
    Term back;
    if (auto e = bert::decode(ernie, back)) return "Ernie-form decode failed: " + e.message;
    if (!(back == t)) return "Ernie-form bytes decode to another term";
    std::string mine = bert::encode(t, {bert::FloatForm::Ernie});
    if (mine != ernie) {
        size_t at = 0;
        while (at < mine.size() && at < ernie.size() && mine[at] == ernie[at]) ++at;
        return "Ernie-form encoding differs at byte " + std::to_string(at) +
               "\n  erl:  " + hex_window(ernie, at) + "\n  bert: " + hex_window(mine, at);
    }
    if (bert::encoded_size(t, {bert::FloatForm::Ernie}) != ernie.size())
        return "Ernie-form encoded_size differs";
    std::string to_ernie, to_new;
    if (bert::rewrite_floats(plain, bert::FloatForm::Ernie, to_ernie) || to_ernie != ernie)
        return "rewrite_floats to the Ernie form differs from term_to_binary minor_version 0";
    if (bert::rewrite_floats(ernie, bert::FloatForm::New, to_new) || to_new != plain)
        return "rewrite_floats from the Ernie form differs from term_to_binary";
    return "";
}

bool read_chunk(std::istream& in, std::string& out) {
    unsigned char h[4];
    if (!in.read(reinterpret_cast<char*>(h), 4)) return false;
    size_t n = (size_t{h[0]} << 24) | (size_t{h[1]} << 16) | (size_t{h[2]} << 8) | h[3];
    out.resize(n);
    return static_cast<bool>(in.read(out.data(), static_cast<std::streamsize>(n)));
}

int check(const char* path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        std::cerr << "bert_diff: cannot read " << path << "\n";
        return 2;
    }
    size_t n = 0, failures = 0, compressed = 0, ernie = 0;
    char flag;
    std::string bytes, plain;
    while (in.get(flag)) {
        ++n;
        if (!read_chunk(in, bytes) || (flag != 0 && !read_chunk(in, plain))) {
            std::cerr << "record " << n << ": truncated file\n";
            return 2;
        }
        std::string problem;
        Term t;
        if (flag == 0) {
            problem = check_plain(bytes, t);
        } else if (flag == 2) {
            ++ernie;
            problem = check_plain(plain, t);
            if (problem.empty()) problem = check_ernie(bytes, plain, t);
        } else {
            ++compressed;
            problem = check_plain(plain, t);
            Term tc;
            if (problem.empty()) {
                if (auto e = bert::decode(bytes, tc))
                    problem = "compressed decode failed: " + e.message;
                else if (!(tc == t))
                    problem = "compressed term differs from the plain one";
            }
        }
        if (!problem.empty() && ++failures <= 20) std::cout << "record " << n << ": " << problem << "\n";
    }
    std::cout << "checked " << n << " terms (" << compressed << " compressed, " << ernie
              << " in the Ernie form), " << failures << " failures\n";
    return failures ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc == 5 && std::strcmp(argv[1], "gen") == 0)
        return gen(std::strtoull(argv[2], nullptr, 10), std::strtoull(argv[3], nullptr, 10), argv[4]);
    if (argc == 3 && std::strcmp(argv[1], "check") == 0) return check(argv[2]);
    std::cerr << "usage: bert_diff gen SEED COUNT FILE | bert_diff check FILE\n";
    return 2;
}
