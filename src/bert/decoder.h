// decoder.h: the recursive BERT decoder behind decode(), shared with the byte
// scanner (scan.cc), which borrows its leaf readers. Internal to src/bert. It never
// reads past its input and never aborts: every problem is a DecodeError.
#pragma once

#include <ei.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "bert/codec.h"
#include "bert/wire.h"

namespace bert::detail {

inline const char* unsupported_tag_name(unsigned tag) {
    switch (tag) {
        case 68: return "DIST_HEADER";
        case kBitBinary: return "BIT_BINARY_EXT";
        case kAtomCacheRef: return "ATOM_CACHE_REF";
        case kNewFun: return "NEW_FUN_EXT";
        case kExport: return "EXPORT_EXT";
        case kFun: return "FUN_EXT";
        case kLocal: return "LOCAL_EXT";
        case kCompressed: return "COMPRESSED (only allowed right after the version byte)";
    }
    return nullptr;
}

// Containers reserve at most this many elements ahead of actually reading them,
// so a lying count costs little memory.
constexpr size_t kMaxReserve = 4096;

// The memory a decoded term of `size` encoded bytes may take (Limits::memory_floor
// and memory_ratio).
inline size_t memory_budget(const Limits& limits, size_t size) {
    if (limits.memory_ratio == 0) return SIZE_MAX;
    size_t scaled = size > SIZE_MAX / limits.memory_ratio ? SIZE_MAX : size * limits.memory_ratio;
    return std::max(limits.memory_floor, scaled);
}

// The checks decode() makes before it reads a term: input not empty and within
// max_size, the version byte, and for a compressed term (tag 80) its header and
// declared size against max_size, max_inflated and max_expansion. `declared` is
// that size, or 0 for a term that is not compressed.
DecodeError check_prologue(std::string_view bytes, const Limits& limits, size_t& declared);

// Inflates a compressed term's zlib data into exactly `declared` bytes. The
// buffer grows with what actually comes out, so a small input announcing a
// large size costs little until it really inflates. Sets `error` on failure.
std::string inflate_term(const unsigned char* data, size_t n, size_t declared, std::string& error);

// An error at e.offset of inflated data, as decode() reports it.
DecodeError inflated_error(const DecodeError& e);

class Decoder {
public:
    Decoder(const unsigned char* data, size_t size, size_t start, const Limits& limits,
            size_t budget = SIZE_MAX)
        : p_(data),
          size_(size),
          pos_(start),
          limits_(limits),
          atom_limit_(std::min<size_t>(limits.max_atom_chars, 255)),
          budget_(budget) {}

    bool run(Term& out) {
        if (!term(out, 0)) return false;
        if (pos_ != size_) return fail("trailing bytes after the term");
        return true;
    }

    // For the scanner (scan.cc), which walks terms without building them, and for
    // fun.cc: reads the term at `at` (the scanner: only leaves such as numbers,
    // floats, atoms, pids, refs and ports), or a fun's head, with decode's checks
    // and errors; pos() is then just past what was read.
    bool read_term(size_t at, Term& out) {
        pos_ = at;
        return term(out, 0);
    }
    bool read_fun_head(size_t at, FunInfo& f) {
        pos_ = at;
        return fun_head(f);
    }
    size_t pos() const { return pos_; }

    DecodeError error;

private:
    size_t left() const { return size_ - pos_; }

    // Error paths build their messages out of line: decoding recurses once per
    // nesting level, and string temporaries would swell every frame (badly so
    // under ASan).
    [[gnu::noinline, gnu::cold]] bool fail_at(const char* message, size_t at) {
        error.message = message;
        error.offset = at;
        return false;
    }
    bool fail(const char* message) { return fail_at(message, pos_); }
    [[gnu::noinline, gnu::cold]] bool fail_count(const char* what, size_t n, const char* rest, size_t at) {
        error.message = what + std::to_string(n) + rest;
        error.offset = at;
        return false;
    }
    [[gnu::noinline, gnu::cold]] bool truncated(const char* what) {
        return fail_at(("truncated " + std::string(what)).c_str(), pos_);
    }
    [[gnu::noinline, gnu::cold]] bool fail_tag(unsigned tag) {
        if (const char* name = unsupported_tag_name(tag))
            return fail_at(("unsupported tag " + std::to_string(tag) + " (" + name + ")").c_str(), pos_);
        return fail_count("unknown tag ", tag, "", pos_);
    }
    // Every read goes through need(): n bytes from pos_ must be in the input.
    bool need(size_t n, const char* what) { return left() >= n || truncated(what); }
    bool enter(size_t depth) {
        return depth < limits_.max_depth ||
               fail_count("nesting deeper than max_depth (", limits_.max_depth, ")", pos_);
    }

    // Every allocation for the Term being built is charged against the budget
    // first, so an over-budget term fails before it holds the memory.
    bool charge(size_t bytes) {
        used_ += bytes;
        return used_ <= budget_ || over_budget();
    }
    [[gnu::noinline, gnu::cold]] bool over_budget() {
        return fail_count("decoding needs more than ", budget_,
                          " bytes of memory (Limits::memory_floor, memory_ratio)", pos_);
    }

    // Room for the next element, and for up to kMaxReserve more of the `more`
    // announced. The old buffer stays charged until the new one holds the elements.
    template <class V>
    [[gnu::noinline]] bool make_room(V& v, size_t more) {
        more = std::max<size_t>(1, std::min(more, kMaxReserve));
        if (v.capacity() - v.size() >= more) return true;
        size_t cap = std::max(v.size() + more, v.capacity() * 2);
        size_t old = v.capacity();
        if (!charge(cap * sizeof(typename V::value_type))) return false;
        v.reserve(cap);
        used_ -= old * sizeof(typename V::value_type);
        return true;
    }
    // A container announcing n elements needs room for them all: one over the
    // budget is refused before any of it is allocated.
    bool room_ahead(size_t n, size_t element) {
        return n <= (budget_ - std::min(used_, budget_)) / element || over_budget();
    }
    template <class V>
    bool room_for_one(V& v, size_t more) {
        return v.size() < v.capacity() || make_room(v, more);
    }

    bool term(Term& out, size_t depth) {
        if (!need(1, "term")) return false;
        const unsigned char* s = p_ + pos_;
        switch (s[0]) {
            case kSmallInteger:
                if (!need(2, "SMALL_INTEGER_EXT")) return false;
                out.value() = int64_t{s[1]};
                pos_ += 2;
                return true;
            case kInteger:
                if (!need(5, "INTEGER_EXT")) return false;
                out.value() = int64_t{static_cast<int32_t>(be32(s + 1))};
                pos_ += 5;
                return true;
            case kSmallBig:
            case kLargeBig: return big(out);
            case kNewFloat:
            case kFloat: return floating(out);
            case kAtom:
            case kSmallAtom:
            case kAtomUtf8:
            case kSmallAtomUtf8: return atom_term(out);
            case kSmallTuple:
            case kLargeTuple: return tuple(out, depth);
            case kNil:
                out.value().emplace<List>();
                ++pos_;
                return true;
            case kString: return string_term(out);
            case kList: return list(out, depth);
            case kBinary: return binary(out);
            case kMap: return map(out, depth);
            case kPid:
            case kNewPid: return pid(out);
            case kReference:
            case kNewReference:
            case kNewerReference: return ref(out);
            case kPort:
            case kNewPort:
            case kV4Port: return port(out);
            case kBitBinary: return bit_binary(out);
            case kNewFun:
            case kExport: return fun(out, depth);
        }
        return fail_tag(s[0]);
    }

    // Leaves are kept out of line so that term(), which recurses, stays small.
    [[gnu::noinline]] bool binary(Term& out) {
        if (!need(5, "BINARY_EXT header")) return false;
        size_t n = be32(p_ + pos_ + 1);
        pos_ += 5;
        if (!need(n, "BINARY_EXT data") || !charge(n)) return false;
        out = Term(Binary{std::string(reinterpret_cast<const char*>(p_ + pos_), n)});
        pos_ += n;
        return true;
    }

    // OTP's rule: no bits used exactly when there are no bytes, and at most 8.
    // Whole bytes make a Binary, as in Erlang.
    [[gnu::noinline]] bool bit_binary(Term& out) {
        if (!need(6, "BIT_BINARY_EXT header")) return false;
        size_t n = be32(p_ + pos_ + 1);
        unsigned bits = p_[pos_ + 5];
        if ((bits == 0) != (n == 0) || bits > 8) return fail("BIT_BINARY_EXT with a bad bit count");
        pos_ += 6;
        if (!need(n, "BIT_BINARY_EXT data") || !charge(n)) return false;
        std::string bytes(reinterpret_cast<const char*>(p_ + pos_), n);
        pos_ += n;
        if (bits == 8 || n == 0)
            out = Term(Binary{std::move(bytes)});
        else
            out = Term(BitBinary{std::move(bytes), static_cast<uint8_t>(bits)});
        return true;
    }

    // SMALL_INTEGER_EXT or INTEGER_EXT, as fun fields hold them (OTP takes a small
    // bignum there too; no node writes one).
    bool fun_int(int64_t& v, const char* what) {
        if (!need(1, what)) return false;
        unsigned tag = p_[pos_];
        if (tag == kSmallInteger) {
            if (!need(2, what)) return false;
            v = p_[pos_ + 1];
            pos_ += 2;
            return true;
        }
        if (tag != kInteger) return fail_count("expected an integer in a fun, found tag ", tag, "", pos_);
        if (!need(5, what)) return false;
        v = static_cast<int32_t>(be32(p_ + pos_ + 1));
        pos_ += 5;
        return true;
    }

    // EXPORT_EXT whole, or NEW_FUN_EXT up to its free variables (f.free_vars terms
    // follow at pos_). As in OTP 25, a closure's Size field is not checked: the
    // canonical bytes get their own.
    [[gnu::noinline]] bool fun_head(FunInfo& f) {
        size_t at = pos_;
        f = FunInfo{};
        int64_t v = 0;
        if (p_[pos_] == kExport) {
            ++pos_;
            f.exported = true;
            if (!atom(f.module) || !atom(f.function) || !fun_int(v, "export arity")) return false;
            if (v < 0) return fail_at("export with a negative arity", at);
            f.arity = static_cast<uint32_t>(v);
            return true;
        }
        if (!need(30, "NEW_FUN_EXT header")) return false;
        const unsigned char* s = p_ + pos_;
        f.arity = s[5];
        f.uniq.assign(reinterpret_cast<const char*>(s + 6), 16);
        f.index = be32(s + 22);
        f.free_vars = be32(s + 26);
        pos_ += 30;
        if (!atom(f.module) || !fun_int(v, "fun index")) return false;
        f.old_index = static_cast<int32_t>(v);
        if (!fun_int(v, "fun uniq")) return false;
        f.old_uniq = static_cast<int32_t>(v);
        if (!need(1, "fun creator")) return false;
        if (p_[pos_] != kPid && p_[pos_] != kNewPid)
            return fail_count("expected the creator pid of a fun, found tag ", p_[pos_], "", pos_);
        Term creator;
        if (!pid(creator)) return false;
        f.pid = std::move(std::get<Pid>(creator.value()));
        if (f.free_vars > left())
            return fail_count("fun with ", f.free_vars, " free variables exceeds the remaining bytes", pos_);
        return true;
    }

    // A fun keeps the bytes term_to_binary/1 would write for it.
    [[gnu::noinline]] bool fun(Term& out, size_t depth) {
        FunInfo f;
        if (!fun_head(f)) return false;
        if (f.free_vars > 0 && !enter(depth)) return false;
        if (!room_ahead(f.free_vars, sizeof(Term))) return false;
        std::vector<Term> env;
        for (size_t i = 0; i < f.free_vars; ++i)
            if (!room_for_one(env, f.free_vars - i) || !term(env.emplace_back(), depth + 1)) return false;
        std::string bytes = fun_bytes(f, env);
        if (!charge(bytes.size())) return false;
        out = Term(Fun{std::move(bytes)});
        return true;
    }

    [[gnu::noinline]] bool atom_term(Term& out) {
        Atom a;
        if (!atom(a.name)) return false;
        out = Term(std::move(a));
        return true;
    }

    [[gnu::noinline]] bool string_term(Term& out) {
        List l;
        if (!string_items(l.items)) return false;
        out = Term(std::move(l));
        return true;
    }

    [[gnu::noinline]] bool big(Term& out) {
        const unsigned char* s = p_ + pos_;
        size_t n, header;
        if (s[0] == kSmallBig) {
            if (!need(3, "SMALL_BIG_EXT header")) return false;
            n = s[1];
            header = 3;
        } else {
            if (!need(6, "LARGE_BIG_EXT header")) return false;
            n = be32(s + 1);
            header = 6;
        }
        bool negative = s[header - 1] != 0;  // Erlang takes any non-zero sign byte as minus
        pos_ += header;
        if (!need(n, "bignum digits") || !charge(n)) return false;
        out = Term(BigInt{negative, std::string(reinterpret_cast<const char*>(p_ + pos_), n)});
        pos_ += n;
        return true;
    }

    [[gnu::noinline]] bool floating(Term& out) {
        size_t at = pos_;
        double d = 0;
        int idx = 0;
        if (p_[pos_] == kNewFloat) {
            if (!need(9, "NEW_FLOAT_EXT")) return false;
            if (ei_decode_double(reinterpret_cast<const char*>(p_ + pos_), &idx, &d) < 0 || idx != 9)
                return fail("bad NEW_FLOAT_EXT");
        } else {
            if (!need(32, "FLOAT_EXT")) return false;
            // ei reads the text with sscanf, which would run past 31 unterminated
            // bytes: hand it a NUL-terminated copy.
            char copy[33];
            std::memcpy(copy, p_ + pos_, 32);
            copy[32] = '\0';
            if (!old_float_text_ok(copy + 1)) return fail("bad FLOAT_EXT text");
            if (char* comma = std::strchr(copy + 1, ',')) *comma = '.';
            if (ei_decode_double(copy, &idx, &d) < 0 || idx != 32) return fail("bad FLOAT_EXT text");
        }
        if (!std::isfinite(d)) return fail_at("float is NaN or infinite", at);
        pos_ += static_cast<size_t>(idx);
        out = Term(d);
        return true;
    }

    // Checks an atom's header, bytes and length, then lets ei convert it to UTF-8.
    [[gnu::noinline]] bool atom(std::string& out) {
        if (!need(1, "atom")) return false;
        size_t at = pos_;
        unsigned tag = p_[pos_];
        size_t header = (tag == kSmallAtom || tag == kSmallAtomUtf8) ? 2 : 3;
        if (tag != kAtom && tag != kSmallAtom && tag != kAtomUtf8 && tag != kSmallAtomUtf8)
            return fail_count("expected an atom, found tag ", tag, "", pos_);
        if (!need(header, "atom header")) return false;
        size_t n = header == 2 ? p_[pos_ + 1] : be16(p_ + pos_ + 1);
        pos_ += header;
        if (!need(n, "atom text")) return false;
        const unsigned char* text = p_ + pos_;
        bool utf8 = tag == kAtomUtf8 || tag == kSmallAtomUtf8;
        size_t chars = n, utf8_bytes = n;
        if (utf8) {
            bool latin1;
            if (!scan_utf8(text, n, chars, latin1)) return fail_at("atom is not valid UTF-8", at);
        } else {
            for (size_t i = 0; i < n; ++i) utf8_bytes += text[i] >> 7;
        }
        if (chars > atom_limit_)
            return fail_count("atom of ", chars, " characters exceeds max_atom_chars", at);
        char buf[MAXATOMLEN_UTF8];
        int idx = 0;
        if (ei_decode_atom_as(reinterpret_cast<const char*>(p_ + at), &idx, buf, sizeof buf, ERLANG_UTF8,
                              nullptr, nullptr) < 0 ||
            static_cast<size_t>(idx) != header + n)
            return fail_at("bad atom", at);
        if (utf8_bytes > 15 && !charge(utf8_bytes + 1)) return false;  // past the short-string buffer
        out.assign(buf, utf8_bytes);
        pos_ = at + header + n;
        return true;
    }

    // Containers decode in place into `out`: locals in these recursive frames
    // would cost stack at every nesting level.
    [[gnu::noinline]] bool tuple(Term& out, size_t depth) {
        size_t n;
        if (p_[pos_] == kSmallTuple) {
            if (!need(2, "SMALL_TUPLE_EXT header")) return false;
            n = p_[pos_ + 1];
            pos_ += 2;
        } else {
            if (!need(5, "LARGE_TUPLE_EXT header")) return false;
            n = be32(p_ + pos_ + 1);
            pos_ += 5;
        }
        if (n > left()) return fail_count("tuple arity ", n, " exceeds the remaining bytes", pos_);
        if (n > 0 && !enter(depth)) return false;
        if (!room_ahead(n, sizeof(Term))) return false;
        auto& items = out.value().emplace<Tuple>().items;
        for (size_t i = 0; i < n; ++i)
            if (!room_for_one(items, n - i) || !term(items.emplace_back(), depth + 1)) return false;
        return true;
    }

    [[gnu::noinline]] bool string_items(std::vector<Term>& items) {
        if (!need(3, "STRING_EXT header")) return false;
        size_t n = be16(p_ + pos_ + 1);
        pos_ += 3;
        if (!need(n, "STRING_EXT data") || !room_ahead(n, sizeof(Term))) return false;
        for (size_t i = 0; i < n; ++i) {
            if (!room_for_one(items, n - i)) return false;
            items.emplace_back(int64_t{p_[pos_ + i]});
        }
        pos_ += n;
        return true;
    }

    // A LIST_EXT whose tail is another list (LIST_EXT, STRING_EXT or NIL) is one
    // list to Erlang: follow such tails in this loop, without recursing.
    [[gnu::noinline]] bool list(Term& out, size_t depth) {
        if (!enter(depth)) return false;
        auto& l = out.value().emplace<List>();
        for (;;) {
            if (!need(5, "LIST_EXT header")) return false;
            size_t n = be32(p_ + pos_ + 1);
            pos_ += 5;
            if (n >= left()) return fail_count("list length ", n, " exceeds the remaining bytes", pos_);
            if (!room_ahead(n, sizeof(Term))) return false;
            for (size_t i = 0; i < n; ++i)
                if (!room_for_one(l.items, n - i) || !term(l.items.emplace_back(), depth + 1)) return false;
            if (!need(1, "list tail")) return false;
            unsigned tag = p_[pos_];
            if (tag == kList) continue;
            if (tag == kNil) {
                ++pos_;
            } else if (tag == kString) {
                if (!string_items(l.items)) return false;
            } else {
                if (!room_for_one(l.items, 1) || !term(l.items.emplace_back(), depth + 1)) return false;
                l.improper = true;
            }
            break;
        }
        if (l.improper && l.items.size() == 1) only_tail(out);
        return true;
    }

    // No cells before the tail: Erlang reads the tail itself.
    [[gnu::noinline]] static void only_tail(Term& out) {
        Term tail = std::move(std::get<List>(out.value()).items[0]);
        out = std::move(tail);
    }

    [[gnu::noinline]] bool map(Term& out, size_t depth) {
        size_t at = pos_;
        if (!need(5, "MAP_EXT header")) return false;
        size_t n = be32(p_ + pos_ + 1);
        pos_ += 5;
        if (n > left() / 2) return fail_count("map size ", n, " exceeds the remaining bytes", pos_);
        if (n > 0 && !enter(depth)) return false;
        if (!room_ahead(n, sizeof(std::pair<Term, Term>))) return false;
        auto& m = out.value().emplace<Map>();
        for (size_t i = 0; i < n; ++i) {
            if (!room_for_one(m.pairs, n - i)) return false;
            auto& kv = m.pairs.emplace_back();
            if (!term(kv.first, depth + 1) || !term(kv.second, depth + 1)) return false;
        }
        if (!sort_keys(m)) return fail_at("duplicate map key", at);
        return true;
    }

    // Puts pairs in key order, as Erlang holds them; false on a repeated key.
    [[gnu::noinline]] static bool sort_keys(Map& m) {
        MapsInKeyOrder in_order;  // the maps inside these keys were sorted when read
        auto less = [](const auto& x, const auto& y) { return compare_exact(x.first, y.first) < 0; };
        if (!std::is_sorted(m.pairs.begin(), m.pairs.end(), less))
            std::sort(m.pairs.begin(), m.pairs.end(), less);
        for (size_t i = 1; i < m.pairs.size(); ++i)
            if (compare_exact(m.pairs[i - 1].first, m.pairs[i].first) == 0) return false;
        return true;
    }

    // Pids, refs and ports: the node atom is checked and read like any atom,
    // the fixed-size rest is checked for length, then ei decodes the whole.
    [[gnu::noinline]] bool pid(Term& out) {
        size_t at = pos_;
        bool old = p_[pos_] == kPid;
        ++pos_;
        Pid pid;
        if (!atom(pid.node)) return false;
        if (!need(old ? 9 : 12, "pid")) return false;
        if (old && p_[pos_ + 8] > kMaxOldCreation) return fail_at("PID_EXT creation above 3", at);
        erlang_pid ep;
        int idx = 0;
        if (ei_decode_pid(reinterpret_cast<const char*>(p_ + at), &idx, &ep) < 0 ||
            at + static_cast<size_t>(idx) != pos_ + (old ? 9 : 12))
            return fail_at("bad pid", at);
        pid.num = ep.num;
        pid.serial = ep.serial;
        pid.creation = ep.creation;
        pos_ = at + static_cast<size_t>(idx);
        out = Term(std::move(pid));
        return true;
    }

    [[gnu::noinline]] bool ref(Term& out) {
        size_t at = pos_;
        unsigned tag = p_[pos_];
        size_t count = 1;
        if (tag != kReference) {
            if (!need(3, "reference header")) return false;
            count = be16(p_ + pos_ + 1);
            if (count > kMaxRefIds) return fail("reference with more than 5 id words");
            // OTP 25 takes a ref without ids alone but refuses it as a map key,
            // and no node makes one: refuse it everywhere.
            if (count == 0) return fail("reference without id words");
            pos_ += 2;
        }
        ++pos_;
        Ref ref;
        if (!atom(ref.node)) return false;
        size_t creation_bytes = tag == kNewerReference ? 4 : 1;
        size_t rest = creation_bytes + 4 * count;
        if (!need(rest, "reference")) return false;
        if (tag != kNewerReference) {
            // Old forms: REFERENCE_EXT puts the id before the creation byte.
            const unsigned char* id0 = tag == kReference ? p_ + pos_ : p_ + pos_ + 1;
            unsigned creation = tag == kReference ? p_[pos_ + 4] : p_[pos_];
            if (creation > kMaxOldCreation) return fail_at("old reference creation above 3", at);
            if (count > 0 && be32(id0) > kMaxOldRefId) return fail_at("old reference id above 18 bits", at);
        }
        erlang_ref er;
        int idx = 0;
        if (ei_decode_ref(reinterpret_cast<const char*>(p_ + at), &idx, &er) < 0 ||
            at + static_cast<size_t>(idx) != pos_ + rest || static_cast<size_t>(er.len) != count)
            return fail_at("bad reference", at);
        if (!charge(count * sizeof(uint32_t))) return false;
        ref.ids.assign(er.n, er.n + count);
        ref.creation = er.creation;
        pos_ += rest;
        out = Term(std::move(ref));
        return true;
    }

    [[gnu::noinline]] bool port(Term& out) {
        size_t at = pos_;
        unsigned tag = p_[pos_];
        ++pos_;
        Port port;
        if (!atom(port.node)) return false;
        size_t rest = tag == kPort ? 5 : tag == kNewPort ? 8 : 12;
        if (!need(rest, "port")) return false;
        if (tag == kPort && p_[pos_ + 4] > kMaxOldCreation) return fail_at("PORT_EXT creation above 3", at);
        erlang_port ep;
        int idx = 0;
        if (ei_decode_port(reinterpret_cast<const char*>(p_ + at), &idx, &ep) < 0 ||
            at + static_cast<size_t>(idx) != pos_ + rest)
            return fail_at("bad port", at);
        // ei sign-extends the 32-bit ids of the older forms.
        port.id = tag == kV4Port ? ep.id : (ep.id & 0xffffffffu);
        port.creation = ep.creation;
        pos_ += rest;
        out = Term(std::move(port));
        return true;
    }

    const unsigned char* p_;
    size_t size_;
    size_t pos_;
    const Limits& limits_;
    size_t atom_limit_;
    size_t budget_;
    size_t used_ = 0;
};

}  // namespace bert::detail
