// scan.cc: the validating walk over encoded terms (check, rewrite_floats) and the
// reads of heads and list cells the byte printer and the byte-level order use. It
// builds no Term but small leaves, never reads a byte it has not checked is
// there, and reports problems in decode()'s words at decode()'s offsets.
#include "bert/scan.h"

#include <algorithm>
#include <climits>
#include <memory>
#include <utility>
#include <vector>

namespace bert::detail {

namespace {

// The most bytes one leaf the decoder reads can span (a fun's head: two atoms
// of 65535 bytes, two integers and a pid with a third atom, and headers).
constexpr size_t kMaxLeaf = 3 * (3 + 65535) + 64;
constexpr size_t kInflateStep = 64u << 10;

}  // namespace

// --- Input ---------------------------------------------------------------------------

Input::Input(std::string_view bytes)
    : p_(reinterpret_cast<const unsigned char*>(bytes.data())), size_(bytes.size()), ready_(bytes.size()) {}

Input::Input(const unsigned char* zdata, size_t zsize, size_t declared)
    : p_(nullptr), size_(declared), ready_(0), lazy_(true) {
    if (zsize > UINT_MAX) {
        error_ = "compressed data too large";
    } else if (inflateInit(&zs_) != Z_OK) {
        error_ = "zlib initialisation failed";
        lazy_ = false;
    }
    zs_.next_in = const_cast<Bytef*>(zdata);
    zs_.avail_in = static_cast<uInt>(std::min<size_t>(zsize, UINT_MAX));
}

Input::~Input() {
    if (lazy_) inflateEnd(&zs_);
}

bool Input::more(size_t end) {
    if (!lazy_ || !error_.empty()) return false;
    size_t want = std::min(size_, std::max({end, ready_ * 2, kInflateStep}));
    buf_.resize(want);
    while (ready_ < std::min(end, size_)) {
        zs_.next_out = reinterpret_cast<Bytef*>(buf_.data()) + ready_;
        zs_.avail_out = static_cast<uInt>(std::min<size_t>(want - ready_, UINT_MAX));
        int r = inflate(&zs_, Z_NO_FLUSH);
        ready_ = zs_.total_out;
        if (r == Z_STREAM_END && ready_ < size_) {
            error_ = "compressed data inflates to " + std::to_string(ready_) + " bytes, declared " +
                     std::to_string(size_);
        } else if (r != Z_OK && r != Z_STREAM_END && !(r == Z_BUF_ERROR && zs_.avail_in > 0)) {
            error_ = r == Z_BUF_ERROR ? "compressed data is truncated"
                                      : std::string("zlib: ") + (zs_.msg ? zs_.msg : "corrupt data");
        }
        if (!error_.empty()) break;
    }
    p_ = reinterpret_cast<const unsigned char*>(buf_.data());
    return end <= ready_;
}

// --- failures, in the decoder's words ----------------------------------------------

bool Scanner::fail_at(const std::string& message, size_t at) {
    error.message = message;
    error.offset = at;
    return false;
}

bool Scanner::need(size_t pos, size_t n, const char* what) {
    if (in_.size() < pos || in_.size() - pos < n) return fail_at(std::string("truncated ") + what, pos);
    if (in_.have(pos + n)) return true;
    return fail_at(in_.inflate_error(), pos);
}

bool Scanner::enter(size_t depth, size_t pos) {
    if (depth < limits_.max_depth) return true;
    return fail_at("nesting deeper than max_depth (" + std::to_string(limits_.max_depth) + ")", pos);
}

bool Scanner::fail_tag(unsigned tag, size_t pos) {
    if (const char* name = unsupported_tag_name(tag))
        return fail_at("unsupported tag " + std::to_string(tag) + " (" + name + ")", pos);
    return fail_at("unknown tag " + std::to_string(tag), pos);
}

// A leaf, read by the decoder itself so that its checks and errors are decode()'s.
bool Scanner::read_leaf(size_t pos, Term& out, size_t& end) {
    in_.have(std::min(pos + kMaxLeaf, in_.size()));
    if (in_.ready() < std::min(pos + kMaxLeaf, in_.size())) return fail_at(in_.inflate_error(), pos);
    Decoder d(in_.data(), in_.ready(), pos, limits_);
    if (!d.read_term(pos, out)) {
        error = d.error;
        return false;
    }
    end = d.pos();
    return true;
}

// Copying is lazy: the input's bytes [copied_, to) go out in one piece when a
// float that changes form (or the end of the term) needs them out.
void Scanner::flush(size_t to) {
    out_->append(reinterpret_cast<const char*>(at(copied_)), to - copied_);
    copied_ = to;
}

// --- the validating walk -------------------------------------------------------------

bool Scanner::copy(size_t& pos, size_t depth, std::string& out, FloatForm to, size_t& changed) {
    out_ = &out;
    to_ = to;
    changed_ = 0;
    copied_ = pos;
    bool ok = walk(pos, depth);
    if (ok) flush(pos);
    out_ = nullptr;
    changed = changed_;
    return ok;
}

// Mirrors Decoder::term, case by case, so that the same bytes fail the same way.
bool Scanner::walk(size_t& pos, size_t depth) {
    if (!need(pos, 1, "term")) return false;
    unsigned tag = at(pos)[0];
    switch (tag) {
        case kSmallInteger:
        case kInteger: {
            size_t n = tag == kSmallInteger ? 2 : 5;
            if (!need(pos, n, tag == kSmallInteger ? "SMALL_INTEGER_EXT" : "INTEGER_EXT")) return false;
            pos += n;
            return true;
        }
        case kSmallBig:
        case kLargeBig: return walk_big(pos);
        case kNewFloat:
        case kFloat: return walk_float(pos);
        case kSmallTuple:
        case kLargeTuple: return walk_tuple(pos, depth);
        case kNil: ++pos; return true;
        case kString: return walk_string(pos);
        case kList: return walk_list(pos, depth);
        case kBinary: return walk_binary(pos);
        case kMap: return walk_map(pos, depth);
        case kBitBinary: return walk_bits(pos);
        case kNewFun:
        case kExport: return walk_fun(pos, depth);
        case kAtom:
        case kSmallAtom:
        case kAtomUtf8:
        case kSmallAtomUtf8:
        case kPid:
        case kNewPid:
        case kReference:
        case kNewReference:
        case kNewerReference:
        case kPort:
        case kNewPort:
        case kV4Port: return walk_leaf(pos);
    }
    return fail_tag(tag, pos);
}

bool Scanner::walk_leaf(size_t& pos) {
    Term t;
    size_t end;
    if (!read_leaf(pos, t, end)) return false;
    pos = end;
    return true;
}

bool Scanner::walk_float(size_t& pos) {
    Term t;
    size_t end;
    if (!read_leaf(pos, t, end)) return false;
    bool ernie = at(pos)[0] == kFloat;
    if (out_ && ernie != (to_ == FloatForm::Ernie)) {
        flush(pos);
        copied_ = end;
        char b[kFloatExtSize];
        if (to_ == FloatForm::Ernie) {
            put_ernie_float(b, t.as_float());
            out_->append(b, kFloatExtSize);
        } else {
            int n = 0;
            ei_encode_double(b, &n, t.as_float());  // NEW_FLOAT_EXT, as encode() writes it
            out_->append(b, static_cast<size_t>(n));
        }
        ++changed_;
    }
    pos = end;
    return true;
}

bool Scanner::walk_big(size_t& pos) {
    bool small = at(pos)[0] == kSmallBig;
    size_t header = small ? 3 : 6;
    if (!need(pos, header, small ? "SMALL_BIG_EXT header" : "LARGE_BIG_EXT header")) return false;
    size_t n = small ? at(pos)[1] : be32(at(pos) + 1);
    if (!need(pos + header, n, "bignum digits")) return false;
    pos += header + n;
    return true;
}

bool Scanner::walk_tuple(size_t& pos, size_t depth) {
    bool small = at(pos)[0] == kSmallTuple;
    size_t header = small ? 2 : 5;
    if (!need(pos, header, small ? "SMALL_TUPLE_EXT header" : "LARGE_TUPLE_EXT header")) return false;
    size_t n = small ? at(pos)[1] : be32(at(pos) + 1);
    pos += header;
    if (n > in_.size() - pos)
        return fail_at("tuple arity " + std::to_string(n) + " exceeds the remaining bytes", pos);
    if (n > 0 && !enter(depth, pos)) return false;
    for (size_t i = 0; i < n; ++i)
        if (!walk(pos, depth + 1)) return false;
    return true;
}

bool Scanner::walk_string(size_t& pos) {
    if (!need(pos, 3, "STRING_EXT header")) return false;
    size_t n = be16(at(pos) + 1);
    if (!need(pos + 3, n, "STRING_EXT data")) return false;
    pos += 3 + n;
    return true;
}

// Tails that are lists continue the list, in this loop, as in the decoder.
bool Scanner::walk_list(size_t& pos, size_t depth) {
    if (!enter(depth, pos)) return false;
    for (;;) {
        if (!need(pos, 5, "LIST_EXT header")) return false;
        size_t n = be32(at(pos) + 1);
        pos += 5;
        if (n >= in_.size() - pos)
            return fail_at("list length " + std::to_string(n) + " exceeds the remaining bytes", pos);
        for (size_t i = 0; i < n; ++i)
            if (!walk(pos, depth + 1)) return false;
        if (!need(pos, 1, "list tail")) return false;
        unsigned tag = at(pos)[0];
        if (tag == kList) continue;
        if (tag == kNil) {
            ++pos;
            return true;
        }
        if (tag == kString) return walk_string(pos);
        return walk(pos, depth + 1);
    }
}

bool Scanner::walk_binary(size_t& pos) {
    if (!need(pos, 5, "BINARY_EXT header")) return false;
    size_t n = be32(at(pos) + 1);
    if (!need(pos + 5, n, "BINARY_EXT data")) return false;
    pos += 5 + n;
    return true;
}

bool Scanner::walk_bits(size_t& pos) {
    if (!need(pos, 6, "BIT_BINARY_EXT header")) return false;
    size_t n = be32(at(pos) + 1);
    unsigned bits = at(pos)[5];
    if ((bits == 0) != (n == 0) || bits > 8) return fail_at("BIT_BINARY_EXT with a bad bit count", pos);
    if (!need(pos + 6, n, "BIT_BINARY_EXT data")) return false;
    pos += 6 + n;
    return true;
}

bool Scanner::walk_map(size_t& pos, size_t depth) {
    size_t at_map = pos;
    if (!need(pos, 5, "MAP_EXT header")) return false;
    size_t n = be32(at(pos) + 1);
    pos += 5;
    if (n > (in_.size() - pos) / 2)
        return fail_at("map size " + std::to_string(n) + " exceeds the remaining bytes", pos);
    if (n > 0 && !enter(depth, pos)) return false;
    size_t prev = 0, e1, e2;
    bool sorted = true;
    // Where each key starts, found by this one walk: keys_unique() must not walk the pairs
    // again, or nested maps would cost a walk per level (exponential in the depth).
    std::vector<size_t> keys;
    for (size_t i = 0; i < n; ++i) {
        size_t key = pos;
        if (check_keys) keys.push_back(key);
        if (!walk(pos, depth + 1) || !walk(pos, depth + 1)) return false;
        // Keys in order on the wire (as Erlang and encode() write small maps) are
        // unique; others are sorted once every pair is known to be sound.
        if (check_keys && i > 0 && sorted && compare(prev, key, depth + 1, true, e1, e2) >= 0) sorted = false;
        if (!error.message.empty()) return false;
        prev = key;
    }
    return !check_keys || sorted || keys_unique(at_map, keys, depth);
}

bool Scanner::keys_unique(size_t at_map, std::vector<size_t>& keys, size_t depth) {
    size_t e1, e2;
    std::sort(keys.begin(), keys.end(),
              [&](size_t a, size_t b) { return compare(a, b, depth + 1, true, e1, e2) < 0; });
    for (size_t i = 1; i < keys.size(); ++i)
        if (compare(keys[i - 1], keys[i], depth + 1, true, e1, e2) == 0)
            return fail_at("duplicate map key", at_map);
    return error.message.empty();
}

bool Scanner::walk_fun(size_t& pos, size_t depth) {
    FunInfo f;
    in_.have(std::min(pos + kMaxLeaf, in_.size()));
    Decoder d(in_.data(), in_.ready(), pos, limits_);
    if (!d.read_fun_head(pos, f)) {
        error = d.error;
        return false;
    }
    size_t env = d.pos();
    if (f.free_vars > 0 && !enter(depth, env)) return false;
    // Where the size field goes out: no change since copied_, so at the same distance.
    size_t size_field = out_ ? out_->size() + (pos + 1 - copied_) : 0, before = changed_;
    pos = env;
    for (size_t i = 0; i < f.free_vars; ++i)
        if (!walk(pos, depth + 1)) return false;
    if (out_ && !f.exported && changed_ != before) {  // floats of the free variables changed size
        flush(pos);
        auto size = static_cast<uint32_t>(out_->size() - size_field);
        for (int k = 0; k < 4; ++k) (*out_)[size_field + k] = static_cast<char>(size >> (24 - 8 * k));
    }
    return true;
}

// The term of `bytes` (plain, or inflated whole into `inner`), walked by `run`
// with its errors worded and placed as decode() would.
template <class Run>
DecodeError on_term(std::string_view bytes, const Limits& limits, std::string& inner, Run run) {
    size_t declared;
    if (DecodeError e = check_prologue(bytes, limits, declared)) return e;
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
    std::string_view term = bytes;
    size_t start = 1;
    if (declared > 0) {
        std::string error;
        inner = inflate_term(p + 6, bytes.size() - 6, declared, error);
        if (!error.empty()) return DecodeError{error, 6};
        term = inner;
        start = 0;
    }
    Input in(term);
    Scanner s(in, limits);
    size_t pos = start;
    if (run(s, pos) && pos != term.size()) s.fail_at("trailing bytes after the term", pos);
    if (!s.error) return {};
    return declared > 0 ? inflated_error(s.error) : s.error;
}

}  // namespace bert::detail

namespace bert {

DecodeError check(std::string_view bytes, const Limits& limits, bool unique_keys) {
    std::string inner;
    return detail::on_term(bytes, limits, inner, [&](detail::Scanner& s, size_t& pos) {
        s.check_keys = unique_keys;
        return s.skip(pos, 0);
    });
}

DecodeError rewrite_floats(std::string_view payload, FloatForm to, std::string& out, const Limits& limits,
                           size_t* rewritten) {
    std::string inner, result;
    size_t changed = 0;
    DecodeError e = detail::on_term(payload, limits, inner, [&](detail::Scanner& s, size_t& pos) {
        // Room for the largest output, so that it never moves while it grows: at
        // most 23 more bytes for every 9 of the term. The pages it does not fill
        // are never touched, so they cost address space, not memory.
        s.check_keys = false;  // see codec.h
        size_t n = s.input().size();
        result.reserve(to == FloatForm::New ? n + 1 : n + 1 + n / 9 * 23);
        result.push_back(static_cast<char>(kVersion));
        return s.copy(pos, 0, result, to, changed);
    });
    if (e) return e;
    if (out.empty())
        out = std::move(result);
    else
        out += result;
    if (rewritten) *rewritten = changed;
    return {};
}

DecodeError tuple_elements(std::string_view payload, size_t at, std::vector<Span>& out,
                           const Limits& limits) {
    out.clear();
    size_t declared;
    if (DecodeError e = detail::check_prologue(payload, limits, declared)) return e;
    if (declared > 0) return DecodeError{"a compressed term: inflate it first", 1};
    detail::Input in(payload);
    detail::Scanner s(in, limits);
    s.check_keys = false;  // see codec.h: the spans' bytes are passed on, not read here
    detail::Head h;
    if (!s.head(at, 0, h)) return s.error;
    if (h.kind != detail::Head::Kind::Tuple) return DecodeError{"not a tuple", at};
    size_t pos = h.body;
    for (size_t i = 0; i < h.count; ++i) {
        size_t start = pos;
        if (!s.skip(pos, 1)) return s.error;
        out.push_back(Span{start, pos});
    }
    if (pos != payload.size()) return DecodeError{"trailing bytes after the term", pos};
    return {};
}

bool is_atom_at(std::string_view payload, Span s, std::string_view name) {
    if (s.end > payload.size() || s.at > s.end || s.size() < 2) return false;
    auto tag = uint8_t(payload[s.at]);
    size_t head = tag == detail::kSmallAtom || tag == detail::kSmallAtomUtf8 ? 2
                  : tag == detail::kAtom || tag == detail::kAtomUtf8         ? 3
                                                                             : 0;
    if (head == 0 || s.size() != head + name.size()) return false;
    // The atom's own length must say so too: a span guessed from sizes may cut a longer atom.
    size_t len = head == 2 ? uint8_t(payload[s.at + 1])
                           : size_t(uint8_t(payload[s.at + 1])) << 8 | uint8_t(payload[s.at + 2]);
    return len == name.size() && payload.substr(s.at + head, name.size()) == name;
}

}  // namespace bert
