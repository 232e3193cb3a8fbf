// proxy.cc: parsing PROXY protocol v1 and v2 headers (proxy.h), after the haproxy.org
// specification. Strict: a header is accepted only when every field is what the spec
// says, and its length is decided from the bytes themselves, never beyond the bounds.
#include "net/proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <cstring>

#include "io/address.h"

namespace bertd::proxy {

namespace {
constexpr std::string_view kV1Prefix = "PROXY ";
constexpr char kV2Sig[12] = {'\r', '\n', '\r', '\n', '\0', '\r', '\n', 'Q', 'U', 'I', 'T', '\n'};
constexpr std::string_view kV2Signature(kV2Sig, sizeof kV2Sig);

Header bad(int version, std::string why) {
    Header h;
    h.status = Header::Status::Bad;
    h.version = version;
    h.error = std::move(why);
    return h;
}

// Does `bytes` start with `prefix`, or is it a beginning of it?
bool starts_as(std::string_view bytes, std::string_view prefix) {
    size_t n = std::min(bytes.size(), prefix.size());
    return bytes.substr(0, n) == prefix.substr(0, n);
}

bool port_field(std::string_view s, uint16_t& out) {
    if (s.empty() || s.size() > 5 || (s.size() > 1 && s[0] == '0')) return false;
    unsigned v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return false;
        v = v * 10 + unsigned(c - '0');
    }
    if (v > 65535) return false;
    out = uint16_t(v);
    return true;
}

bool inet_field(int family, std::string_view text, uint16_t port, sockaddr_storage& out) {
    char buf[INET6_ADDRSTRLEN + 1];
    if (text.empty() || text.size() >= sizeof buf) return false;
    memcpy(buf, text.data(), text.size());
    buf[text.size()] = 0;
    out = {};
    if (family == AF_INET) {
        auto* in = reinterpret_cast<sockaddr_in*>(&out);
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        return inet_pton(AF_INET, buf, &in->sin_addr) == 1;
    }
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&out);
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    return inet_pton(AF_INET6, buf, &in6->sin6_addr) == 1;
}

// "PROXY TCP4 192.0.2.1 198.51.100.1 56324 8000\r\n" or "PROXY UNKNOWN ...\r\n".
Header parse_v1(std::string_view bytes) {
    size_t end = bytes.substr(0, kMaxV1).find("\r\n");
    if (end == std::string_view::npos) {
        if (bytes.size() >= kMaxV1) return bad(1, "v1 header without CRLF in its first 107 bytes");
        // A lone LF, or a NUL, is never part of a v1 line: no need to wait for more.
        if (bytes.find_first_of(std::string_view("\n\0", 2)) != std::string_view::npos)
            return bad(1, "v1 header with a stray LF or NUL");
        Header h;
        h.version = 1;
        return h;
    }
    std::string_view line = bytes.substr(kV1Prefix.size(), end - kV1Prefix.size());
    for (char c : line)
        if (c < 0x20 || c > 0x7E) return bad(1, "v1 header with a control or non-ASCII byte");
    Header h;
    h.version = 1;
    h.length = end + 2;
    h.status = Header::Status::Done;
    if (line.substr(0, 7) == "UNKNOWN" && (line.size() == 7 || line[7] == ' ')) return h;
    std::string_view f[5];
    size_t at = 0;
    for (int i = 0; i < 5; ++i) {
        size_t sp = i < 4 ? line.find(' ', at) : line.size();
        if (sp == std::string_view::npos) return bad(1, "v1 header with fewer than 6 fields");
        f[i] = line.substr(at, sp - at);
        at = sp + 1;
    }
    if (f[4].find(' ') != std::string_view::npos) return bad(1, "v1 header with more than 6 fields");
    int family = f[0] == "TCP4" ? AF_INET : f[0] == "TCP6" ? AF_INET6 : 0;
    if (!family)
        return bad(
            1, "v1 header with protocol '" + std::string(f[0].substr(0, 16)) + "' (TCP4, TCP6 or UNKNOWN)");
    uint16_t sport, dport;
    if (!port_field(f[3], sport) || !port_field(f[4], dport)) return bad(1, "v1 header with a bad port");
    if (!inet_field(family, f[1], sport, h.source) || !inet_field(family, f[2], dport, h.destination))
        return bad(1, "v1 header with an address that is not " + std::string(f[0]));
    h.has_address = true;
    return h;
}

bool tlvs_well_formed(std::string_view t) {
    while (!t.empty()) {
        if (t.size() < 3) return false;
        size_t len = size_t(uint8_t(t[1])) << 8 | uint8_t(t[2]);
        if (t.size() < 3 + len) return false;
        t.remove_prefix(3 + len);
    }
    return true;
}

void v2_inet(int family, const char* p, sockaddr_storage& src, sockaddr_storage& dst) {
    src = {};
    dst = {};
    if (family == AF_INET) {
        auto* s = reinterpret_cast<sockaddr_in*>(&src);
        auto* d = reinterpret_cast<sockaddr_in*>(&dst);
        s->sin_family = d->sin_family = AF_INET;
        memcpy(&s->sin_addr, p, 4);
        memcpy(&d->sin_addr, p + 4, 4);
        memcpy(&s->sin_port, p + 8, 2);
        memcpy(&d->sin_port, p + 10, 2);
        return;
    }
    auto* s = reinterpret_cast<sockaddr_in6*>(&src);
    auto* d = reinterpret_cast<sockaddr_in6*>(&dst);
    s->sin6_family = d->sin6_family = AF_INET6;
    memcpy(&s->sin6_addr, p, 16);
    memcpy(&d->sin6_addr, p + 16, 16);
    memcpy(&s->sin6_port, p + 32, 2);
    memcpy(&d->sin6_port, p + 34, 2);
}

Header parse_v2(std::string_view bytes) {
    Header h;
    h.version = 2;
    if (bytes.size() < 16) return h;
    uint8_t ver_cmd = uint8_t(bytes[12]), fam = uint8_t(bytes[13]);
    size_t len = size_t(uint8_t(bytes[14])) << 8 | uint8_t(bytes[15]);
    if ((ver_cmd >> 4) != 2) return bad(2, "v2 header of version " + std::to_string(ver_cmd >> 4));
    int cmd = ver_cmd & 0xF;
    if (cmd > 1) return bad(2, "v2 header with command " + std::to_string(cmd) + " (LOCAL or PROXY)");
    if (len > kMaxV2Body)
        return bad(2, "v2 header of " + std::to_string(len) + " bytes (at most " +
                          std::to_string(kMaxV2Body) + " after the first 16)");
    if (bytes.size() < 16 + len) return h;
    h.length = 16 + len;
    // LOCAL: the balancer speaks for itself (health checks); the spec says to ignore the
    // family and whatever follows, and to keep the connection's own addresses.
    if (cmd == 0) {
        h.status = Header::Status::Done;
        return h;
    }
    int af = fam >> 4, transport = fam & 0xF;
    if (af > 3 || transport > 2)
        return bad(2, "v2 header with unknown address family " + std::to_string(fam));
    size_t need = af == 1 ? 12 : af == 2 ? 36 : af == 3 ? 216 : 0;
    if (len < need) return bad(2, "v2 header too short for its addresses");
    std::string_view body = bytes.substr(16, len);
    if (!tlvs_well_formed(body.substr(need))) return bad(2, "v2 header whose TLVs do not fill it exactly");
    h.status = Header::Status::Done;
    // UNSPEC and unix: no address to take.
    if (af == 0 || af == 3) return h;
    v2_inet(af == 1 ? AF_INET : AF_INET6, body.data(), h.source, h.destination);
    h.has_address = true;
    return h;
}

void put_u16(std::string& out, uint16_t v) {
    out.push_back(char(v >> 8));
    out.push_back(char(v & 0xFF));
}
}  // namespace

Header parse(std::string_view bytes) {
    if (bytes.empty()) return {};
    if (bytes[0] == 'P') {
        if (!starts_as(bytes, kV1Prefix)) return bad(1, "not a PROXY header (it must start with 'PROXY ')");
        if (bytes.size() <= kV1Prefix.size()) return {};
        return parse_v1(bytes);
    }
    if (bytes[0] == '\r') {
        if (!starts_as(bytes, kV2Signature)) return bad(2, "not a PROXY v2 signature");
        return parse_v2(bytes);
    }
    return bad(0, "no PROXY header: the first byte is neither 'P' (v1) nor v2's signature");
}

std::string make_v1(const sockaddr_storage& src, const sockaddr_storage& dst) {
    bool v6 = src.ss_family == AF_INET6;
    auto port = [](const sockaddr_storage& a) {
        return a.ss_family == AF_INET6 ? ntohs(reinterpret_cast<const sockaddr_in6*>(&a)->sin6_port)
                                       : ntohs(reinterpret_cast<const sockaddr_in*>(&a)->sin_port);
    };
    return std::string("PROXY ") + (v6 ? "TCP6 " : "TCP4 ") + address_text(src) + " " + address_text(dst) +
           " " + std::to_string(port(src)) + " " + std::to_string(port(dst)) + "\r\n";
}

std::string make_v2(const sockaddr_storage& src, const sockaddr_storage& dst, std::string_view tlvs) {
    std::string out(kV2Signature);
    bool v6 = src.ss_family == AF_INET6;
    out.push_back(char(0x21));
    out.push_back(char(v6 ? 0x21 : 0x11));
    put_u16(out, uint16_t((v6 ? 36 : 12) + tlvs.size()));
    if (v6) {
        auto* s = reinterpret_cast<const sockaddr_in6*>(&src);
        auto* d = reinterpret_cast<const sockaddr_in6*>(&dst);
        out.append(reinterpret_cast<const char*>(&s->sin6_addr), 16);
        out.append(reinterpret_cast<const char*>(&d->sin6_addr), 16);
        out.append(reinterpret_cast<const char*>(&s->sin6_port), 2);
        out.append(reinterpret_cast<const char*>(&d->sin6_port), 2);
    } else {
        auto* s = reinterpret_cast<const sockaddr_in*>(&src);
        auto* d = reinterpret_cast<const sockaddr_in*>(&dst);
        out.append(reinterpret_cast<const char*>(&s->sin_addr), 4);
        out.append(reinterpret_cast<const char*>(&d->sin_addr), 4);
        out.append(reinterpret_cast<const char*>(&s->sin_port), 2);
        out.append(reinterpret_cast<const char*>(&d->sin_port), 2);
    }
    out.append(tlvs);
    return out;
}

std::string make_v2_local() {
    std::string out(kV2Signature);
    out.push_back(char(0x20));
    out.push_back(char(0x00));
    put_u16(out, 0);
    return out;
}

}  // namespace bertd::proxy
