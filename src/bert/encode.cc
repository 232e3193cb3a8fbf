// encode.cc: Term -> BERT bytes, byte-identical to term_to_binary/1 of OTP 25.
// It sizes the term first so the output grows once, and never fails: every Term
// has an encoding.
#include <ei.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include "bert/codec.h"
#include "bert/wire.h"

namespace bert {
namespace {

using namespace detail;

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

size_t size_of(const Term& t, FloatForm ff);
size_t size_of_list(const List& l, FloatForm ff);

// A closure's free variables hold floats too: in the Ernie form they are
// rewritten (and its size field follows), as term_to_binary(F, [{minor_version,
// 0}]) writes them. Bytes that hold no fun go out as they are.
[[gnu::noinline]] std::string fun_in_form(const Fun& f, FloatForm ff) {
    if (ff == FloatForm::New || f.bytes.empty() || static_cast<unsigned char>(f.bytes[0]) != kNewFun)
        return f.bytes;
    std::string in(1, static_cast<char>(kVersion)), out;
    in += f.bytes;
    Limits loose;
    loose.max_size = SIZE_MAX;
    if (rewrite_floats(in, FloatForm::Ernie, out, loose)) return f.bytes;
    return out.substr(1);
}

size_t fun_size(const Fun& f, FloatForm ff) {
    return ff == FloatForm::New ? f.bytes.size() : fun_in_form(f, ff).size();
}

[[gnu::noinline]] size_t size_of_flattened(const List& l, FloatForm ff) {
    return size_of_list(flatten_tail(l), ff);
}

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

size_t size_of_list(const List& l, FloatForm ff) {
    if (l.items.empty()) return 1;
    if (needs_flattening(l)) return size_of_flattened(l, ff);
    if (l.improper && l.items.size() == 1) return size_of(l.items[0], ff);
    if (is_byte_string(l)) return 3 + l.items.size();
    size_t n = 5 + (l.improper ? 0 : 1);
    for (const Term& e : l.items) n += size_of(e, ff);
    return n;
}

size_t size_of(const Term& t, FloatForm ff) {
    switch (t.kind()) {
        case Term::Kind::Int: return int_size(as<int64_t>(t.value()));
        case Term::Kind::Big: return size_of_big(as<BigInt>(t.value()));
        case Term::Kind::Float: return ff == FloatForm::Ernie ? 32 : 9;
        case Term::Kind::Atom: return atom_size(as<Atom>(t.value()).name);
        case Term::Kind::Binary: return 5 + as<Binary>(t.value()).bytes.size();
        case Term::Kind::Tuple: {
            const auto& items = as<Tuple>(t.value()).items;
            size_t n = items.size() <= 255 ? 2 : 5;
            for (const Term& e : items) n += size_of(e, ff);
            return n;
        }
        case Term::Kind::List: return size_of_list(as<List>(t.value()), ff);
        case Term::Kind::Map: {
            size_t n = 5;
            for (const auto& [k, v] : as<Map>(t.value()).pairs) n += size_of(k, ff) + size_of(v, ff);
            return n;
        }
        case Term::Kind::Pid:
        case Term::Kind::Ref:
        case Term::Kind::Port: return size_of_identifier(t);
        case Term::Kind::Fun: return fun_size(as<Fun>(t.value()), ff);
        case Term::Kind::BitBinary: return 6 + as<BitBinary>(t.value()).bytes.size();
    }
    return 0;
}

void put(std::string& out, const Term& t, FloatForm ff);
void put_list(std::string& out, const List& l, FloatForm ff);

[[gnu::noinline]] void put_flattened(std::string& out, const List& l, FloatForm ff) {
    put_list(out, flatten_tail(l), ff);
}

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

void put_list(std::string& out, const List& l, FloatForm ff) {
    if (l.items.empty()) return put_tag(out, kNil);
    if (needs_flattening(l)) return put_flattened(out, l, ff);
    if (l.improper && l.items.size() == 1) return put(out, l.items[0], ff);
    if (is_byte_string(l)) return put_byte_string(out, l);
    put_header(out, kList, static_cast<uint32_t>(l.items.size() - (l.improper ? 1 : 0)), true);
    for (const Term& e : l.items) put(out, e, ff);
    if (!l.improper) put_tag(out, kNil);
}

[[gnu::noinline]] void put_unsorted_pairs(std::string& out, const Map& m, FloatForm ff) {
    PairRefs order;
    order.reserve(m.pairs.size());
    for (const auto& p : m.pairs) order.push_back(&p);
    std::stable_sort(order.begin(), order.end(),
                     [](const auto* x, const auto* y) { return compare_exact(x->first, y->first) < 0; });
    for (const auto* p : order) {
        put(out, p->first, ff);
        put(out, p->second, ff);
    }
}

void put_map(std::string& out, const Map& m, FloatForm ff) {
    put8(out, kMap);
    put32(out, static_cast<uint32_t>(m.pairs.size()));
    if (!keys_sorted(m)) return put_unsorted_pairs(out, m, ff);
    for (const auto& [k, v] : m.pairs) {
        put(out, k, ff);
        put(out, v, ff);
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

[[gnu::noinline]] void put_float(std::string& out, double d, FloatForm ff) {
    if (ff == FloatForm::Ernie) {
        char b[kFloatExtSize];
        put_ernie_float(b, d);
        out.append(b, sizeof b);
        return;
    }
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

[[gnu::noinline]] void put_bit_binary(std::string& out, const BitBinary& b) {
    put8(out, kBitBinary);
    put32(out, static_cast<uint32_t>(b.bytes.size()));
    put8(out, b.bits);
    out.append(b.bytes);
}

void put(std::string& out, const Term& t, FloatForm ff) {
    switch (t.kind()) {
        case Term::Kind::Int: return put_int(out, as<int64_t>(t.value()));
        case Term::Kind::Big: return put_big(out, as<BigInt>(t.value()));
        case Term::Kind::Float: return put_float(out, as<double>(t.value()), ff);
        case Term::Kind::Atom: return put_atom(out, as<Atom>(t.value()).name);
        case Term::Kind::Binary: return put_binary(out, as<Binary>(t.value()).bytes);
        case Term::Kind::Tuple: {
            const auto& items = as<Tuple>(t.value()).items;
            bool wide = items.size() > 255;
            put_header(out, wide ? kLargeTuple : kSmallTuple, static_cast<uint32_t>(items.size()), wide);
            for (const Term& e : items) put(out, e, ff);
            return;
        }
        case Term::Kind::List: return put_list(out, as<List>(t.value()), ff);
        case Term::Kind::Map: return put_map(out, as<Map>(t.value()), ff);
        case Term::Kind::Pid: return put_pid(out, as<Pid>(t.value()));
        case Term::Kind::Ref: return put_ref(out, as<Ref>(t.value()));
        case Term::Kind::Port: return put_port(out, as<Port>(t.value()));
        case Term::Kind::Fun:
            if (ff == FloatForm::New)
                out.append(as<Fun>(t.value()).bytes);
            else
                out.append(fun_in_form(as<Fun>(t.value()), ff));
            return;
        case Term::Kind::BitBinary: return put_bit_binary(out, as<BitBinary>(t.value()));
    }
}

}  // namespace

namespace detail {

void put_ernie_float(char* out, double d) {
    // What OTP's sys_double_to_chars writes: "%.20e" (at most 28 characters, so
    // it always fits), with '.' whatever the locale, then NULs to 31 bytes.
    // std::to_chars writes printf's very digits (exact), faster and in no locale.
    std::memset(out, 0, kFloatExtSize);
    out[0] = static_cast<char>(kFloat);
    std::to_chars(out + 1, out + kFloatExtSize - 1, d, std::chars_format::scientific, 20);
}

std::string fun_bytes(const FunInfo& f, const std::vector<Term>& env) {
    std::string out;
    if (f.exported) {
        put8(out, kExport);
        put_atom(out, f.module);
        put_atom(out, f.function);
        put_int(out, f.arity);
        return out;
    }
    put8(out, kNewFun);
    put32(out, 0);  // the size, once known
    put8(out, f.arity);
    out.append(f.uniq.substr(0, 16));
    out.append(16 - std::min<size_t>(f.uniq.size(), 16), '\0');
    put32(out, f.index);
    put32(out, static_cast<uint32_t>(env.size()));
    put_atom(out, f.module);
    put_int(out, f.old_index);
    put_int(out, f.old_uniq);
    put_pid(out, f.pid);
    for (const Term& t : env) put(out, t, FloatForm::New);
    uint32_t size = static_cast<uint32_t>(out.size() - 1);
    for (int k = 0; k < 4; ++k) out[1 + k] = static_cast<char>(size >> (24 - 8 * k));
    return out;
}

}  // namespace detail

size_t encoded_size(const Term& t, const EncodeOptions& options) { return 1 + size_of(t, options.floats); }

void encode_append(const Term& t, std::string& out, const EncodeOptions& options) {
    out.reserve(out.size() + encoded_size(t, options));
    put8(out, kVersion);
    put(out, t, options.floats);
}

std::string encode(const Term& t, const EncodeOptions& options) {
    std::string out;
    encode_append(t, out, options);
    return out;
}

Term export_fun(std::string_view module, std::string_view function, uint8_t arity) {
    FunInfo f;
    f.exported = true;
    f.module = module;
    f.function = function;
    f.arity = arity;
    return Term(Fun{detail::fun_bytes(f, {})});
}

}  // namespace bert
