// proto.h: the framed protocol between an acceptor and the Erlang link, over a
// unix stream socket. Every message is [u32 length][u8 type][u64 tag][body], the
// length counting what follows it. Encoding and scanning only; no I/O.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace bertd::linkproto {

constexpr size_t kHeader = 4 + 1 + 8;

enum Type : uint8_t {
    // acceptor -> link
    Hello = 1,    // tag 0; body: u64 generation, u32 acceptor index
    Request = 2,  // body: u8 flags, then the client's BERT payload {call|cast, M, F, Args}
    // link -> acceptor
    Answer = 10,    // body: the BERT payload to send to the client
    Declined = 11,    // body: u8 why (net/router.h's Declined); the acceptor's router decides who serves it
    Welcome = 13,     // tag 0, no body: the link took this acceptor's connection (its listen socket
                      // is the master's, so a connect succeeds even while no link runs)
    Connection = 12,  // tag 0, no body, one descriptor attached (SCM_RIGHTS): a connection
                    // the link makes external calls on (rpc:call from Erlang nodes)
};

enum Flags : uint8_t {
    Cast = 1,  // answer once the call is dispatched, with {noreply}
};

// Why a native module did not take a request (the body of Declined).
enum DeclineReason : uint8_t {
    NoModule = 1,    // the node has no such module
    NoFunction = 2,  // it does not export Function/Arity, or Function_pred said external
};

inline void put_u32(char* p, uint32_t v) {
    for (int i = 3; i >= 0; --i, v >>= 8) p[i] = char(v & 0xff);
}
inline void put_u64(char* p, uint64_t v) {
    for (int i = 7; i >= 0; --i, v >>= 8) p[i] = char(v & 0xff);
}
inline uint32_t get_u32(const char* p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v = (v << 8) | uint8_t(p[i]);
    return v;
}
inline uint64_t get_u64(const char* p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | uint8_t(p[i]);
    return v;
}

// Appends one message whose body is `prefix` followed by `body`.
inline void append(std::string& out, Type type, uint64_t tag, std::string_view prefix,
                   std::string_view body = {}) {
    char h[kHeader];
    put_u32(h, uint32_t(1 + 8 + prefix.size() + body.size()));
    h[4] = char(type);
    put_u64(h + 5, tag);
    out.append(h, kHeader);
    out.append(prefix);
    out.append(body);
}

struct Message {
    Type type;
    uint64_t tag;
    std::string_view body;
    size_t total;  // bytes the message takes in the buffer
};

// Looks at the start of `buf`: true and `m` filled when a whole message is there.
// `bad` is set when the length cannot be a message (below the header, above max).
inline bool scan(std::string_view buf, size_t max, Message& m, bool& bad) {
    bad = false;
    if (buf.size() < 4) return false;
    uint32_t len = get_u32(buf.data());
    if (len < 9 || len > max) {
        bad = true;
        return false;
    }
    if (buf.size() < 4 + size_t(len)) return false;
    m.type = Type(uint8_t(buf[4]));
    m.tag = get_u64(buf.data() + 5);
    m.body = buf.substr(kHeader, len - 9);
    m.total = 4 + size_t(len);
    return true;
}

}  // namespace bertd::linkproto
