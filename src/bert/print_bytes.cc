// print_bytes.cc: an encoded term -> ~p text straight from its bytes, the same text
// print() writes for the term decode() makes, without building that term. It reads
// only what the text shows (and every key of a map it shows), stops at the byte
// budget, and keeps memory to the budget and the nesting depth.
#include <algorithm>
#include <optional>
#include <vector>

#include "bert/print_text.h"
#include "bert/printer.h"
#include "bert/scan.h"

namespace bert {
namespace {

using namespace detail;

// Each function prints one term and returns false when the text is full (the rest
// would be cut) or the bytes are bad (then s_.error says why): either way, stop.
class BytePrinter {
public:
    BytePrinter(Scanner& s, Sink& out) : s_(s), out_(out) {}

    bool term(size_t pos, size_t depth, size_t& end) {
        Head h;
        return s_.head(pos, depth, h) && head(h, end);
    }

private:
    bool head(const Head& h, size_t& end) {
        end = h.end;
        switch (h.kind) {
            case Head::Kind::Int: out_.put_int(h.i); break;
            case Head::Kind::Big:
                print_big(h.negative, view(h.body, h.count), out_);  // big_head read the digits
                break;
            case Head::Kind::Float: print_float(h.f, out_); break;
            case Head::Kind::Atom: print_atom(h.leaf.atom_name(), out_); break;
            case Head::Kind::Id: print_id(h.leaf, out_); break;
            case Head::Kind::Fun: print_fun_info(*h.fun, out_); break;
            case Head::Kind::Nil: out_.put("[]"); break;
            case Head::Kind::Binary:
            case Head::Kind::Bits: return binary(h);
            case Head::Kind::Tuple: return tuple(h, end);
            case Head::Kind::List: return list(h, end);
            case Head::Kind::Map: return map(h, end);
        }
        return !out_.full();
    }

    std::string_view view(size_t pos, size_t n) {
        return std::string_view(reinterpret_cast<const char*>(s_.at(pos)), n);
    }

    // Only what can show is read: each byte shows as one character or more, so
    // past room() + 2 of them the text is cut.
    [[gnu::noinline]] bool binary(const Head& h) {
        size_t n = out_.room() >= h.count ? h.count : std::min(h.count, out_.room() + 2);
        if (!s_.need(h.body, n, "BINARY_EXT data")) return false;
        if (h.kind == Head::Kind::Bits && n == h.count)
            print_bits(view(h.body, n), h.bits, out_);
        else if (h.kind == Head::Kind::Bits)
            print_bits(view(h.body, n), 8, out_);  // cut before the last byte
        else
            print_binary(view(h.body, n), out_);
        return !out_.full();
    }

    [[gnu::noinline]] bool tuple(const Head& h, size_t& end) {
        out_.put('{');
        size_t pos = h.body;
        for (size_t i = 0; i < h.count; ++i) {
            if (i) out_.put(',');
            if (!term(pos, h.depth + 1, pos)) return false;
        }
        out_.put('}');
        end = pos;
        return !out_.full();
    }

    // The next element's integer value, when it is one: strings are decided on these.
    bool char_at(ListCursor& c, ListCursor::Step step, size_t pos, unsigned byte, int64_t& v) {
        if (step == ListCursor::Step::Byte) {
            v = byte;
            return true;
        }
        Head e;
        if (!s_.head(pos, c.depth(), e) || e.kind != Head::Kind::Int) return false;
        c.advance(e.end);
        v = e.i;
        return true;
    }

    // A proper list of printable latin-1 characters is a string; a cut print looks
    // only as far as it can show, as print() does.
    bool is_string(const Head& h) {
        ListCursor c(h.at, h.depth);
        size_t n = 0, look = out_.room(), pos;
        unsigned byte;
        for (;;) {
            ListCursor::Step step = c.next(s_, pos, byte);
            if (step == ListCursor::Step::End) return n > 0;
            if (step == ListCursor::Step::Tail || step == ListCursor::Step::Error) return false;
            int64_t v;
            if (!char_at(c, step, pos, byte, v) || !printable_latin1(v)) return false;
            if (++n >= look) return true;
        }
    }

    [[gnu::noinline]] bool list(const Head& h, size_t& end) {
        using Step = ListCursor::Step;
        bool text = is_string(h);
        if (s_.error) return false;
        ListCursor c(h.at, h.depth);
        out_.put(text ? '"' : '[');
        size_t pos;
        unsigned byte;
        for (bool first = true;; first = false) {
            Step step = c.next(s_, pos, byte);
            if (step == Step::Error) return false;
            if (step == Step::End) break;
            if (step == Step::Tail) {
                out_.put('|');
                if (!term(pos, c.depth(), pos)) return false;
                break;
            }
            if (text) {
                int64_t v = 0;  // is_string saw that every character shown is one
                if (!char_at(c, step, pos, byte, v)) return false;
                put_quoted_char(uint32_t(v), '"', out_);
            } else {
                if (!first) out_.put(',');
                if (step == Step::Byte) {
                    out_.put_uint(byte);
                } else {
                    if (!term(pos, c.depth(), pos)) return false;
                    c.advance(pos);
                }
            }
            if (out_.full()) return false;
        }
        out_.put(text ? '"' : ']');
        end = pos;
        return !out_.full();
    }

    // Pairs print in key order (compare_exact). One pass checks the pairs, sees
    // whether the keys are in order on the wire (small maps from Erlang or
    // encode() are: they print as they come) and keeps the pairs with the smallest
    // keys, as many as can show: a pair takes six characters or more.
    [[gnu::noinline]] bool map(const Head& h, size_t& end) {
        size_t depth = h.depth + 1, pos = h.body, prev = 0, e1, e2;
        bool sorted = true;
        Smallest best(s_, depth, out_.limited() ? std::min(h.count, out_.room() / 6 + 2) : h.count);
        for (size_t i = 0; i < h.count; ++i) {
            size_t key = pos;
            if (!s_.skip(pos, depth)) return false;
            size_t value = pos;
            if (!s_.skip(pos, depth)) return false;
            if (sorted && i > 0 && s_.compare(prev, key, depth, true, e1, e2) >= 0) sorted = false;
            best.add({key, value});
            if (s_.error) return false;
            prev = key;
        }
        end = pos;
        std::vector<std::pair<size_t, size_t>> pairs;  // key and value positions, for keys out of order
        if (!sorted) pairs = best.in_order();
        out_.put("#{");
        pos = h.body;
        for (size_t k = 0; k < (sorted ? h.count : pairs.size()); ++k) {
            if (k) out_.put(',');
            if (!term(sorted ? pos : pairs[k].first, depth, pos)) return false;
            out_.put(" => ");
            if (!term(sorted ? pos : pairs[k].second, depth, pos)) return false;
        }
        out_.put('}');
        return !out_.full();
    }

    // The `keep` pairs with the smallest keys. Candidates gather in a buffer of
    // twice that; when it is full the larger half goes, and the largest key kept
    // bounds what may still enter: O(pairs) comparisons in whatever order the keys
    // come, and O(keep) memory.
    class Smallest {
    public:
        using Pair = std::pair<size_t, size_t>;
        Smallest(Scanner& s, size_t depth, size_t keep) : s_(s), depth_(depth), keep_(keep) {}
        void add(Pair p) {
            if (bound_ && !less(p, *bound_)) return;
            best_.push_back(p);
            if (best_.size() < 2 * keep_) return;
            std::nth_element(best_.begin(), best_.begin() + std::ptrdiff_t(keep_ - 1), best_.end(),
                             [&](const Pair& a, const Pair& b) { return less(a, b); });
            best_.resize(keep_);
            bound_ = best_.back();
        }
        std::vector<Pair> in_order() {
            std::sort(best_.begin(), best_.end(), [&](const Pair& a, const Pair& b) { return less(a, b); });
            if (best_.size() > keep_) best_.resize(keep_);
            return std::move(best_);
        }

    private:
        bool less(const Pair& a, const Pair& b) {
            size_t e1, e2;
            return s_.compare(a.first, b.first, depth_, true, e1, e2) < 0;
        }
        Scanner& s_;
        size_t depth_, keep_;
        std::vector<Pair> best_;
        std::optional<Pair> bound_;
    };

    Scanner& s_;
    Sink& out_;
};

}  // namespace

DecodeError print_encoded(std::string_view bytes, std::string& out, size_t max_bytes, const Limits& limits) {
    size_t declared;
    if (DecodeError e = detail::check_prologue(bytes, limits, declared)) return e;
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
    std::optional<Input> in;
    if (declared > 0)
        in.emplace(p + 6, bytes.size() - 6, declared);
    else
        in.emplace(bytes);
    Scanner s(*in, limits);
    s.check_keys = false;
    size_t start = out.size(), end = 0;
    Sink sink(out, max_bytes);
    BytePrinter printer(s, sink);
    bool whole = printer.term(declared > 0 ? 0 : 1, 0, end);
    if (whole && end != in->size()) s.fail_at("trailing bytes after the term", end);
    if (s.error) {
        out.resize(start);
        if (!in->inflate_error().empty()) return DecodeError{in->inflate_error(), 6};
        return declared > 0 ? inflated_error(s.error) : s.error;
    }
    sink.finish(max_bytes);
    return {};
}

}  // namespace bert
