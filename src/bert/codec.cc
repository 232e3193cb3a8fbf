// codec.cc: BERT bytes <-> Term on top of erl_interface's ei, and peek() for the
// request path. It never reads past its input (every header and payload length is
// checked here before ei, memcpy or zlib sees the bytes) and never aborts on bad
// input: every problem becomes a DecodeError.
#include "bert/codec.h"

#include <ei.h>
#include <zlib.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <new>

namespace bert {
namespace {

enum Tag : unsigned char {
    kNewFloat = 70,
    kBitBinary = 77,
    kCompressed = 80,
    kAtomCacheRef = 82,
    kNewPid = 88,
    kNewPort = 89,
    kNewerReference = 90,
    kSmallInteger = 97,
    kInteger = 98,
    kFloat = 99,
    kAtom = 100,
    kReference = 101,
    kPort = 102,
    kPid = 103,
    kSmallTuple = 104,
    kLargeTuple = 105,
    kNil = 106,
    kString = 107,
    kList = 108,
    kBinary = 109,
    kSmallBig = 110,
    kLargeBig = 111,
    kNewFun = 112,
    kExport = 113,
    kNewReference = 114,
    kSmallAtom = 115,
    kMap = 116,
    kFun = 117,
    kAtomUtf8 = 118,
    kSmallAtomUtf8 = 119,
    kV4Port = 120,
    kLocal = 121,
};

const char* unsupported_tag_name(unsigned tag) {
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

// Old-format pids, ports and refs carry a 2-bit creation; Erlang refuses more.
constexpr unsigned kMaxOldCreation = 3;
// Old-format refs keep 18 bits in their first id word.
constexpr uint32_t kMaxOldRefId = 0x3ffff;
// Erlang refs hold at most 5 id words, and so does ei's erlang_ref.
constexpr size_t kMaxRefIds = 5;
// OTP 25 writes NEW_PORT up to this id and V4_PORT above.
constexpr uint64_t kMaxNewPortId = 0x0fffffff;
// Containers reserve at most this many elements ahead of actually reading them,
// so a lying count costs little memory.
constexpr size_t kMaxReserve = 4096;

inline uint32_t be16(const unsigned char* p) { return (uint32_t{p[0]} << 8) | p[1]; }
inline uint32_t be32(const unsigned char* p) {
    return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

// Strict UTF-8 as Erlang accepts it in atoms: no overlong forms, no surrogates,
// nothing above U+10FFFF. Counts characters and notes whether all fit latin-1.
bool scan_utf8(const unsigned char* s, size_t n, size_t& chars, bool& latin1) {
    chars = 0;
    latin1 = true;
    for (size_t i = 0; i < n; ++chars) {
        unsigned c = s[i];
        uint32_t cp;
        size_t len;
        if (c < 0x80) {
            cp = c;
            len = 1;
        } else if (c >= 0xc2 && c <= 0xdf) {
            cp = c & 0x1f;
            len = 2;
        } else if (c >= 0xe0 && c <= 0xef) {
            cp = c & 0x0f;
            len = 3;
        } else if (c >= 0xf0 && c <= 0xf4) {
            cp = c & 0x07;
            len = 4;
        } else {
            return false;
        }
        if (n - i < len) return false;
        for (size_t k = 1; k < len; ++k) {
            if ((s[i + k] & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        if (cp > 0xff) latin1 = false;
        i += len;
    }
    return true;
}

// The text of an old FLOAT_EXT as Erlang reads it: [+-]digits(.|,)digits, an
// optional exponent, then NUL padding (or the end of the 31 bytes).
bool old_float_text_ok(const char* s) {
    auto digits = [&s] {
        const char* b = s;
        while (*s >= '0' && *s <= '9') ++s;
        return s != b;
    };
    if (*s == '+' || *s == '-') ++s;
    if (!digits()) return false;
    if (*s != '.' && *s != ',') return false;
    ++s;
    if (!digits()) return false;
    if (*s == 'e' || *s == 'E') {
        ++s;
        if (*s == '+' || *s == '-') ++s;
        if (!digits()) return false;
    }
    return *s == '\0';
}

class Decoder {
public:
    Decoder(const unsigned char* data, size_t size, size_t start, const Limits& limits)
        : p_(data),
          size_(size),
          pos_(start),
          limits_(limits),
          atom_limit_(std::min<size_t>(limits.max_atom_chars, 255)) {}

    bool run(Term& out) {
        if (!term(out, 0)) return false;
        if (pos_ != size_) return fail("trailing bytes after the term");
        return true;
    }

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

    template <class V>
    [[gnu::noinline]] static void make_room(V& v, size_t more) {
        more = std::min(more, kMaxReserve);
        if (v.capacity() - v.size() < more) v.reserve(std::max(v.size() + more, v.capacity() * 2));
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
        }
        return fail_tag(s[0]);
    }

    // Leaves are kept out of line so that term(), which recurses, stays small.
    [[gnu::noinline]] bool binary(Term& out) {
        if (!need(5, "BINARY_EXT header")) return false;
        size_t n = be32(p_ + pos_ + 1);
        pos_ += 5;
        if (!need(n, "BINARY_EXT data")) return false;
        out = Term(Binary{std::string(reinterpret_cast<const char*>(p_ + pos_), n)});
        pos_ += n;
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
        if (!need(n, "bignum digits")) return false;
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
        auto& items = out.value().emplace<Tuple>().items;
        make_room(items, n);
        for (size_t i = 0; i < n; ++i)
            if (!term(items.emplace_back(), depth + 1)) return false;
        return true;
    }

    [[gnu::noinline]] bool string_items(std::vector<Term>& items) {
        if (!need(3, "STRING_EXT header")) return false;
        size_t n = be16(p_ + pos_ + 1);
        pos_ += 3;
        if (!need(n, "STRING_EXT data")) return false;
        make_room(items, n);
        for (size_t i = 0; i < n; ++i) items.emplace_back(int64_t{p_[pos_ + i]});
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
            make_room(l.items, n);
            for (size_t i = 0; i < n; ++i)
                if (!term(l.items.emplace_back(), depth + 1)) return false;
            if (!need(1, "list tail")) return false;
            unsigned tag = p_[pos_];
            if (tag == kList) continue;
            if (tag == kNil) {
                ++pos_;
            } else if (tag == kString) {
                if (!string_items(l.items)) return false;
            } else {
                if (!term(l.items.emplace_back(), depth + 1)) return false;
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
        auto& m = out.value().emplace<Map>();
        make_room(m.pairs, n);
        for (size_t i = 0; i < n; ++i) {
            auto& kv = m.pairs.emplace_back();
            if (!term(kv.first, depth + 1) || !term(kv.second, depth + 1)) return false;
        }
        if (!sort_keys(m)) return fail_at("duplicate map key", at);
        return true;
    }

    // Puts pairs in key order, as Erlang holds them; false on a repeated key.
    [[gnu::noinline]] static bool sort_keys(Map& m) {
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
};

// Inflates a compressed term's zlib data into exactly `declared` bytes. The
// buffer grows with what actually comes out, so a small input announcing a
// large size costs little until it really inflates.
std::string inflate_term(const unsigned char* data, size_t n, size_t declared, std::string& error) {
    std::string out;
    if (n > UINT_MAX) {
        error = "compressed data too large";
        return out;
    }
    z_stream zs{};
    if (inflateInit(&zs) != Z_OK) {
        error = "zlib initialisation failed";
        return out;
    }
    struct Guard {
        z_stream* z;
        ~Guard() { inflateEnd(z); }
    } guard{&zs};
    zs.next_in = const_cast<Bytef*>(data);
    zs.avail_in = static_cast<uInt>(n);
    size_t cap = std::min(declared, std::max<size_t>(n * 4, 4096));
    out.resize(cap);
    for (;;) {
        zs.next_out = reinterpret_cast<Bytef*>(out.data()) + zs.total_out;
        zs.avail_out = static_cast<uInt>(std::min<size_t>(cap - zs.total_out, UINT_MAX));
        int r = inflate(&zs, Z_NO_FLUSH);
        if (r == Z_STREAM_END) break;
        if (r != Z_OK && r != Z_BUF_ERROR) {
            error = std::string("zlib: ") + (zs.msg ? zs.msg : "corrupt data");
            return out;
        }
        if (zs.total_out == cap) {
            if (cap == declared) {
                error = "compressed data inflates beyond its declared size " + std::to_string(declared);
                return out;
            }
            cap = std::min(declared, cap * 2);
            out.resize(cap);
        } else if (zs.avail_in == 0 || r == Z_BUF_ERROR) {
            error = "compressed data is truncated";
            return out;
        }
    }
    if (zs.total_out != declared) {
        error = "compressed data inflates to " + std::to_string(zs.total_out) + " bytes, declared " +
                std::to_string(declared);
    } else if (zs.avail_in != 0) {
        error = "trailing bytes after the compressed data";
    }
    out.resize(zs.total_out);
    return out;
}

DecodeError decode_compressed(std::string_view bytes, Term& out, const Limits& limits) {
    DecodeError e;
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
    if (bytes.size() < 6) return DecodeError{"truncated compressed term header", bytes.size()};
    size_t declared = be32(p + 2);
    if (declared > limits.max_size)
        return DecodeError{"compressed term declares " + std::to_string(declared) + " bytes, above max_size",
                           2};
    if (declared == 0) return DecodeError{"compressed term declares 0 bytes", 2};
    std::string error;
    std::string inner = inflate_term(p + 6, bytes.size() - 6, declared, error);
    if (!error.empty()) return DecodeError{error, 6};
    Decoder d(reinterpret_cast<const unsigned char*>(inner.data()), inner.size(), 0, limits);
    if (!d.run(out)) {
        return DecodeError{
            d.error.message + " (at offset " + std::to_string(d.error.offset) + " of the inflated data)", 1};
    }
    return e;
}

// --- encoding ------------------------------------------------------------
// Written by hand except floats: ei's encoders differ from term_to_binary/1 of
// OTP 25 (ei_encode_longlong keeps INTEGER_EXT to 28 bits, every ei atom
// encoder writes SMALL_ATOM_UTF8, and pids/ports get UTF-8 node atoms), and
// ei_x_buff would add a copy into the std::string. encode_append() sizes the
// term first so the output grows once.

// The kind is already known wherever this is used; get_if avoids std::get's
// throwing path, which would add to every recursive frame.
template <class T>
const T& as(const Term::Value& v) {
    return *std::get_if<T>(&v);
}

inline void put8(std::string& out, unsigned v) { out.push_back(static_cast<char>(v)); }
inline void put16(std::string& out, uint32_t v) {
    put8(out, v >> 8);
    put8(out, v & 0xff);
}
inline void put32(std::string& out, uint32_t v) {
    put16(out, v >> 16);
    put16(out, v & 0xffff);
}

// How an atom goes out, as OTP 25 chooses: ATOM_EXT when every character fits
// latin-1 (ei would write SMALL_ATOM_UTF8 for all of them), else
// SMALL_ATOM_UTF8 or ATOM_UTF8 by byte length.
struct AtomForm {
    bool latin1;    // ATOM_EXT
    bool raw;       // not valid UTF-8: its bytes are taken as latin-1 characters
    size_t length;  // length field: characters for ATOM_EXT, bytes otherwise
};

AtomForm atom_form(std::string_view name) {
    size_t chars;
    bool latin1;
    const auto* s = reinterpret_cast<const unsigned char*>(name.data());
    if (!scan_utf8(s, name.size(), chars, latin1)) return {true, true, std::min<size_t>(name.size(), 0xffff)};
    if (latin1) return {true, false, std::min<size_t>(chars, 0xffff)};
    return {false, false, std::min<size_t>(name.size(), 0xffff)};
}

[[gnu::noinline]] size_t atom_size(std::string_view name) {
    AtomForm f = atom_form(name);
    return (f.latin1 || f.length > 255 ? 3 : 2) + f.length;
}

[[gnu::noinline]] void put_atom(std::string& out, std::string_view name) {
    AtomForm f = atom_form(name);
    if (f.raw) {
        put8(out, kAtom);
        put16(out, static_cast<uint32_t>(f.length));
        out.append(name.data(), f.length);
    } else if (f.latin1) {
        put8(out, kAtom);
        put16(out, static_cast<uint32_t>(f.length));
        const auto* s = reinterpret_cast<const unsigned char*>(name.data());
        size_t i = 0;
        for (size_t c = 0; c < f.length; ++c) {
            if (s[i] < 0x80) {
                put8(out, s[i]);
                i += 1;
            } else {
                put8(out, ((s[i] & 0x03u) << 6) | (s[i + 1] & 0x3fu));
                i += 2;
            }
        }
    } else if (f.length <= 255) {
        put8(out, kSmallAtomUtf8);
        put8(out, static_cast<unsigned>(f.length));
        out.append(name.data(), f.length);
    } else {
        put8(out, kAtomUtf8);
        put16(out, static_cast<uint32_t>(f.length));
        out.append(name.data(), f.length);  // cut at 65535 bytes: the format holds no more
    }
}

size_t magnitude_bytes(uint64_t m) {
    size_t n = 0;
    for (; m != 0; m >>= 8) ++n;
    return n;
}

[[gnu::noinline]] size_t int_size(int64_t v) {
    if (v >= 0 && v <= 255) return 2;
    if (v >= INT32_MIN && v <= INT32_MAX) return 5;
    uint64_t m = v < 0 ? uint64_t(-(v + 1)) + 1 : uint64_t(v);
    return 3 + magnitude_bytes(m);
}

[[gnu::noinline]] void put_int(std::string& out, int64_t v) {
    if (v >= 0 && v <= 255) {
        put8(out, kSmallInteger);
        put8(out, static_cast<unsigned>(v));
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
        put8(out, kInteger);
        put32(out, static_cast<uint32_t>(static_cast<int32_t>(v)));
    } else {
        uint64_t m = v < 0 ? uint64_t(-(v + 1)) + 1 : uint64_t(v);
        put8(out, kSmallBig);
        put8(out, static_cast<unsigned>(magnitude_bytes(m)));
        put8(out, v < 0 ? 1 : 0);
        for (; m != 0; m >>= 8) put8(out, static_cast<unsigned>(m & 0xff));
    }
}

// A BigInt built by hand may carry high zero bytes or fit int64_t; Erlang
// would never write it that way, so neither do we.
std::string_view trimmed_magnitude(const BigInt& b) {
    std::string_view m = b.magnitude;
    while (!m.empty() && m.back() == '\0') m.remove_suffix(1);
    return m;
}

[[gnu::noinline]] bool is_byte_string(const List& l) {
    if (l.improper || l.items.size() > 0xffff) return false;
    for (const Term& t : l.items)
        if (const int64_t* v = std::get_if<int64_t>(&t.value()); !v || *v < 0 || *v > 255) return false;
    return true;
}

// [a | [b, c]] built by hand (a list as the improper tail) is the list [a, b, c].
[[gnu::noinline]] List flatten_tail(const List& l) {
    List flat{std::vector<Term>(l.items.begin(), l.items.end() - 1), false};
    const Term* tail = &l.items.back();
    while (tail->is_list()) {
        const auto& inner = as<List>(tail->value());
        if (inner.items.empty()) return flat;
        size_t heads = inner.items.size() - (inner.improper ? 1 : 0);
        flat.items.insert(flat.items.end(), inner.items.begin(),
                          inner.items.begin() + static_cast<std::ptrdiff_t>(heads));
        if (!inner.improper) return flat;
        tail = &inner.items.back();
    }
    flat.items.push_back(*tail);
    flat.improper = true;
    return flat;
}

bool needs_flattening(const List& l) { return l.improper && !l.items.empty() && l.items.back().is_list(); }

using PairRefs = std::vector<const std::pair<Term, Term>*>;

bool keys_sorted(const Map& m) {
    for (size_t i = 1; i < m.pairs.size(); ++i)
        if (compare_exact(m.pairs[i - 1].first, m.pairs[i].first) > 0) return false;
    return true;
}

size_t size_of(const Term& t);
size_t size_of_list(const List& l);

[[gnu::noinline]] size_t size_of_flattened(const List& l) { return size_of_list(flatten_tail(l)); }

[[gnu::noinline]] size_t size_of_big(const BigInt& b) {
    std::string_view m = trimmed_magnitude(b);
    if (m.size() <= 8) {
        Term norm(BigInt{b.negative, std::string(m)});
        if (norm.is_int()) return int_size(norm.as_int());
    }
    return (m.size() <= 255 ? 3 : 6) + m.size();
}

[[gnu::noinline]] size_t size_of_identifier(const Term& t) {
    if (const Pid* p = std::get_if<Pid>(&t.value())) return 1 + atom_size(p->node) + 12;
    if (const Ref* r = std::get_if<Ref>(&t.value()))
        return 3 + atom_size(r->node) + 4 + 4 * std::min<size_t>(r->ids.size(), 0xffff);
    const auto& p = as<Port>(t.value());
    return 1 + atom_size(p.node) + (p.id <= kMaxNewPortId ? 8 : 12);
}

size_t size_of_list(const List& l) {
    if (l.items.empty()) return 1;
    if (needs_flattening(l)) return size_of_flattened(l);
    if (l.improper && l.items.size() == 1) return size_of(l.items[0]);
    if (is_byte_string(l)) return 3 + l.items.size();
    size_t n = 5 + (l.improper ? 0 : 1);
    for (const Term& e : l.items) n += size_of(e);
    return n;
}

size_t size_of(const Term& t) {
    switch (t.kind()) {
        case Term::Kind::Int: return int_size(as<int64_t>(t.value()));
        case Term::Kind::Big: return size_of_big(as<BigInt>(t.value()));
        case Term::Kind::Float: return 9;
        case Term::Kind::Atom: return atom_size(as<Atom>(t.value()).name);
        case Term::Kind::Binary: return 5 + as<Binary>(t.value()).bytes.size();
        case Term::Kind::Tuple: {
            const auto& items = as<Tuple>(t.value()).items;
            size_t n = items.size() <= 255 ? 2 : 5;
            for (const Term& e : items) n += size_of(e);
            return n;
        }
        case Term::Kind::List: return size_of_list(as<List>(t.value()));
        case Term::Kind::Map: {
            size_t n = 5;
            for (const auto& [k, v] : as<Map>(t.value()).pairs) n += size_of(k) + size_of(v);
            return n;
        }
        case Term::Kind::Pid:
        case Term::Kind::Ref:
        case Term::Kind::Port: return size_of_identifier(t);
    }
    return 0;
}

void put(std::string& out, const Term& t);
void put_list(std::string& out, const List& l);

[[gnu::noinline]] void put_flattened(std::string& out, const List& l) { put_list(out, flatten_tail(l)); }

// Headers and leaves are written out of line so that the recursive put() and
// put_list() keep small frames (sanitizers give every inlined byte its own slot).
[[gnu::noinline]] void put_header(std::string& out, unsigned tag, uint32_t n, bool wide) {
    put8(out, tag);
    if (wide)
        put32(out, n);
    else
        put8(out, n);
}

[[gnu::noinline]] void put_tag(std::string& out, unsigned tag) { put8(out, tag); }

[[gnu::noinline]] void put_byte_string(std::string& out, const List& l) {
    put8(out, kString);
    put16(out, static_cast<uint32_t>(l.items.size()));
    for (const Term& e : l.items) put8(out, static_cast<unsigned>(as<int64_t>(e.value())));
}

[[gnu::noinline]] void put_binary(std::string& out, const std::string& bytes) {
    put8(out, kBinary);
    put32(out, static_cast<uint32_t>(bytes.size()));
    out.append(bytes);
}

void put_list(std::string& out, const List& l) {
    if (l.items.empty()) return put_tag(out, kNil);
    if (needs_flattening(l)) return put_flattened(out, l);
    if (l.improper && l.items.size() == 1) return put(out, l.items[0]);
    if (is_byte_string(l)) return put_byte_string(out, l);
    put_header(out, kList, static_cast<uint32_t>(l.items.size() - (l.improper ? 1 : 0)), true);
    for (const Term& e : l.items) put(out, e);
    if (!l.improper) put_tag(out, kNil);
}

[[gnu::noinline]] void put_unsorted_pairs(std::string& out, const Map& m) {
    PairRefs order;
    order.reserve(m.pairs.size());
    for (const auto& p : m.pairs) order.push_back(&p);
    std::stable_sort(order.begin(), order.end(),
                     [](const auto* x, const auto* y) { return compare_exact(x->first, y->first) < 0; });
    for (const auto* p : order) {
        put(out, p->first);
        put(out, p->second);
    }
}

void put_map(std::string& out, const Map& m) {
    put8(out, kMap);
    put32(out, static_cast<uint32_t>(m.pairs.size()));
    if (!keys_sorted(m)) return put_unsorted_pairs(out, m);
    for (const auto& [k, v] : m.pairs) {
        put(out, k);
        put(out, v);
    }
}

[[gnu::noinline]] void put_big(std::string& out, const BigInt& b) {
    std::string_view m = trimmed_magnitude(b);
    if (m.size() <= 8) {
        Term norm(BigInt{b.negative, std::string(m)});
        if (norm.is_int()) return put_int(out, norm.as_int());
    }
    if (m.size() <= 255) {
        put8(out, kSmallBig);
        put8(out, static_cast<unsigned>(m.size()));
    } else {
        put8(out, kLargeBig);
        put32(out, static_cast<uint32_t>(m.size()));
    }
    put8(out, b.negative ? 1 : 0);
    out.append(m);
}

[[gnu::noinline]] void put_float(std::string& out, double d) {
    char b[16];
    int idx = 0;
    ei_encode_double(b, &idx, d);  // NEW_FLOAT_EXT, as term_to_binary/1 writes
    out.append(b, static_cast<size_t>(idx));
}

[[gnu::noinline]] void put_pid(std::string& out, const Pid& p) {
    put8(out, kNewPid);
    put_atom(out, p.node);
    put32(out, p.num);
    put32(out, p.serial);
    put32(out, p.creation);
}

[[gnu::noinline]] void put_ref(std::string& out, const Ref& r) {
    size_t n = std::min<size_t>(r.ids.size(), 0xffff);
    put8(out, kNewerReference);
    put16(out, static_cast<uint32_t>(n));
    put_atom(out, r.node);
    put32(out, r.creation);
    for (size_t i = 0; i < n; ++i) put32(out, r.ids[i]);
}

[[gnu::noinline]] void put_port(std::string& out, const Port& p) {
    if (p.id <= kMaxNewPortId) {
        put8(out, kNewPort);
        put_atom(out, p.node);
        put32(out, static_cast<uint32_t>(p.id));
    } else {
        put8(out, kV4Port);
        put_atom(out, p.node);
        put32(out, static_cast<uint32_t>(p.id >> 32));
        put32(out, static_cast<uint32_t>(p.id));
    }
    put32(out, p.creation);
}

void put(std::string& out, const Term& t) {
    switch (t.kind()) {
        case Term::Kind::Int: return put_int(out, as<int64_t>(t.value()));
        case Term::Kind::Big: return put_big(out, as<BigInt>(t.value()));
        case Term::Kind::Float: return put_float(out, as<double>(t.value()));
        case Term::Kind::Atom: return put_atom(out, as<Atom>(t.value()).name);
        case Term::Kind::Binary: return put_binary(out, as<Binary>(t.value()).bytes);
        case Term::Kind::Tuple: {
            const auto& items = as<Tuple>(t.value()).items;
            bool wide = items.size() > 255;
            put_header(out, wide ? kLargeTuple : kSmallTuple, static_cast<uint32_t>(items.size()), wide);
            for (const Term& e : items) put(out, e);
            return;
        }
        case Term::Kind::List: return put_list(out, as<List>(t.value()));
        case Term::Kind::Map: return put_map(out, as<Map>(t.value()));
        case Term::Kind::Pid: return put_pid(out, as<Pid>(t.value()));
        case Term::Kind::Ref: return put_ref(out, as<Ref>(t.value()));
        case Term::Kind::Port: return put_port(out, as<Port>(t.value()));
    }
}

// --- peek ------------------------------------------------------------------

struct Cursor {
    const unsigned char* p;
    size_t n;
    size_t pos;
    size_t left() const { return n - pos; }
};

constexpr size_t kMaxAtomChars = 255;

bool peek_atom(Cursor& c, std::string_view& out, bool& latin1) {
    if (c.left() < 2) return false;
    unsigned tag = c.p[c.pos];
    size_t header, len;
    if (tag == kSmallAtom || tag == kSmallAtomUtf8) {
        header = 2;
        len = c.p[c.pos + 1];
    } else if (tag == kAtom || tag == kAtomUtf8) {
        if (c.left() < 3) return false;
        header = 3;
        len = be16(c.p + c.pos + 1);
    } else {
        return false;
    }
    if (c.left() - header < len) return false;
    const unsigned char* text = c.p + c.pos + header;
    // Erlang's limit of 255 characters, as decode's: a longer name is no term Erlang
    // could have written, and must not be echoed back in an error answer.
    if (len > kMaxAtomChars) {
        if (tag == kAtom) return false;
        size_t chars = 0;
        for (size_t i = 0; i < len; ++i) chars += (text[i] & 0xC0) != 0x80;
        if (chars > kMaxAtomChars) return false;
    }
    out = std::string_view(reinterpret_cast<const char*>(text), len);
    latin1 = false;
    if (tag == kAtom || tag == kSmallAtom)
        for (size_t i = 0; i < len; ++i) latin1 |= text[i] >= 0x80;
    c.pos += header + len;
    return true;
}

bool peek_list_header(Cursor& c, uint32_t& arity) {
    if (c.left() < 1) return false;
    switch (c.p[c.pos]) {
        case kNil: arity = 0; return true;
        case kString:
            if (c.left() < 3) return false;
            arity = be16(c.p + c.pos + 1);
            return c.left() - 3 >= arity;
        case kList:
            if (c.left() < 5) return false;
            arity = be32(c.p + c.pos + 1);
            return c.left() - 5 > arity;  // each element takes a byte, and so does the tail
    }
    return false;
}

}  // namespace

DecodeError decode(std::string_view bytes, Term& out, const Limits& limits) {
    try {
        if (bytes.empty()) return DecodeError{"empty input", 0};
        if (bytes.size() > limits.max_size)
            return DecodeError{std::to_string(bytes.size()) + " bytes exceed max_size", 0};
        const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
        if (p[0] != kVersion)
            return DecodeError{"bad version byte " + std::to_string(p[0]) + " (expected 131)", 0};
        Term t;
        if (bytes.size() >= 2 && p[1] == kCompressed) {
            DecodeError e = decode_compressed(bytes, t, limits);
            if (e) return e;
        } else {
            Decoder d(p, bytes.size(), 1, limits);
            if (!d.run(t)) return d.error;
        }
        out = std::move(t);
        return {};
    } catch (const std::bad_alloc&) {
        return DecodeError{"out of memory", 0};
    }
}

size_t encoded_size(const Term& t) { return 1 + size_of(t); }

void encode_append(const Term& t, std::string& out) {
    out.reserve(out.size() + encoded_size(t));
    put8(out, kVersion);
    put(out, t);
}

std::string encode(const Term& t) {
    std::string out;
    encode_append(t, out);
    return out;
}

bool peek(std::string_view payload, Peek& out) {
    out = Peek{};
    Cursor c{reinterpret_cast<const unsigned char*>(payload.data()), payload.size(), 0};
    if (c.n < 3 || c.p[0] != kVersion || c.p[1] != kSmallTuple) return false;
    unsigned arity = c.p[2];
    if (arity != 3 && arity != 4) return false;
    c.pos = 3;
    std::string_view first;
    bool latin1;
    if (!peek_atom(c, first, latin1)) return false;
    Peek r;
    if (arity == 4 && first == "call")
        r.kind = Peek::Kind::Call;
    else if (arity == 4 && first == "cast")
        r.kind = Peek::Kind::Cast;
    else if (arity == 3 && first == "info")
        r.kind = Peek::Kind::Info;
    else
        return false;
    if (!peek_atom(c, r.module, r.module_latin1)) return false;
    if (r.kind != Peek::Kind::Info && !peek_atom(c, r.function, r.function_latin1)) return false;
    r.args_offset = c.pos;
    // An info's options may be any term ({info, priority, low} in Ernie's README,
    // [low] in the spec); a call's or cast's arguments must be a list.
    if (!peek_list_header(c, r.arity)) {
        // The caller decodes an info's options; they must at least be there.
        if (r.kind != Peek::Kind::Info || c.left() == 0) return false;
        r.arity = 0;
    }
    out = r;
    return true;
}

}  // namespace bert
