// term.cc: Term construction, structural equality, Erlang term order and the BERT
// complex types. No I/O and no encoding here.
#include "bert/term.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>
#include <vector>

#include "bert/wire.h"

namespace bert {

bool Tuple::operator==(const Tuple& o) const { return items == o.items; }
bool List::operator==(const List& o) const { return improper == o.improper && items == o.items; }

Term::Term(BigInt b) {
    while (!b.magnitude.empty() && b.magnitude.back() == '\0') b.magnitude.pop_back();
    if (b.magnitude.size() <= 8) {
        uint64_t m = 0;
        for (size_t i = b.magnitude.size(); i-- > 0;)
            m = (m << 8) | static_cast<unsigned char>(b.magnitude[i]);
        if (!b.negative && m <= uint64_t(INT64_MAX)) {
            v_ = int64_t(m);
            return;
        }
        if (b.negative && m <= uint64_t(INT64_MAX) + 1) {
            v_ = int64_t(-(m - 1)) - 1;
            return;
        }
    }
    v_ = std::move(b);
}

Term::Term(bert::BitBinary b) {
    if (b.bytes.empty() || b.bits == 0 || b.bits >= 8) {  // whole bytes: a binary
        v_ = bert::Binary{std::move(b.bytes)};
        return;
    }
    auto& last = b.bytes.back();
    last = static_cast<char>(static_cast<unsigned char>(last) & (0xff00u >> b.bits));
    v_ = std::move(b);
}

Term Term::string(std::string_view chars) {
    std::vector<Term> items;
    items.reserve(chars.size());
    for (unsigned char c : chars) items.emplace_back(int64_t{c});
    return list(std::move(items));
}

bool Term::is_atom(std::string_view name) const {
    return kind() == Kind::Atom && std::get<bert::Atom>(v_).name == name;
}
bool Term::is_tuple(size_t arity) const {
    return kind() == Kind::Tuple && std::get<bert::Tuple>(v_).items.size() == arity;
}
bool Term::is_nil() const {
    return kind() == Kind::List && std::get<bert::List>(v_).items.empty();
}
bool Term::is_proper_list() const {
    return kind() == Kind::List && !std::get<bert::List>(v_).improper;
}
const std::vector<Term>& Term::items() const {
    if (kind() == Kind::Tuple) return std::get<bert::Tuple>(v_).items;
    return std::get<bert::List>(v_).items;
}
std::vector<Term>& Term::items() {
    if (kind() == Kind::Tuple) return std::get<bert::Tuple>(v_).items;
    return std::get<bert::List>(v_).items;
}

namespace {

// Rank in Erlang's term order; numbers share one rank, nil ranks before lists.
int rank(const Term& t) {
    switch (t.kind()) {
        case Term::Kind::Int:
        case Term::Kind::Big:
        case Term::Kind::Float: return 0;
        case Term::Kind::Atom: return 1;
        case Term::Kind::Ref: return 2;
        case Term::Kind::Fun: return 3;
        case Term::Kind::Port: return 4;
        case Term::Kind::Pid: return 5;
        case Term::Kind::Tuple: return 6;
        case Term::Kind::Map: return 7;
        case Term::Kind::List: return t.is_nil() ? 8 : 9;
        case Term::Kind::Binary:
        case Term::Kind::BitBinary: return 10;
    }
    return 11;
}

template <class T>
int three_way(const T& a, const T& b) {
    return a < b ? -1 : (b < a ? 1 : 0);
}

int cmp(const Term& a, const Term& b, bool exact);

int compare_big_magnitude(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return a.size() < b.size() ? -1 : 1;
    for (size_t i = a.size(); i-- > 0;) {
        auto x = static_cast<unsigned char>(a[i]), y = static_cast<unsigned char>(b[i]);
        if (x != y) return x < y ? -1 : 1;
    }
    return 0;
}

using detail::NumView;

// Integers (small or big) against each other, exactly.
int compare_integers(const NumView& a, const NumView& b) {
    bool ab = a.kind == NumView::Kind::Big, bb = b.kind == NumView::Kind::Big;
    if (!ab && !bb) return three_way(a.i, b.i);
    // A big integer is outside int64_t, so its sign decides against a small one.
    if (ab && !bb) return a.negative ? -1 : 1;
    if (!ab && bb) return b.negative ? 1 : -1;
    if (a.negative != b.negative) return a.negative ? -1 : 1;
    int c = compare_big_magnitude(a.magnitude, b.magnitude);
    return a.negative ? -c : c;
}

constexpr double kTwo63 = 9223372036854775808.0;

// An integer against a finite float, exactly: converting the integer to double
// would call 2^53 + 1 equal to 2^53.
int compare_integer_float(const NumView& i, double d) {
    if (i.kind == NumView::Kind::Int) {
        if (d >= kTwo63) return -1;
        if (d < -kTwo63) return 1;
        double whole = std::trunc(d);
        auto w = static_cast<int64_t>(whole);
        if (i.i != w) return i.i < w ? -1 : 1;
        double frac = d - whole;
        return frac > 0 ? -1 : (frac < 0 ? 1 : 0);
    }
    // Normalised big integers lie outside int64_t, so |i| >= 2^63.
    if (std::fabs(d) < kTwo63 || i.negative != (d < 0)) return i.negative ? -1 : 1;
    // |d| >= 2^63 is a whole number: build its magnitude and compare bytes.
    int e = 0;
    double m = std::frexp(std::fabs(d), &e);
    auto mant = static_cast<uint64_t>(std::ldexp(m, 53));
    int shift = e - 53;
    std::string mag(static_cast<size_t>(shift / 8), '\0');
    unsigned __int128 v = static_cast<unsigned __int128>(mant) << (shift % 8);
    for (; v != 0; v >>= 8) mag.push_back(static_cast<char>(v & 0xff));
    int c = compare_big_magnitude(i.magnitude, mag);
    return i.negative ? -c : c;
}

NumView number_view(const Term& t) {
    NumView v;
    switch (t.kind()) {
        case Term::Kind::Big: {
            const auto& b = std::get<BigInt>(t.value());
            v.kind = NumView::Kind::Big;
            v.negative = b.negative;
            v.magnitude = b.magnitude;
            break;
        }
        case Term::Kind::Float:
            v.kind = NumView::Kind::Float;
            v.d = t.as_float();
            break;
        default: v.i = t.as_int(); break;
    }
    return v;
}

int compare_seq(const std::vector<Term>& a, const std::vector<Term>& b, size_t n, bool exact) {
    for (size_t i = 0; i < n; ++i)
        if (int c = cmp(a[i], b[i], exact)) return c;
    return 0;
}

// A tail that is itself a list (not normalised): compare the rest as a list.
// Out of line, as the copy would swell every recursive frame.
[[gnu::noinline]] int compare_rest(const List& longer, size_t from, const Term& tail, bool exact) {
    auto first = longer.items.begin() + static_cast<std::ptrdiff_t>(from);
    Term rest(List{std::vector<Term>(first, longer.items.end()), longer.improper});
    return cmp(rest, tail, exact);
}

// Cell by cell as Erlang walks conses: heads first, then whatever follows the
// shorter run of heads (more cells, nil, or an improper tail) against the other.
int compare_lists(const List& a, const List& b, bool exact) {
    size_t ha = a.items.size() - (a.improper ? 1 : 0);
    size_t hb = b.items.size() - (b.improper ? 1 : 0);
    size_t n = std::min(ha, hb);
    if (int c = compare_seq(a.items, b.items, n, exact)) return c;
    if (ha == hb && !a.improper && !b.improper) return 0;
    static const Term nil;
    const Term& ta = a.improper ? a.items.back() : nil;
    const Term& tb = b.improper ? b.items.back() : nil;
    if (ha == hb) return cmp(ta, tb, exact);
    // One side still has cells: it is a non-empty list facing the other's tail.
    bool a_longer = ha > hb;
    const List& longer = a_longer ? a : b;
    const Term& other_tail = a_longer ? tb : ta;
    int c = other_tail.kind() == Term::Kind::List ? compare_rest(longer, n, other_tail, exact)
                                                  : three_way(9, rank(other_tail));
    return a_longer ? c : -c;
}

using PairPtrs = std::vector<const std::pair<Term, Term>*>;

// Each map's pairs in key order, found once per outermost comparison: the first
// compare_maps (or Map ==) opens the memo and the comparisons inside it share it.
// Sorting a map's pairs at every comparison cost a sort per comparison per level
// when maps are keys of maps: 35 s to decode 512 KB of them 7 deep (bert_bounds
// mapkeys). The memo is keyed by address, which holds while the terms are not
// changed, that is, for one comparison.
class MapOrders {
public:
    MapOrders() : owner_(current_ == nullptr) {
        if (owner_) current_ = this;
    }
    ~MapOrders() {
        if (owner_) current_ = nullptr;
    }
    MapOrders(const MapOrders&) = delete;
    MapOrders& operator=(const MapOrders&) = delete;

    // The pairs of `m` in compare_exact key order. The reference stays valid while
    // the memo grows: unordered_map nodes do not move.
    const PairPtrs& of(const Map& m) {
        auto [it, fresh] = current_->orders_.try_emplace(&m);
        PairPtrs& out = it->second;
        if (!fresh) return out;
        out.reserve(m.pairs.size());
        for (const auto& p : m.pairs) out.push_back(&p);
        auto less = [](const auto* x, const auto* y) { return cmp(x->first, y->first, true) < 0; };
        if (!std::is_sorted(out.begin(), out.end(), less)) std::stable_sort(out.begin(), out.end(), less);
        return out;
    }

private:
    static thread_local MapOrders* current_;
    bool owner_;
    std::unordered_map<const Map*, PairPtrs> orders_;
};

thread_local MapOrders* MapOrders::current_ = nullptr;

[[gnu::noinline]] int compare_maps(const Map& a, const Map& b, bool exact) {
    if (a.pairs.size() != b.pairs.size()) return three_way(a.pairs.size(), b.pairs.size());
    if (a.pairs.empty()) return 0;
    if (a.pairs.size() == 1 || detail::MapsInKeyOrder::held()) {  // in order already: no memo
        for (size_t i = 0; i < a.pairs.size(); ++i)
            if (int c = cmp(a.pairs[i].first, b.pairs[i].first, true)) return c;
        for (size_t i = 0; i < a.pairs.size(); ++i)
            if (int c = cmp(a.pairs[i].second, b.pairs[i].second, exact)) return c;
        return 0;
    }
    MapOrders orders;
    const PairPtrs& x = orders.of(a);
    const PairPtrs& y = orders.of(b);
    for (size_t i = 0; i < x.size(); ++i)
        if (int c = cmp(x[i]->first, y[i]->first, true)) return c;
    for (size_t i = 0; i < x.size(); ++i)
        if (int c = cmp(x[i]->second, y[i]->second, exact)) return c;
    return 0;
}

// Binaries and bit strings: bit by bit, then the shorter first.
detail::BitsView bits_of(const Term& t) {
    if (const auto* b = std::get_if<BitBinary>(&t.value())) {
        size_t used = b->bits == 0 || b->bits > 8 ? 8 : b->bits;  // 1..7 unless changed by hand
        return {b->bytes, b->bytes.empty() ? 0 : 8 * (b->bytes.size() - 1) + used};
    }
    const std::string& s = std::get<Binary>(t.value()).bytes;
    return {s, 8 * s.size()};
}

// Ref ids are one number, least significant word first; missing words are zero.
int compare_ref_ids(const std::vector<uint32_t>& a, const std::vector<uint32_t>& b) {
    for (size_t i = std::max(a.size(), b.size()); i-- > 0;) {
        uint32_t x = i < a.size() ? a[i] : 0, y = i < b.size() ? b[i] : 0;
        if (x != y) return x < y ? -1 : 1;
    }
    return 0;
}

int cmp(const Term& a, const Term& b, bool exact) {
    int ra = rank(a), rb = rank(b);
    if (ra != rb) return ra < rb ? -1 : 1;
    switch (a.kind()) {
        case Term::Kind::Int:
        case Term::Kind::Big:
        case Term::Kind::Float: return detail::compare_numbers(number_view(a), number_view(b), exact);
        case Term::Kind::Atom: return three_way(a.atom_name(), b.atom_name());
        case Term::Kind::Binary:
        case Term::Kind::BitBinary: return detail::compare_bits(bits_of(a), bits_of(b));
        case Term::Kind::Tuple:
            if (a.size() != b.size()) return three_way(a.size(), b.size());
            return compare_seq(a.items(), b.items(), a.size(), exact);
        case Term::Kind::List:
            return compare_lists(std::get<List>(a.value()), std::get<List>(b.value()), exact);
        case Term::Kind::Map: return compare_maps(std::get<Map>(a.value()), std::get<Map>(b.value()), exact);
        case Term::Kind::Pid: {
            const auto& x = std::get<Pid>(a.value());
            const auto& y = std::get<Pid>(b.value());
            if (int c = three_way(x.serial, y.serial)) return c;
            if (int c = three_way(x.num, y.num)) return c;
            if (int c = three_way(x.node, y.node)) return c;
            return three_way(x.creation, y.creation);
        }
        case Term::Kind::Ref: {
            const auto& x = std::get<Ref>(a.value());
            const auto& y = std::get<Ref>(b.value());
            if (int c = three_way(x.node, y.node)) return c;
            if (int c = three_way(x.creation, y.creation)) return c;
            return compare_ref_ids(x.ids, y.ids);
        }
        case Term::Kind::Port: {
            const auto& x = std::get<Port>(a.value());
            const auto& y = std::get<Port>(b.value());
            if (int c = three_way(x.node, y.node)) return c;
            if (int c = three_way(x.creation, y.creation)) return c;
            return three_way(x.id, y.id);
        }
        case Term::Kind::Fun:
            return detail::compare_funs(std::get<Fun>(a.value()), std::get<Fun>(b.value()), exact);
    }
    return 0;
}

}  // namespace

namespace detail {

int compare_numbers(const NumView& a, const NumView& b, bool exact) {
    bool af = a.kind == NumView::Kind::Float, bf = b.kind == NumView::Kind::Float;
    if (!af && !bf) return compare_integers(a, b);
    if (af && bf) return three_way(a.d, b.d);
    if (exact) return af ? 1 : -1;
    int c = af ? -compare_integer_float(b, a.d) : compare_integer_float(a, b.d);
    if (c != 0) return c;
    return af ? 1 : -1;  // 1 before 1.0, as map keys are ordered
}

int compare_bits(const BitsView& x, const BitsView& y) {
    size_t common = std::min(x.bits, y.bits), whole = common / 8;
    if (int c = x.bytes.substr(0, whole).compare(y.bytes.substr(0, whole))) return c < 0 ? -1 : 1;
    if (unsigned rest = common % 8) {
        unsigned mask = 0xff00u >> rest;
        unsigned p = static_cast<unsigned char>(x.bytes[whole]) & mask;
        unsigned q = static_cast<unsigned char>(y.bytes[whole]) & mask;
        if (p != q) return p < q ? -1 : 1;
    }
    return three_way(x.bits, y.bits);
}

int rank_of(const Term& t) { return rank(t); }

namespace {
thread_local bool t_maps_in_order = false;
}

MapsInKeyOrder::MapsInKeyOrder() : outer_(!t_maps_in_order) { t_maps_in_order = true; }
MapsInKeyOrder::~MapsInKeyOrder() {
    if (outer_) t_maps_in_order = false;
}
bool MapsInKeyOrder::held() { return t_maps_in_order; }

}  // namespace detail

int compare(const Term& a, const Term& b) { return cmp(a, b, false); }
int compare_exact(const Term& a, const Term& b) { return cmp(a, b, true); }

bool Map::operator==(const Map& o) const {
    if (pairs.size() != o.pairs.size()) return false;
    // No in-order try first: at every level it could walk the pairs twice, once in
    // order and once sorted, which nested maps multiply.
    if (pairs.size() <= 1) return pairs == o.pairs;
    MapOrders orders;
    const PairPtrs& x = orders.of(*this);
    const PairPtrs& y = orders.of(o);
    for (size_t i = 0; i < x.size(); ++i)
        if (!(*x[i] == *y[i])) return false;
    return true;
}

namespace complex {

namespace {
Term bert_tag() { return Term::atom("bert"); }
bool is_bert_tuple(const Term& t, size_t arity, std::string_view kind) {
    return t.is_tuple(arity) && t[0].is_atom("bert") && t[1].is_atom(kind);
}
}  // namespace

Term nil() { return Term::tuple({bert_tag(), Term::atom("nil")}); }
Term boolean(bool v) { return Term::tuple({bert_tag(), Term::atom(v ? "true" : "false")}); }

Term dict(std::vector<std::pair<Term, Term>> pairs) {
    std::vector<Term> items;
    items.reserve(pairs.size());
    for (auto& [k, v] : pairs) items.push_back(Term::tuple({std::move(k), std::move(v)}));
    return Term::tuple({bert_tag(), Term::atom("dict"), Term::list(std::move(items))});
}

Term time(int64_t mega, int64_t sec, int64_t micro) {
    return Term::tuple({bert_tag(), Term::atom("time"), mega, sec, micro});
}

Term regex(std::string_view source, std::vector<std::string> options) {
    std::vector<Term> opts;
    for (auto& o : options) opts.push_back(Term::atom(o));
    return Term::tuple({bert_tag(), Term::atom("regex"), Term::binary(source), Term::list(std::move(opts))});
}

bool is_nil(const Term& t) { return is_bert_tuple(t, 2, "nil"); }

std::optional<bool> as_boolean(const Term& t) {
    if (is_bert_tuple(t, 2, "true")) return true;
    if (is_bert_tuple(t, 2, "false")) return false;
    return std::nullopt;
}

std::optional<std::vector<std::pair<Term, Term>>> as_dict(const Term& t) {
    if (!is_bert_tuple(t, 3, "dict") || !t[2].is_proper_list()) return std::nullopt;
    std::vector<std::pair<Term, Term>> out;
    for (const auto& kv : t[2].items()) {
        if (!kv.is_tuple(2)) return std::nullopt;
        out.emplace_back(kv[0], kv[1]);
    }
    return out;
}

std::optional<Time> as_time(const Term& t) {
    if (!is_bert_tuple(t, 5, "time")) return std::nullopt;
    for (size_t i = 2; i < 5; ++i)
        if (!t[i].is_int()) return std::nullopt;
    return Time{t[2].as_int(), t[3].as_int(), t[4].as_int()};
}

std::optional<Regex> as_regex(const Term& t) {
    if (!is_bert_tuple(t, 4, "regex") || !t[2].is_binary() || !t[3].is_proper_list()) return std::nullopt;
    Regex r{t[2].bytes(), {}};
    for (const auto& o : t[3].items()) {
        if (!o.is_atom()) return std::nullopt;
        r.options.push_back(o.atom_name());
    }
    return r;
}

}  // namespace complex
}  // namespace bert
