// printer.cc: Term -> Erlang text, byte for byte what OTP 25's io_lib:print(T, 1, Inf, -1)
// (~p on one line) writes, encoded as UTF-8. It must never format past its byte budget: a
// cut print stops as soon as the budget is spent, however big the term.
//
// The rules of ~p (latin-1 mode, OTP 25), found by comparing with erl (tests/diff):
// - floats: the shortest digits that read back exactly; written fixed ("123.0",
//   "0.001") when that is no longer than the scientific form ("1.0e3", "1.2345e-4";
//   a tie goes to fixed), except that |x| >= 2^53 is always scientific.
// - strings: a proper list of characters 32..126, 160..255 and \n \r \t \v \b \f \e
//   prints as "..."; inside, " and \ and those seven are escaped. Binaries the same
//   way as <<"...">>, else as bytes <<1,2>>.
// - atoms: bare when they start with a-z or ß..ÿ (not ÷), go on with letters
//   (A-Z, a-z, À..ÿ but × and ÷), digits, _ and @, and are not reserved words;
//   else quoted, with \' \\ \n.. \e, \d for 127, \OOO for other controls and
//   128..159, \x{HEX} beyond 255, and latin-1 letters as they are.
#include "bert/printer.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <string_view>

#include "bert/erl_chars.h"

namespace bert {

namespace {

using erl_chars::next_code_point;

// Appends to the caller's string and stops taking text once one byte more than the
// budget has arrived, which is how it knows the text had to be cut.
class Sink {
public:
    Sink(std::string& out, size_t max_bytes)
        : out_(out),
          start_(out.size()),
          cap_(max_bytes == 0 ? std::numeric_limits<size_t>::max() : max_bytes + 1) {}

    bool full() const { return full_; }
    bool limited() const { return cap_ != std::numeric_limits<size_t>::max(); }
    // How many more bytes fit before the text is known to be cut.
    size_t room() const { return full_ ? 0 : cap_ - (out_.size() - start_); }

    void put(char c) {
        if (full_) return;
        out_.push_back(c);
        if (out_.size() - start_ >= cap_) full_ = true;
    }
    void put(std::string_view s) {
        if (full_) return;
        size_t r = room();
        if (s.size() >= r) {
            out_.append(s.substr(0, r));
            full_ = true;
        } else {
            out_.append(s);
        }
    }
    // A code point 0..255 (a latin-1 character) as UTF-8.
    void put_latin1(unsigned c) {
        if (c < 0x80) {
            put(char(c));
        } else {
            char b[2] = {char(0xC0 | (c >> 6)), char(0x80 | (c & 0x3F))};
            put(std::string_view(b, 2));
        }
    }
    void put_uint(uint64_t v) {
        char b[24];
        auto r = std::to_chars(b, b + sizeof b, v);
        put(std::string_view(b, size_t(r.ptr - b)));
    }

    // Cuts an over-long text to at most max_bytes, ending in "...", never inside a
    // UTF-8 sequence.
    void finish(size_t max_bytes) {
        if (!full_ || max_bytes == 0) return;
        if (out_.size() - start_ <= max_bytes && !cut_) return;
        size_t keep = max_bytes >= 3 ? max_bytes - 3 : 0;
        size_t end = start_ + std::min(keep, out_.size() - start_);
        while (end > start_ && (static_cast<unsigned char>(out_[end]) & 0xC0) == 0x80) --end;
        out_.resize(end);
        out_.append(std::string_view("...").substr(0, std::min<size_t>(3, max_bytes)));
    }
    // The text is cut even if what was written so far fits (a part was skipped).
    void cut() {
        cut_ = true;
        full_ = true;
    }

private:
    std::string& out_;
    size_t start_;
    size_t cap_;
    bool full_ = false;
    bool cut_ = false;
};

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

// io_lib:printable_latin1_list's test for one character.
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

// Decimal digits of a magnitude (little-endian base 256), most significant first.
std::string big_decimal(const std::string& mag) {
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

[[gnu::noinline]] void print_big(const BigInt& b, Sink& out) {
    // Conversion is quadratic in the size; when the text is cut anyway and the number
    // cannot fit in what is left, stop here rather than convert megabytes.
    if (out.limited() && b.magnitude.size() > 1024) {
        double digits = double(b.magnitude.size() - 1) * 8 * 0.30102999566398120;
        if (digits >= double(out.room())) return out.cut();
    }
    if (b.negative) out.put('-');
    out.put(big_decimal(b.magnitude));
}

// --- atoms and strings --------------------------------------------------------------

bool atom_needs_quotes(std::string_view name) {
    if (name.empty()) return true;
    size_t i = 0;
    if (!erl_chars::atom_start(next_code_point(name, i))) return true;
    while (i < name.size())
        if (!erl_chars::atom_char(next_code_point(name, i))) return true;
    return erl_chars::reserved_word(name);
}

// One character inside '...' or "..." as ~p escapes it.
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

// --- lists --------------------------------------------------------------------------

// Walks the elements of a list as Erlang sees them: an improper list whose tail is
// itself a list continues into it, so [1|[2|3]] reads as [1,2|3].
class ListWalk {
public:
    explicit ListWalk(const List& l) : cur_(&l) { settle(); }
    // The next element, or null when only the tail (or nothing) is left.
    const Term* next() {
        if (at_tail() || at_end()) return nullptr;
        const Term* t = &cur_->items[i_++];
        settle();
        return t;
    }
    const Term* tail() const { return at_tail() ? &cur_->items[i_] : nullptr; }

private:
    bool at_tail() const { return cur_->improper && i_ + 1 == cur_->items.size(); }
    bool at_end() const { return i_ >= cur_->items.size(); }  // also an (invalid) empty improper list
    // Steps into a tail that is a list, until an element, a real tail or the end.
    void settle() {
        while (at_tail() && cur_->items[i_].kind() == Term::Kind::List) {
            cur_ = &std::get<List>(cur_->items[i_].value());
            i_ = 0;
        }
    }
    const List* cur_;
    size_t i_ = 0;
};

// A list prints as a string when it is proper and all its elements are printable
// latin-1 characters. A cut print only looks as far as it can show.
bool list_is_string(const List& l, size_t look) {
    ListWalk w(l);
    size_t n = 0;
    while (const Term* e = w.next()) {
        if (e->kind() != Term::Kind::Int || !printable_latin1(e->as_int())) return false;
        if (++n >= look) return true;
    }
    return n > 0 && w.tail() == nullptr;
}

bool binary_is_string(std::string_view bytes, size_t look) {
    size_t n = std::min(bytes.size(), look);
    for (size_t i = 0; i < n; ++i)
        if (!printable_latin1(static_cast<unsigned char>(bytes[i]))) return false;
    return true;
}

void print_term(const Term& t, Sink& out);

[[gnu::noinline]] void print_tuple(const std::vector<Term>& items, Sink& out) {
    out.put('{');
    for (size_t i = 0; i < items.size() && !out.full(); ++i) {
        if (i) out.put(',');
        print_term(items[i], out);
    }
    out.put('}');
}

[[gnu::noinline]] void print_list(const List& l, Sink& out) {
    ListWalk probe(l);
    if (probe.tail() != nullptr) return print_term(*probe.tail(), out);  // no elements, only a "tail"
    if (list_is_string(l, out.room())) {
        out.put('"');
        ListWalk w(l);
        while (const Term* e = w.next()) {
            if (out.full()) return;
            put_quoted_char(uint32_t(e->as_int()), '"', out);
        }
        out.put('"');
        return;
    }
    out.put('[');
    ListWalk w(l);
    bool first = true;
    while (const Term* e = w.next()) {
        if (out.full()) return;
        if (!first) out.put(',');
        first = false;
        print_term(*e, out);
    }
    if (const Term* tail = w.tail()) {
        out.put('|');
        print_term(*tail, out);
    }
    out.put(']');
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

[[gnu::noinline]] void print_map(const Map& m, Sink& out) {
    // Erlang keeps maps of up to 32 keys sorted and prints them so. Bigger maps are
    // hash tries whose order bertd cannot recompute; they print sorted too. The codec
    // already keeps pairs sorted, so only a map built in C++ pays for the sort.
    auto less = [&](size_t a, size_t b) { return compare_exact(m.pairs[a].first, m.pairs[b].first) < 0; };
    std::vector<size_t> order(m.pairs.size());
    std::iota(order.begin(), order.end(), size_t{0});
    if (!std::is_sorted(order.begin(), order.end(), less)) std::stable_sort(order.begin(), order.end(), less);
    out.put("#{");
    for (size_t k = 0; k < order.size() && !out.full(); ++k) {
        const auto& kv = m.pairs[order[k]];
        if (k) out.put(',');
        print_term(kv.first, out);
        out.put(" => ");
        print_term(kv.second, out);
    }
    out.put('}');
}

// Erlang shows remote identifiers with a node index only the local VM knows;
// bertd writes the node name in its place: <node.Num.Serial>,
// #Ref<node.Id2.Id1.Id0>, #Port<node.Id>.
[[gnu::noinline]] void print_id(const Term& t, Sink& out) {
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

void print_term(const Term& t, Sink& out) {
    if (out.full()) return;
    switch (t.kind()) {
        case Term::Kind::Int: {
            char b[24];
            auto r = std::to_chars(b, b + sizeof b, t.as_int());
            return out.put(std::string_view(b, size_t(r.ptr - b)));
        }
        case Term::Kind::Big: return print_big(std::get<BigInt>(t.value()), out);
        case Term::Kind::Float: return print_float(t.as_float(), out);
        case Term::Kind::Atom: return print_atom(t.atom_name(), out);
        case Term::Kind::Binary: return print_binary(t.bytes(), out);
        case Term::Kind::Tuple: return print_tuple(t.items(), out);
        case Term::Kind::List: return print_list(std::get<List>(t.value()), out);
        case Term::Kind::Map: return print_map(std::get<Map>(t.value()), out);
        case Term::Kind::Pid:
        case Term::Kind::Ref:
        case Term::Kind::Port: return print_id(t, out);
    }
}

}  // namespace

void print(const Term& t, std::string& out, size_t max_bytes) {
    Sink sink(out, max_bytes);
    print_term(t, sink);
    sink.finish(max_bytes);
}

std::string to_string(const Term& t, size_t max_bytes) {
    std::string s;
    print(t, s, max_bytes);
    return s;
}

}  // namespace bert
