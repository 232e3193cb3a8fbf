// printer.cc: Term -> Erlang text, byte for byte what OTP 25's io_lib:print(T, 1, Inf, -1)
// (~p on one line) writes, encoded as UTF-8 (the rules are in print_text.h). It must never
// format past its byte budget: a cut print stops as soon as the budget is spent, however big
// the term.
#include "bert/printer.h"

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <string_view>

#include "bert/print_text.h"

namespace bert {

namespace {

using namespace detail;

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

void print_term(const Term& t, Sink& out) {
    if (out.full()) return;
    switch (t.kind()) {
        case Term::Kind::Int: return out.put_int(t.as_int());
        case Term::Kind::Big: {
            const auto& b = std::get<BigInt>(t.value());
            return print_big(b.negative, b.magnitude, out);
        }
        case Term::Kind::Float: return print_float(t.as_float(), out);
        case Term::Kind::Atom: return print_atom(t.atom_name(), out);
        case Term::Kind::Binary: return print_binary(t.bytes(), out);
        case Term::Kind::Tuple: return print_tuple(t.items(), out);
        case Term::Kind::List: return print_list(std::get<List>(t.value()), out);
        case Term::Kind::Map: return print_map(std::get<Map>(t.value()), out);
        case Term::Kind::Pid:
        case Term::Kind::Ref:
        case Term::Kind::Port: return print_id(t, out);
        case Term::Kind::Fun: return print_fun(std::get<Fun>(t.value()), out);
        case Term::Kind::BitBinary: {
            const auto& b = std::get<BitBinary>(t.value());
            return print_bits(b.bytes, b.bits, out);
        }
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