// proxy.h: the PROXY protocol header (v1 text, v2 binary) that a load balancer such as
// HAProxy (send-proxy, send-proxy-v2) writes before a client's first byte, telling who
// the client is. A pure parser over the bytes received so far: it never reads past the
// header, never waits for more than kMaxHeader bytes, and treats every byte as hostile.
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <string>
#include <string_view>

namespace bertd::proxy {

constexpr size_t kMaxV1 = 107;       // the spec's longest v1 line, CRLF included
constexpr size_t kMaxV2Body = 1024;  // addresses and TLVs after v2's 16-byte head
constexpr size_t kMaxHeader = 16 + kMaxV2Body;

struct Header {
    enum class Status { NeedMore, Done, Bad } status = Status::NeedMore;
    size_t length = 0;  // Done: bytes the header takes at the front
    int version = 0;    // 1 or 2, once known
    // Done: false for v1 UNKNOWN, v2 LOCAL (a balancer's own health check) and v2 UNSPEC:
    // the connection's own addresses stand.
    bool has_address = false;
    sockaddr_storage source{}, destination{};
    std::string error;  // Bad: what is wrong, for the error log
};

// Reads the header at the front of `bytes` (all that arrived so far).
Header parse(std::string_view bytes);

// What HAProxy writes, for tests and the fuzzer: v1 for TCP4/TCP6, v2 PROXY over TCP.
std::string make_v1(const sockaddr_storage& src, const sockaddr_storage& dst);
std::string make_v2(const sockaddr_storage& src, const sockaddr_storage& dst, std::string_view tlvs = {});
std::string make_v2_local();

}  // namespace bertd::proxy
