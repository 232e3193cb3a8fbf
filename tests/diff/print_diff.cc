// print_diff.cc: the C++ half of the printer's differential test. Reads the records
// print_diff_gen.escript wrote (term_to_binary bytes + OTP's io_lib:print text), and
// checks that bert::print and bert::print_encoded (from the bytes) write the same
// bytes, at every cut too, and that bert::parse reads the text back to the decoded
// term (closures aside: they have no literal syntax). It only reports; it never
// changes the file.
//
// Usage: print_diff FILE   (exit 0 when every record agrees, 1 otherwise)
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>

#include "bert/codec.h"
#include "bert/parser.h"
#include "bert/printer.h"

namespace {

bool read_chunk(const std::string& data, size_t& pos, std::string_view& out) {
    if (data.size() - pos < 4) return false;
    auto b = [&](size_t k) { return uint32_t(static_cast<unsigned char>(data[pos + k])); };
    size_t n = (b(0) << 24) | (b(1) << 16) | (b(2) << 8) | b(3);
    pos += 4;
    if (data.size() - pos < n) return false;
    out = std::string_view(data).substr(pos, n);
    pos += n;
    return true;
}

bool valid_utf8(std::string_view s) {
    for (size_t i = 0; i < s.size();) {
        auto c = static_cast<unsigned char>(s[i]);
        size_t n = c < 0x80             ? 0
                   : (c & 0xE0) == 0xC0 ? 1
                   : (c & 0xF0) == 0xE0 ? 2
                   : (c & 0xF8) == 0xF0 ? 3
                                        : 9;
        if (n == 9 || i + n >= s.size() + (n == 0 ? 1 : 0)) return false;
        for (size_t k = 1; k <= n; ++k)
            if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
        i += n + 1;
    }
    return true;
}

bool has_closure(const bert::Term& t) {
    switch (t.kind()) {
        case bert::Term::Kind::Fun: return !bert::fun_info(std::get<bert::Fun>(t.value()))->exported;
        case bert::Term::Kind::Tuple:
        case bert::Term::Kind::List:
            for (const auto& e : t.items())
                if (has_closure(e)) return true;
            return false;
        case bert::Term::Kind::Map:
            for (const auto& [k, v] : std::get<bert::Map>(t.value()).pairs)
                if (has_closure(k) || has_closure(v)) return true;
            return false;
        default: return false;
    }
}

// Cut output: never longer than asked, ends in "...", still UTF-8, and the same
// from the term and from its bytes.
std::string check_cut(const bert::Term& t, std::string_view bin, const std::string& full, size_t max) {
    std::string cut = bert::to_string(t, max), from_bytes;
    if (bert::print_encoded(bin, from_bytes, max) || from_bytes != cut)
        return "print_encoded cut differently";
    if (full.size() <= max) return cut == full ? "" : "short text changed by the limit";
    if (cut.size() > max) return "cut text longer than the limit";
    if (max >= 3 && cut.compare(cut.size() - 3, 3, "...") != 0) return "cut text does not end in ...";
    if (!valid_utf8(cut)) return "cut text is not UTF-8";
    return "";
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::cerr << "usage: print_diff FILE\n";
        return 2;
    }
    std::ifstream in(argv[1], std::ios::binary);
    std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    size_t pos = 0, count = 0, print_bad = 0, parse_bad = 0, cut_bad = 0;
    uint64_t lcg = 12345;
    auto report = [&](size_t bad, const char* what, size_t i, std::string_view detail) {
        if (bad <= 10) std::cout << what << " #" << i << ": " << detail << "\n";
    };
    while (pos < data.size()) {
        std::string_view bin, text;
        if (!read_chunk(data, pos, bin) || !read_chunk(data, pos, text)) {
            std::cout << "truncated input file at byte " << pos << "\n";
            return 1;
        }
        size_t i = count++;
        bert::Term t;
        if (auto err = bert::decode(bin, t)) {
            report(++print_bad, "DECODE", i, err.message + " for " + std::string(text));
            continue;
        }
        std::string mine = bert::to_string(t), from_bytes;
        if (mine != text)
            report(++print_bad, "PRINT", i, "\n  erlang: " + std::string(text) + "\n  bertd:  " + mine);
        if (auto err = bert::print_encoded(bin, from_bytes); err || from_bytes != text)
            report(++print_bad, "PRINT_ENCODED", i,
                   "\n  erlang: " + std::string(text) + "\n  bertd:  " + from_bytes + " " + err.message);

        bert::Term back;
        if (has_closure(t)) {
            // #Fun<...> has no literal syntax: nothing to read back.
        } else if (auto err = bert::parse(text, back))
            report(++parse_bad, "PARSE", i, err.str() + " in " + std::string(text));
        else if (!(back == t))
            report(++parse_bad, "PARSE", i,
                   "read back differently: " + std::string(text) + " -> " + bert::to_string(back));

        lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
        size_t max = 1 + size_t(lcg >> 33) % (mine.size() + 4);
        std::string why = check_cut(t, bin, mine, max);
        if (!why.empty()) report(++cut_bad, "CUT", i, why + " (max " + std::to_string(max) + ") for " + mine);
    }
    std::cout << count << " terms: " << print_bad << " print mismatches, " << parse_bad
              << " parse mismatches, " << cut_bad << " bad cuts\n";
    return count > 0 && print_bad + parse_bad + cut_bad == 0 ? 0 : 1;
}
