// scan_order.cc: heads of encoded terms, list cells as decode() joins them, and
// Erlang's term order over encoded bytes (for the map keys that check() and the
// byte printer must order). It builds no Term but small leaves and reads only
// bytes it has checked are there.
#include <algorithm>
#include <vector>

#include "bert/scan.h"

namespace bert::detail {

namespace {

template <class T>
int three_way(const T& a, const T& b) {
    return a < b ? -1 : (b < a ? 1 : 0);
}

// As in term.cc: numbers 0, atoms 1, refs 2, funs 3, ports 4, pids 5, tuples 6,
// maps 7, nil 8, lists 9, bit strings 10.
int rank(const Head& h) {
    switch (h.kind) {
        case Head::Kind::Int:
        case Head::Kind::Big:
        case Head::Kind::Float: return 0;
        case Head::Kind::Atom: return 1;
        case Head::Kind::Fun: return 3;
        case Head::Kind::Id: return rank_of(h.leaf);
        case Head::Kind::Tuple: return 6;
        case Head::Kind::Map: return 7;
        case Head::Kind::Nil: return 8;
        case Head::Kind::List: return 9;
        case Head::Kind::Binary:
        case Head::Kind::Bits: return 10;
    }
    return 11;
}

// A magnitude that fits int64_t is an integer, as Term(BigInt) makes it.
bool small_enough(bool negative, const unsigned char* mag, size_t n, int64_t& v) {
    if (n > 8) return false;
    uint64_t m = 0;
    for (size_t i = n; i-- > 0;) m = (m << 8) | mag[i];
    if (!negative && m <= uint64_t(INT64_MAX)) {
        v = int64_t(m);
        return true;
    }
    if (negative && m <= uint64_t(INT64_MAX) + 1) {
        v = int64_t(-(m - 1)) - 1;
        return true;
    }
    return false;
}

}  // namespace

// --- heads -----------------------------------------------------------------------------

bool Scanner::head(size_t pos, size_t depth, Head& h) {
    h.kind = Head::Kind::Nil;
    h.depth = depth;
    // Empty LIST_EXT cells hold nothing: the term is what follows them (the decoder
    // reads the tail at one level deeper).
    size_t start = pos;
    bool cells = false;
    for (;;) {
        if (!need(pos, 1, cells ? "list tail" : "term")) return false;
        if (at(pos)[0] != kList) break;
        if (!cells && !enter(depth, pos)) return false;
        if (!need(pos, 5, "LIST_EXT header")) return false;
        size_t n = be32(at(pos) + 1);
        if (n >= in_.size() - pos - 5)
            return fail_at("list length " + std::to_string(n) + " exceeds the remaining bytes", pos + 5);
        if (n > 0) {
            h.kind = Head::Kind::List;
            h.at = start;
            return true;
        }
        cells = true;
        pos += 5;
    }
    h.at = pos;
    if (cells) h.depth = depth + 1;
    unsigned tag = at(pos)[0];
    if (tag == kString) {
        if (!need(pos, 3, "STRING_EXT header")) return false;
        size_t n = be16(at(pos) + 1);
        if (in_.size() - pos - 3 < n) return fail_at("truncated STRING_EXT data", pos + 3);
        h.kind = n == 0 ? Head::Kind::Nil : Head::Kind::List;
        h.at = n == 0 ? pos : start;
        h.end = pos + 3;
        return true;
    }
    if (tag == kNil) {
        h.end = pos + 1;
        return true;
    }
    return leaf_head(pos, h);
}

bool Scanner::leaf_head(size_t pos, Head& h) {
    unsigned tag = at(pos)[0];
    switch (tag) {
        case kSmallInteger:
            if (!need(pos, 2, "SMALL_INTEGER_EXT")) return false;
            h.kind = Head::Kind::Int;
            h.i = at(pos)[1];
            h.end = pos + 2;
            return true;
        case kInteger:
            if (!need(pos, 5, "INTEGER_EXT")) return false;
            h.kind = Head::Kind::Int;
            h.i = static_cast<int32_t>(be32(at(pos) + 1));
            h.end = pos + 5;
            return true;
        case kSmallBig:
        case kLargeBig: return big_head(pos, h);
        case kSmallTuple:
        case kLargeTuple:
        case kMap: return container_head(pos, h);
        case kBinary:
        case kBitBinary: return binary_head(pos, h);
        case kNewFun:
        case kExport: return fun_head(pos, h);
    }
    size_t end;
    if (!read_leaf(pos, h.leaf, end)) return false;
    h.end = end;
    h.kind = h.leaf.kind() == Term::Kind::Float  ? Head::Kind::Float
             : h.leaf.kind() == Term::Kind::Atom ? Head::Kind::Atom
                                                 : Head::Kind::Id;
    if (h.kind == Head::Kind::Float) h.f = h.leaf.as_float();
    return true;
}

bool Scanner::big_head(size_t pos, Head& h) {
    size_t p = pos;
    if (!walk_big(p)) return false;  // checks the header and that the digits are there
    size_t header = at(pos)[0] == kSmallBig ? 3 : 6;
    size_t n = p - pos - header;
    const unsigned char* mag = at(pos + header);
    while (n > 0 && mag[n - 1] == 0) --n;
    h.negative = at(pos)[header - 1] != 0;
    h.end = p;
    if (small_enough(h.negative, mag, n, h.i)) {
        h.kind = Head::Kind::Int;
        return true;
    }
    h.kind = Head::Kind::Big;
    h.body = pos + header;
    h.count = n;
    return true;
}

bool Scanner::container_head(size_t pos, Head& h) {
    unsigned tag = at(pos)[0];
    size_t header = tag == kSmallTuple ? 2 : 5;
    const char* what = tag == kSmallTuple   ? "SMALL_TUPLE_EXT header"
                       : tag == kLargeTuple ? "LARGE_TUPLE_EXT header"
                                            : "MAP_EXT header";
    if (!need(pos, header, what)) return false;
    size_t n = tag == kSmallTuple ? at(pos)[1] : be32(at(pos) + 1);
    size_t body = pos + header, left = in_.size() - body;
    if (tag == kMap ? n > left / 2 : n > left)
        return fail_at(
            (tag == kMap ? "map size " : "tuple arity ") + std::to_string(n) + " exceeds the remaining bytes",
            body);
    if (n > 0 && !enter(h.depth, body)) return false;
    h.kind = tag == kMap ? Head::Kind::Map : Head::Kind::Tuple;
    h.body = body;
    h.count = n;
    return true;
}

// The data is not read here: a cut print reads only what it shows.
bool Scanner::binary_head(size_t pos, Head& h) {
    bool bits = at(pos)[0] == kBitBinary;
    size_t header = bits ? 6 : 5;
    if (!need(pos, header, bits ? "BIT_BINARY_EXT header" : "BINARY_EXT header")) return false;
    size_t n = be32(at(pos) + 1);
    h.bits = bits ? at(pos)[5] : 8;
    if (bits && ((h.bits == 0) != (n == 0) || h.bits > 8))
        return fail_at("BIT_BINARY_EXT with a bad bit count", pos);
    if (in_.size() - pos - header < n)
        return fail_at(bits ? "truncated BIT_BINARY_EXT data" : "truncated BINARY_EXT data", pos + header);
    h.kind = bits && h.bits != 8 && n > 0 ? Head::Kind::Bits : Head::Kind::Binary;
    h.body = pos + header;
    h.count = n;
    h.end = h.body + n;
    return true;
}

bool Scanner::fun_head(size_t pos, Head& h) {
    size_t end = pos;
    if (!walk_fun(end, h.depth)) return false;
    Decoder d(in_.data(), in_.ready(), pos, limits_);
    h.fun = std::make_unique<FunInfo>();
    d.read_fun_head(pos, *h.fun);
    h.kind = Head::Kind::Fun;
    h.body = d.pos();
    h.end = end;
    return true;
}

// --- list cells --------------------------------------------------------------------------

ListCursor::Step ListCursor::next(Scanner& s, size_t& pos, unsigned& byte) {
    for (;;) {
        if (left_ > 0) {
            --left_;
            if (!in_string_) {
                pos = pos_;  // the caller reads the element and advances
                return Step::Element;
            }
            if (!s.need(pos_, 1, "STRING_EXT data")) return Step::Error;
            byte = *s.at(pos_++);
            return Step::Byte;
        }
        if (in_string_) break;  // a STRING_EXT ends its list
        bool first = !started_;
        started_ = true;
        if (!s.need(pos_, 1, first ? "term" : "list tail")) return Step::Error;
        unsigned tag = *s.at(pos_);
        if (tag == kList) {
            if (!s.need(pos_, 5, "LIST_EXT header")) return Step::Error;
            left_ = be32(s.at(pos_) + 1);
            pos_ += 5;
            if (left_ >= s.input().size() - pos_) {
                s.fail_at("list length " + std::to_string(left_) + " exceeds the remaining bytes", pos_);
                return Step::Error;
            }
        } else if (tag == kString) {
            if (!s.need(pos_, 3, "STRING_EXT header")) return Step::Error;
            left_ = be16(s.at(pos_) + 1);
            pos_ += 3;
            in_string_ = true;
            if (s.input().size() - pos_ < left_) {
                s.fail_at("truncated STRING_EXT data", pos_);
                return Step::Error;
            }
        } else if (tag == kNil) {
            ++pos_;
            break;
        } else {
            pos = pos_;
            return Step::Tail;
        }
    }
    pos = pos_;
    return Step::End;
}

// --- the order -----------------------------------------------------------------------------

namespace {

// The keys most maps have (integers, atoms, binaries) compare straight from their
// bytes, which decides the cost of ordering a map of millions of keys. A plain
// key's text, or its value, and where it ends.
struct Plain {
    int rank = -1;  // 0 integer, 1 atom, 10 binary; -1: not plain
    bool latin1 = false;
    int64_t i = 0;
    std::string_view text;
    size_t end = 0;
};

Plain plain_at(const unsigned char* p, size_t pos) {
    Plain k;
    const unsigned char* s = p + pos;
    auto text = [&](size_t header, size_t n) {
        k.text = std::string_view(reinterpret_cast<const char*>(s + header), n);
        k.end = pos + header + n;
    };
    switch (s[0]) {
        case kSmallInteger: k = {0, false, s[1], {}, pos + 2}; break;
        case kInteger: k = {0, false, static_cast<int32_t>(be32(s + 1)), {}, pos + 5}; break;
        case kAtom: k.rank = 1, k.latin1 = true, text(3, be16(s + 1)); break;
        case kSmallAtom: k.rank = 1, k.latin1 = true, text(2, s[1]); break;
        case kAtomUtf8: k.rank = 1, text(3, be16(s + 1)); break;
        case kSmallAtomUtf8: k.rank = 1, text(2, s[1]); break;
        case kBinary: k.rank = 10, text(5, be32(s + 1)); break;
    }
    return k;
}

}  // namespace

// Terms already walked by skip(), so their bytes are there and sound.
int Scanner::compare(size_t a, size_t b, size_t depth, bool exact, size_t& end_a, size_t& end_b) {
    Plain x = plain_at(in_.data(), a), y = plain_at(in_.data(), b);
    if (x.rank >= 0 && y.rank >= 0 && (x.rank != y.rank || x.rank != 1 || x.latin1 == y.latin1)) {
        end_a = x.end;
        end_b = y.end;
        if (x.rank != y.rank) return x.rank < y.rank ? -1 : 1;
        if (x.rank == 0) return three_way(x.i, y.i);
        int c = x.text.compare(y.text);  // latin-1 and UTF-8 bytes both sort as their characters
        return c < 0 ? -1 : (c > 0 ? 1 : 0);
    }
    std::string* saved = out_;
    out_ = nullptr;
    Head hx, hy;
    int c = head(a, depth, hx) && head(b, depth, hy) ? compare_heads(hx, hy, exact, end_a, end_b) : 0;
    out_ = saved;
    return c;
}

bool Scanner::element(ListCursor& c, ListCursor::Step s, size_t pos, unsigned byte, Head& h) {
    if (s == ListCursor::Step::Byte) {
        h.kind = Head::Kind::Int;
        h.i = byte;
        h.end = pos;
        return true;
    }
    return head(pos, c.depth(), h);
}

int Scanner::compare_heads(const Head& x, const Head& y, bool exact, size_t& end_a, size_t& end_b) {
    int rx = rank(x), ry = rank(y);
    if (rx != ry) return rx < ry ? -1 : 1;
    end_a = x.end;
    end_b = y.end;
    switch (x.kind) {
        case Head::Kind::Int:
        case Head::Kind::Big:
        case Head::Kind::Float: {
            auto view = [&](const Head& h) {
                NumView v;
                v.kind = h.kind == Head::Kind::Int   ? NumView::Kind::Int
                         : h.kind == Head::Kind::Big ? NumView::Kind::Big
                                                     : NumView::Kind::Float;
                v.i = h.i;
                v.d = h.f;
                v.negative = h.negative;
                if (h.kind == Head::Kind::Big)
                    v.magnitude = std::string_view(reinterpret_cast<const char*>(at(h.body)), h.count);
                return v;
            };
            return compare_numbers(view(x), view(y), exact);
        }
        case Head::Kind::Atom: return three_way(x.leaf.atom_name(), y.leaf.atom_name());
        case Head::Kind::Id: return bert::compare(x.leaf, y.leaf);
        case Head::Kind::Nil: return 0;
        case Head::Kind::Binary:
        case Head::Kind::Bits: {
            if (!need(x.body, x.count, "BINARY_EXT data") || !need(y.body, y.count, "BINARY_EXT data"))
                return 0;
            auto view = [&](const Head& h) {
                size_t bits = h.kind == Head::Kind::Bits ? 8 * (h.count - 1) + h.bits : 8 * h.count;
                return BitsView{std::string_view(reinterpret_cast<const char*>(at(h.body)), h.count), bits};
            };
            return compare_bits(view(x), view(y));
        }
        case Head::Kind::Fun:
            if (int c = compare_fun_infos(*x.fun, *y.fun)) return c;
            return compare_seq(x.body, y.body, x.fun->free_vars, x.depth + 1, exact, end_a, end_b, x.end,
                               y.end);
        case Head::Kind::Tuple:
            if (x.count != y.count) return three_way(x.count, y.count);
            return compare_seq(x.body, y.body, x.count, x.depth + 1, exact, end_a, end_b, 0, 0);
        case Head::Kind::Map: return compare_maps(x, y, exact, end_a, end_b);
        case Head::Kind::List: return compare_lists(x, y, exact, end_a, end_b);
    }
    return 0;
}

// n terms side by side; when all are equal the ends are past them (or `ea`/`eb`
// when those are set).
int Scanner::compare_seq(size_t a, size_t b, size_t n, size_t depth, bool exact, size_t& end_a, size_t& end_b,
                         size_t ea, size_t eb) {
    for (size_t i = 0; i < n; ++i)
        if (int c = compare(a, b, depth, exact, a, b)) return c;
    end_a = ea ? ea : a;
    end_b = eb ? eb : b;
    return 0;
}

// Cell by cell as Erlang walks conses, as compare_lists in term.cc.
int Scanner::compare_lists(const Head& x, const Head& y, bool exact, size_t& end_a, size_t& end_b) {
    using Step = ListCursor::Step;
    ListCursor ca(x.at, x.depth), cb(y.at, y.depth);
    for (;;) {
        size_t pa = 0, pb = 0;
        unsigned ba = 0, bb = 0;
        Step sa = ca.next(*this, pa, ba), sb = cb.next(*this, pb, bb);
        if (sa == Step::Error || sb == Step::Error) return 0;
        bool ha = sa == Step::Element || sa == Step::Byte, hb = sb == Step::Element || sb == Step::Byte;
        if (ha && hb) {
            Head ex, ey;
            if (!element(ca, sa, pa, ba, ex) || !element(cb, sb, pb, bb, ey)) return 0;
            size_t ea, eb;
            if (int c = compare_heads(ex, ey, exact, ea, eb)) return c;
            if (sa == Step::Element) ca.advance(ea);
            if (sb == Step::Element) cb.advance(eb);
            continue;
        }
        if (sa == Step::End && sb == Step::End) {
            end_a = pa;
            end_b = pb;
            return 0;
        }
        if (sa == Step::Tail && sb == Step::Tail) return compare(pa, pb, ca.depth(), exact, end_a, end_b);
        // One side still has cells (a list: rank 9) or is nil (8); the other is at
        // its improper tail, or nil.
        auto side_rank = [&](Step s, size_t p, const ListCursor& c) {
            if (s == Step::Element || s == Step::Byte) return 9;
            if (s == Step::End) return 8;
            Head t;
            return head(p, c.depth(), t) ? rank(t) : 11;
        };
        return three_way(side_rank(sa, pa, ca), side_rank(sb, pb, cb));
    }
}

// Sizes, then keys in compare_exact order, then values in key order. Each map's
// pairs are found and, unless they are in order on the wire, sorted, once per
// Scanner: a map inside keys is compared many times while its outer map's keys
// sort, and sorting it again each time cost a sort per comparison per level.
int Scanner::compare_maps(const Head& x, const Head& y, bool exact, size_t& end_a, size_t& end_b) {
    if (x.count != y.count) return three_way(x.count, y.count);
    const MapOrder& ox = map_order(x);
    const MapOrder& oy = map_order(y);
    end_a = ox.end;
    end_b = oy.end;
    size_t e1, e2;
    for (size_t i = 0; i < ox.pairs.size(); ++i)
        if (int c = compare(ox.pairs[i].first, oy.pairs[i].first, x.depth + 1, true, e1, e2)) return c;
    for (size_t i = 0; i < ox.pairs.size(); ++i)
        if (int c = compare(ox.pairs[i].second, oy.pairs[i].second, x.depth + 1, exact, e1, e2)) return c;
    return 0;
}

const Scanner::MapOrder& Scanner::map_order(const Head& h) {
    auto [it, fresh] = map_orders_.try_emplace(h.body);
    MapOrder& o = it->second;
    if (!fresh) return o;
    o.pairs.reserve(h.count);
    size_t pos = h.body, e1, e2;
    for (size_t i = 0; i < h.count; ++i) {
        size_t key = pos;
        skip(pos, h.depth + 1);
        o.pairs.emplace_back(key, pos);
        skip(pos, h.depth + 1);
    }
    o.end = pos;
    auto less = [&](const auto& u, const auto& v) { return compare(u.first, v.first, h.depth + 1, true, e1, e2) < 0; };
    // The sort compares maps inside these keys, which may add to map_orders_: `o` is a
    // node of an unordered_map, which does not move when others are added.
    if (!std::is_sorted(o.pairs.begin(), o.pairs.end(), less)) std::sort(o.pairs.begin(), o.pairs.end(), less);
    return o;
}

}  // namespace bert::detail
