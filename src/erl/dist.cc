// dist.cc: distribution packets and external-term-format bytes for the link.
// Reading never trusts a length: every skip is checked against the buffer.
#include "erl/dist.h"

#include "bert/codec.h"

namespace bertd::erl {

namespace {
enum Tag : uint8_t {
    kSmallInt = 97,
    kInt = 98,
    kFloat = 99,
    kNewFloat = 70,
    kAtom = 100,
    kAtomUtf8 = 118,
    kSmallAtom = 115,
    kSmallAtomUtf8 = 119,
    kSmallTuple = 104,
    kLargeTuple = 105,
    kNil = 106,
    kString = 107,
    kList = 108,
    kBinary = 109,
    kBitBinary = 77,
    kSmallBig = 110,
    kLargeBig = 111,
    kMap = 116,
    kPid = 103,
    kNewPid = 88,
    kPort = 102,
    kNewPort = 89,
    kV4Port = 120,
    kRef = 101,
    kNewRef = 114,
    kNewerRef = 90,
    kExport = 113,
    kNewFun = 112,
};

uint32_t rd32(const unsigned char* p) {
    return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}
uint16_t rd16(const unsigned char* p) { return uint16_t(p[0] << 8 | p[1]); }

struct Skipper {
    const unsigned char* p;
    size_t n;
    bool need(size_t off, size_t k) const { return off <= n && n - off >= k; }

    size_t skip(size_t off, int depth) const {
        if (depth <= 0 || !need(off, 1)) return std::string_view::npos;
        const size_t npos = std::string_view::npos;
        uint8_t tag = p[off++];
        auto fixed = [&](size_t k) { return need(off, k) ? off + k : npos; };
        auto counted16 = [&]() { return need(off, 2) ? fixed_at(off + 2, rd16(p + off)) : npos; };
        auto counted32 = [&]() { return need(off, 4) ? fixed_at(off + 4, rd32(p + off)) : npos; };
        auto then = [&](size_t at, size_t k) { return at == npos ? npos : fixed_at(at, k); };
        switch (tag) {
            case kSmallInt: return fixed(1);
            case kInt: return fixed(4);
            case kFloat: return fixed(31);
            case kNewFloat: return fixed(8);
            case kAtom:
            case kAtomUtf8:
            case kString: return counted16();
            case kSmallAtom:
            case kSmallAtomUtf8: return need(off, 1) ? fixed_at(off + 1, p[off]) : npos;
            case kBinary: return counted32();
            case kBitBinary: return need(off, 5) ? fixed_at(off + 5, rd32(p + off)) : npos;
            case kSmallBig: return need(off, 2) ? fixed_at(off + 2, p[off]) : npos;
            case kLargeBig: return need(off, 5) ? fixed_at(off + 5, rd32(p + off)) : npos;
            case kNil: return off;
            case kSmallTuple: return need(off, 1) ? elements(off + 1, p[off], depth) : npos;
            case kLargeTuple: return need(off, 4) ? elements(off + 4, rd32(p + off), depth) : npos;
            case kList: {
                if (!need(off, 4)) return npos;
                size_t at = elements(off + 4, rd32(p + off), depth);
                return at == npos ? npos : skip(at, depth - 1);  // the tail
            }
            case kMap: {
                if (!need(off, 4)) return npos;
                uint64_t pairs = rd32(p + off);
                return elements(off + 4, pairs * 2, depth);
            }
            case kPid: return then(skip(off, depth - 1), 9);
            case kNewPid: return then(skip(off, depth - 1), 12);
            case kPort: return then(skip(off, depth - 1), 5);
            case kNewPort: return then(skip(off, depth - 1), 8);
            case kV4Port: return then(skip(off, depth - 1), 12);
            case kRef: return then(skip(off, depth - 1), 5);
            case kNewRef:
            case kNewerRef: {
                if (!need(off, 2)) return npos;
                size_t ids = rd16(p + off);
                size_t at = skip(off + 2, depth - 1);
                return then(at, (tag == kNewRef ? 1 : 4) + 4 * ids);
            }
            case kExport: return elements(off, 3, depth);
            case kNewFun: return need(off, 4) && rd32(p + off) >= 4 ? fixed_at(off, rd32(p + off)) : npos;
            default: return npos;  // compressed, atom cache references, old funs
        }
    }
    size_t fixed_at(size_t at, uint64_t k) const {
        return at <= n && n - at >= k ? at + size_t(k) : std::string_view::npos;
    }
    size_t elements(size_t at, uint64_t count, int depth) const {
        if (at > n || count > n - at) return std::string_view::npos;  // each element takes a byte at least
        for (uint64_t i = 0; i < count && at != std::string_view::npos; ++i) at = skip(at, depth - 1);
        return at;
    }
};
}  // namespace

void Ext::u16(uint16_t v) {
    u8(uint8_t(v >> 8));
    u8(uint8_t(v));
}
void Ext::u32(uint32_t v) {
    u8(uint8_t(v >> 24));
    u8(uint8_t(v >> 16));
    u8(uint8_t(v >> 8));
    u8(uint8_t(v));
}
Ext& Ext::version() {
    u8(bert::kVersion);
    return *this;
}
Ext& Ext::tuple(size_t arity) {
    if (arity < 256) {
        u8(kSmallTuple);
        u8(uint8_t(arity));
    } else {
        u8(kLargeTuple);
        u32(uint32_t(arity));
    }
    return *this;
}
Ext& Ext::list(size_t n) {
    u8(kList);
    u32(uint32_t(n));
    return *this;
}
Ext& Ext::nil() {
    u8(kNil);
    return *this;
}
Ext& Ext::atom(std::string_view name) {
    if (name.size() < 256) {
        u8(kSmallAtomUtf8);
        u8(uint8_t(name.size()));
    } else {
        u8(kAtomUtf8);
        u16(uint16_t(name.size()));
    }
    out_.append(name);
    return *this;
}
Ext& Ext::binary(std::string_view bytes) { return binary({}, bytes); }
Ext& Ext::binary(std::string_view prefix, std::string_view rest) {
    u8(kBinary);
    u32(uint32_t(prefix.size() + rest.size()));
    out_.append(prefix);
    out_.append(rest);
    return *this;
}
Ext& Ext::integer(int64_t v) {
    if (v >= 0 && v < 256) {
        u8(kSmallInt);
        u8(uint8_t(v));
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
        u8(kInt);
        u32(uint32_t(int32_t(v)));
    } else {
        uint64_t m = v < 0 ? uint64_t(0) - uint64_t(v) : uint64_t(v);
        std::string digits;
        for (; m; m >>= 8) digits.push_back(char(m & 0xff));
        u8(kSmallBig);
        u8(uint8_t(digits.size()));
        u8(v < 0 ? 1 : 0);
        out_.append(digits);
    }
    return *this;
}
Ext& Ext::uinteger(uint64_t v) {
    if (v <= uint64_t(INT32_MAX)) return integer(int64_t(v));
    std::string digits;
    for (; v; v >>= 8) digits.push_back(char(v & 0xff));
    u8(kSmallBig);
    u8(uint8_t(digits.size()));
    u8(0);
    out_.append(digits);
    return *this;
}
Ext& Ext::pid(const bert::Pid& p) {
    u8(kNewPid);
    atom(p.node);
    u32(p.num);
    u32(p.serial);
    u32(p.creation);
    return *this;
}
Ext& Ext::ref(const bert::Ref& r) {
    u8(kNewerRef);
    u16(uint16_t(r.ids.size()));
    atom(r.node);
    u32(r.creation);
    for (uint32_t id : r.ids) u32(id);
    return *this;
}
Ext& Ext::term(const bert::Term& t) {
    std::string enc = bert::encode(t);
    out_.append(enc, 1, std::string::npos);
    return *this;
}
Ext& Ext::raw(std::string_view bytes) {
    out_.append(bytes);
    return *this;
}

size_t begin_packet(std::string& out) {
    size_t start = out.size();
    out.append(4, '\0');
    out.push_back('p');
    return start;
}

void finish_packet(std::string& out, size_t start) {
    uint32_t len = uint32_t(out.size() - start - 4);
    for (int i = 3; i >= 0; --i, len >>= 8) out[start + size_t(i)] = char(len & 0xff);
}

void append_tick(std::string& out) { out.append(4, '\0'); }

size_t skip_term(std::string_view buf, size_t off, int max_depth) {
    Skipper s{reinterpret_cast<const unsigned char*>(buf.data()), buf.size()};
    return s.skip(off, max_depth);
}

bool parse_packet(std::string_view body, Packet& out, std::string& error) {
    if (body.empty() || body[0] != 'p') {
        error = body.empty() ? "an empty packet"
                             : "a packet of kind " + std::to_string(uint8_t(body[0])) +
                                   " (only pass-through is negotiated)";
        return false;
    }
    if (body.size() < 2 || uint8_t(body[1]) != bert::kVersion) {
        error = "a control message without a version byte";
        return false;
    }
    size_t end = skip_term(body, 2);
    if (end == std::string_view::npos) {
        error = "a malformed control message";
        return false;
    }
    if (auto err = bert::decode(body.substr(1, end - 1), out.control)) {
        error = "an undecodable control message: " + err.message;
        return false;
    }
    if (!out.control.is_tuple() || out.control.size() == 0 || !out.control[0].is_int()) {
        error = "a control message that is not {Op, ...}";
        return false;
    }
    out.message = body.substr(end);
    if (!out.message.empty() && uint8_t(out.message[0]) != bert::kVersion) {
        error = "a message without a version byte";
        return false;
    }
    return true;
}

bool send_message(std::string_view body, std::string_view& message, bert::Pid* to) {
    auto* p = reinterpret_cast<const unsigned char*>(body.data());
    if (body.size() < 6 || p[0] != 'p' || p[1] != bert::kVersion || p[2] != kSmallTuple || p[3] != 3 ||
        p[4] != kSmallInt || p[5] != 2)
        return false;
    size_t end = skip_term(body, 2);
    if (end == std::string_view::npos || end >= body.size() || p[end] != bert::kVersion) return false;
    if (to) {
        size_t pid_at = skip_term(body, 6);  // past Unused
        if (pid_at == std::string_view::npos || read_pid(body, pid_at, *to) != end) return false;
    }
    message = body.substr(end);
    return true;
}

size_t read_pid(std::string_view buf, size_t off, bert::Pid& out) {
    const size_t npos = std::string_view::npos;
    auto* p = reinterpret_cast<const unsigned char*>(buf.data());
    if (off >= buf.size() || (p[off] != kPid && p[off] != kNewPid)) return npos;
    bool wide = p[off] == kNewPid;
    size_t at = skip_term(buf, off + 1, 1);  // the node: an atom
    size_t need = wide ? 12 : 9;
    if (at == npos || buf.size() - at < need) return npos;
    out.num = rd32(p + at);
    out.serial = rd32(p + at + 4);
    out.creation = wide ? rd32(p + at + 8) : p[at + 8];
    return at + need;
}

bool parse_tagged(std::string_view message, uint64_t& tag, std::string_view& result) {
    auto* p = reinterpret_cast<const unsigned char*>(message.data());
    size_t n = message.size();
    if (n < 4 || p[0] != bert::kVersion || p[1] != kSmallTuple || p[2] != 2) return false;
    size_t off = 3;
    if (p[off] == kSmallInt && n >= off + 2) {
        tag = p[off + 1];
        off += 2;
    } else if (p[off] == kInt && n >= off + 5) {
        int32_t v = int32_t(rd32(p + off + 1));
        if (v < 0) return false;
        tag = uint64_t(v);
        off += 5;
    } else if (p[off] == kSmallBig && n >= off + 3 && p[off + 1] <= 8 && p[off + 2] == 0 &&
               n >= off + 3 + p[off + 1]) {
        tag = 0;
        for (int i = p[off + 1] - 1; i >= 0; --i) tag = tag << 8 | p[off + 3 + size_t(i)];
        off += 3 + p[off + 1];
    } else {
        return false;
    }
    if (off >= n) return false;
    // The Result runs to the end of the message; whoever reads it checks it.
    result = message.substr(off);
    return true;
}

bool binary_bytes(std::string_view term, std::string_view& bytes) {
    auto* p = reinterpret_cast<const unsigned char*>(term.data());
    if (term.size() < 5 || p[0] != kBinary) return false;
    uint32_t len = rd32(p + 1);
    if (term.size() - 5 != len) return false;
    bytes = term.substr(5);
    return true;
}

}  // namespace bertd::erl
