// print_text.cc: the pieces of ~p text (numbers, atoms, binaries, bit strings,
// identifiers and funs) that both printers share; see print_text.h for the rules.
// Each writes through the Sink, which never takes text past its budget.
#include "bert/print_text.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "bert/codec.h"
#include "bert/erl_chars.h"

namespace bert::detail {

using erl_chars::next_code_point;

namespace {

// --- character classes, as io_lib decides them in latin-1 mode -------------------

// The control characters ~p shows by name inside strings and quoted atoms.
char named_escape(unsigned c) {
    switch (c) {
        case '\n': return 'n';
        case '\r': return 'r';
        case '\t': return 't';
        case '\v': return 'v';
        case '\b': return 'b';
        case '\f': return 'f';
        case 27: return 'e';
        default: return 0;
    }
}

}  // namespace

bool printable_latin1(int64_t c) {
    return (c >= 32 && c <= 126) || (c >= 160 && c <= 255) || (c >= 0 && c < 32 && named_escape(unsigned(c)));
}

// --- numbers -----------------------------------------------------------------------

[[gnu::noinline]] void print_float(double d, Sink& out) {
    if (std::isnan(d)) return out.put("nan");  // not an Erlang float; never from the wire
    if (std::isinf(d)) return out.put(d < 0 ? "-inf" : "inf");
    if (d == 0) return out.put(std::signbit(d) ? "-0.0" : "0.0");
    // The shortest digits that read back to d (what OTP 25 computes too), then
    // Erlang's choice of layout.
    char buf[64];
    auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
    std::string_view sci(buf, size_t(r.ptr - buf));
    bool neg = sci[0] == '-';
    if (neg) sci.remove_prefix(1);
    size_t epos = sci.find('e');
    std::string digits;
    for (char c : sci.substr(0, epos))
        if (c != '.') digits.push_back(c);
    int exp10 = 0;
    std::from_chars(sci.data() + epos + 1 + (sci[epos + 1] == '+'), sci.data() + sci.size(), exp10);

    // Scientific: D.DDDeX (at least one digit after the point).
    std::string s_form;
    s_form += digits[0];
    s_form += '.';
    s_form += digits.size() > 1 ? std::string_view(digits).substr(1) : std::string_view("0");
    s_form += 'e';
    s_form += std::to_string(exp10);

    // Fixed: the point sits after `place` digits.
    long place = long(exp10) + 1, n = long(digits.size());
    std::string f_form;
    if (place <= 0) {
        f_form = "0." + std::string(size_t(-place), '0') + digits;
    } else if (place < n) {
        f_form = digits.substr(0, size_t(place)) + "." + digits.substr(size_t(place));
    } else {
        f_form = digits + std::string(size_t(place - n), '0') + ".0";
    }
    // OTP 25 writes fixed notation when it is no longer than scientific, but never
    // for magnitudes of 2^53 and above (integers a double may not hold exactly).
    bool fixed = std::fabs(d) < 9007199254740992.0 && f_form.size() <= s_form.size();
    if (neg) out.put('-');
    out.put(fixed ? f_form : s_form);
}

namespace {

// Decimal digits of a magnitude (little-endian base 256), most significant first.
std::string big_decimal(std::string_view mag) {
    std::vector<uint32_t> limbs((mag.size() + 3) / 4, 0);  // little-endian base 2^32
    for (size_t i = 0; i < mag.size(); ++i)
        limbs[i / 4] |= uint32_t(static_cast<unsigned char>(mag[i])) << (8 * (i % 4));
    while (!limbs.empty() && limbs.back() == 0) limbs.pop_back();
    std::vector<uint32_t> chunks;  // base 10^9, least significant first
    while (!limbs.empty()) {
        uint64_t rem = 0;
        for (size_t i = limbs.size(); i-- > 0;) {
            uint64_t cur = (rem << 32) | limbs[i];
            limbs[i] = uint32_t(cur / 1000000000u);
            rem = cur % 1000000000u;
        }
        chunks.push_back(uint32_t(rem));
        while (!limbs.empty() && limbs.back() == 0) limbs.pop_back();
    }
    if (chunks.empty()) return "0";
    std::string s = std::to_string(chunks.back());
    for (size_t i = chunks.size() - 1; i-- > 0;) {
        std::string part = std::to_string(chunks[i]);
        s.append(9 - part.size(), '0');
        s += part;
    }
    return s;
}

}  // namespace

[[gnu::noinline]] void print_big(bool negative, std::string_view magnitude, Sink& out) {
    // Conversion is quadratic in the size; when the text is cut anyway and the number
    // cannot fit in what is left, stop here rather than convert megabytes.
    if (out.limited() && magnitude.size() > 1024) {
        double digits = double(magnitude.size() - 1) * 8 * 0.30102999566398120;
        if (digits >= double(out.room())) return out.cut();
    }
    if (negative) out.put('-');
    out.put(big_decimal(magnitude));
}

// --- atoms and strings --------------------------------------------------------------

namespace {

bool atom_needs_quotes(std::string_view name) {
    if (name.empty()) return true;
    size_t i = 0;
    if (!erl_chars::atom_start(next_code_point(name, i))) return true;
    while (i < name.size())
        if (!erl_chars::atom_char(next_code_point(name, i))) return true;
    return erl_chars::reserved_word(name);
}

}  // namespace

void put_quoted_char(uint32_t c, char quote, Sink& out) {
    if (c == uint32_t(quote) || c == '\\') {
        out.put('\\');
        out.put(char(c));
    } else if (char e = named_escape(c)) {
        out.put('\\');
        out.put(e);
    } else if (c == 127) {
        out.put("\\d");
    } else if (c < 32 || (c >= 128 && c < 160)) {
        char b[4] = {'\\', char('0' + (c >> 6)), char('0' + ((c >> 3) & 7)), char('0' + (c & 7))};
        out.put(std::string_view(b, 4));
    } else if (c > 255) {
        char b[16];
        auto r = std::to_chars(b, b + sizeof b, c, 16);
        out.put("\\x{");
        for (char* p = b; p < r.ptr; ++p) out.put(char(*p >= 'a' ? *p - 'a' + 'A' : *p));
        out.put('}');
    } else {
        out.put_latin1(c);
    }
}

[[gnu::noinline]] void print_atom(std::string_view name, Sink& out) {
    if (!atom_needs_quotes(name)) {
        // Only latin-1 letters get here; re-encoding keeps stray bytes valid UTF-8.
        for (size_t i = 0; i < name.size();) out.put_latin1(next_code_point(name, i));
        return;
    }
    out.put('\'');
    for (size_t i = 0; i < name.size() && !out.full();) put_quoted_char(next_code_point(name, i), '\'', out);
    out.put('\'');
}

bool binary_is_string(std::string_view bytes, size_t look) {
    size_t n = std::min(bytes.size(), look);
    for (size_t i = 0; i < n; ++i)
        if (!printable_latin1(static_cast<unsigned char>(bytes[i]))) return false;
    return true;
}

[[gnu::noinline]] void print_binary(std::string_view bytes, Sink& out) {
    out.put("<<");
    if (binary_is_string(bytes, out.room())) {
        if (!bytes.empty()) {
            out.put('"');
            for (size_t i = 0; i < bytes.size() && !out.full(); ++i)
                put_quoted_char(static_cast<unsigned char>(bytes[i]), '"', out);
            out.put('"');
        }
    } else {
        for (size_t i = 0; i < bytes.size() && !out.full(); ++i) {
            if (i) out.put(',');
            out.put_uint(static_cast<unsigned char>(bytes[i]));
        }
    }
    out.put(">>");
}

// Erlang shows remote identifiers with a node index only the local VM knows;
// bertd writes the node name in its place: <node.Num.Serial>,
// #Ref<node.Id2.Id1.Id0>, #Port<node.Id>.
void print_id(const Term& t, Sink& out) {
    switch (t.kind()) {
        case Term::Kind::Pid: {
            const auto& p = std::get<Pid>(t.value());
            out.put('<');
            out.put(p.node);
            out.put('.');
            out.put_uint(p.num);
            out.put('.');
            out.put_uint(p.serial);
            return out.put('>');
        }
        case Term::Kind::Ref: {
            const auto& r = std::get<Ref>(t.value());
            out.put("#Ref<");
            out.put(r.node);
            for (size_t i = r.ids.size(); i-- > 0;) {
                out.put('.');
                out.put_uint(r.ids[i]);
            }
            return out.put('>');
        }
        case Term::Kind::Port: {
            const auto& p = std::get<Port>(t.value());
            out.put("#Port<");
            out.put(p.node);
            out.put('.');
            out.put_uint(p.id);
            return out.put('>');
        }
        default: return;
    }
}

// --- funs and bit strings --------------------------------------------------------------

namespace {

// The VM's own atom syntax (erl_printf_term.c), which erlang:fun_to_list/1 and so
// ~p use for the atoms of an export: found by comparing with erl (tests/diff).
bool vm_lower(uint32_t c) { return (c >= 'a' && c <= 'z') || (c >= 223 && c <= 255 && c != 247); }
bool vm_id_char(uint32_t c) {
    return vm_lower(c) || (c >= 'A' && c <= 'Z') || (c >= 192 && c <= 222 && c != 215) ||
           (c >= '0' && c <= '9') || c == '_';
}

void print_vm_atom(std::string_view name, Sink& out) {
    bool quote = name.empty();
    for (size_t i = 0; i < name.size() && !quote;) {
        bool first = i == 0;
        uint32_t c = next_code_point(name, i);
        quote = first ? !vm_lower(c) : !vm_id_char(c);
    }
    if (!quote) return out.put(name);
    out.put('\'');
    for (size_t i = 0; i < name.size() && !out.full();) {
        size_t from = i;
        uint32_t c = next_code_point(name, i);
        static constexpr std::string_view named = "btnvfr";  // 8 to 13
        if (c == '\'' || c == '\\') {
            out.put('\\');
            out.put(char(c));
        } else if (c >= 8 && c <= 13) {
            out.put('\\');
            out.put(named[c - 8]);
        } else if (c < 32 || (c >= 128 && c < 160)) {
            char b[4] = {'\\', char('0' + (c >> 6)), char('0' + ((c >> 3) & 7)), char('0' + (c & 7))};
            out.put(std::string_view(b, 4));
        } else {
            out.put(name.substr(from, i - from));
        }
    }
    out.put('\'');
}

}  // namespace

void print_fun(const Fun& f, Sink& out) {
    std::optional<FunInfo> info = fun_info(f);
    if (!info) return out.put("#Fun<?>");  // bytes made by hand that hold no fun
    print_fun_info(*info, out);
}

void print_fun_info(const FunInfo& f, Sink& out) {
    if (f.exported) {
        out.put("fun ");
        print_vm_atom(f.module, out);
        out.put(':');
        print_vm_atom(f.function, out);
        out.put('/');
        return out.put_uint(f.arity);
    }
    out.put("#Fun<");
    out.put(f.module);
    out.put('.');
    out.put_int(f.old_index);
    out.put('.');
    out.put_int(f.old_uniq);
    out.put('>');
}

void print_bits(std::string_view bytes, unsigned bits, Sink& out) {
    out.put("<<");
    for (size_t i = 0; i + 1 < bytes.size() && !out.full(); ++i) {
        out.put_uint(static_cast<unsigned char>(bytes[i]));
        out.put(',');
    }
    if (!bytes.empty()) out.put_uint(static_cast<unsigned char>(bytes.back()) >> (8 - bits));
    out.put(':');
    out.put_uint(bits);
    out.put(">>");
}

}  // namespace bert::detail
