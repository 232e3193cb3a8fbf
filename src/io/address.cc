// address.cc: printing and matching socket addresses (address.h). An IPv4 client of an
// IPv6 socket ("::ffff:10.1.2.3") is printed and matched as the IPv4 address it is.
#include "io/address.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <cstring>

namespace bertd {

namespace {
// The address's family and bytes, with an IPv4-mapped IPv6 address made IPv4.
int raw_bytes(const sockaddr_storage& a, uint8_t out[16]) {
    if (a.ss_family == AF_INET) {
        memcpy(out, &reinterpret_cast<const sockaddr_in*>(&a)->sin_addr, 4);
        return AF_INET;
    }
    if (a.ss_family == AF_INET6) {
        const in6_addr& in6 = reinterpret_cast<const sockaddr_in6*>(&a)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(&in6)) {
            memcpy(out, in6.s6_addr + 12, 4);
            return AF_INET;
        }
        memcpy(out, in6.s6_addr, 16);
        return AF_INET6;
    }
    return 0;
}

uint16_t port_of(const sockaddr_storage& a) {
    if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&a)->sin_port);
    if (a.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&a)->sin6_port);
    return 0;
}
}  // namespace

bool is_unix(const sockaddr_storage& a) { return a.ss_family == AF_UNIX; }

bool is_loopback(const sockaddr_storage& a) {
    uint8_t b[16];
    int fam = raw_bytes(a, b);
    if (fam == AF_INET) return b[0] == 127;
    if (fam == AF_INET6) {
        static const uint8_t one[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
        return memcmp(b, one, 16) == 0;
    }
    return false;
}

std::string address_text(const sockaddr_storage& a) {
    if (a.ss_family == AF_UNIX) return "unix";
    uint8_t b[16];
    int fam = raw_bytes(a, b);
    if (fam == 0) return "?";
    char buf[INET6_ADDRSTRLEN] = "?";
    inet_ntop(fam, b, buf, sizeof buf);
    return buf;
}

std::string endpoint_text(const sockaddr_storage& a) {
    if (a.ss_family == AF_UNIX) {
        auto* un = reinterpret_cast<const sockaddr_un*>(&a);
        size_t n = strnlen(un->sun_path, sizeof un->sun_path);
        return n && un->sun_path[0] ? "unix:" + std::string(un->sun_path, n) : "unix";
    }
    uint8_t b[16];
    std::string host = address_text(a);
    std::string port = std::to_string(port_of(a));
    return raw_bytes(a, b) == AF_INET6 ? "[" + host + "]:" + port : host + ":" + port;
}

void append_packed(std::string& out, const sockaddr_storage& a) {
    uint8_t b[16] = {};
    int fam = a.ss_family == AF_INET || a.ss_family == AF_INET6 ? a.ss_family : 0;
    if (fam == AF_INET) memcpy(b, &reinterpret_cast<const sockaddr_in*>(&a)->sin_addr, 4);
    if (fam == AF_INET6) memcpy(b, &reinterpret_cast<const sockaddr_in6*>(&a)->sin6_addr, 16);
    uint16_t port = port_of(a);
    out.push_back(char(fam == AF_INET ? 4 : fam == AF_INET6 ? 6 : 0));
    out.append(reinterpret_cast<const char*>(b), 16);
    out.push_back(char(port >> 8));
    out.push_back(char(port & 0xFF));
}

bool take_packed(std::string_view& in, sockaddr_storage& out) {
    if (in.size() < kPackedAddress) return false;
    out = {};
    auto* p = reinterpret_cast<const uint8_t*>(in.data());
    uint16_t port = uint16_t(p[17] << 8 | p[18]);
    if (p[0] == 4) {
        auto* s = reinterpret_cast<sockaddr_in*>(&out);
        s->sin_family = AF_INET;
        memcpy(&s->sin_addr, p + 1, 4);
        s->sin_port = htons(port);
    } else if (p[0] == 6) {
        auto* s = reinterpret_cast<sockaddr_in6*>(&out);
        s->sin6_family = AF_INET6;
        memcpy(&s->sin6_addr, p + 1, 16);
        s->sin6_port = htons(port);
    }
    in.remove_prefix(kPackedAddress);
    return true;
}

std::optional<AddressRange> parse_range(std::string_view text) {
    AddressRange r;
    std::string host(text.substr(0, text.find('/')));
    int max;
    if (inet_pton(AF_INET, host.c_str(), r.bytes) == 1) {
        r.family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, host.c_str(), r.bytes) == 1) {
        r.family = AF_INET6;
        max = 128;
    } else {
        return std::nullopt;
    }
    r.prefix = max;
    if (size_t slash = text.find('/'); slash != std::string_view::npos) {
        std::string_view p = text.substr(slash + 1);
        if (p.empty() || p.size() > 3) return std::nullopt;
        int v = 0;
        for (char c : p) {
            if (c < '0' || c > '9') return std::nullopt;
            v = v * 10 + (c - '0');
        }
        if (v > max) return std::nullopt;
        r.prefix = v;
    }
    return r;
}

bool AddressRange::contains(const sockaddr_storage& a) const {
    uint8_t b[16];
    if (raw_bytes(a, b) != family) return false;
    int full = prefix / 8, rest = prefix % 8;
    if (memcmp(b, bytes, size_t(full)) != 0) return false;
    if (rest == 0) return true;
    uint8_t mask = uint8_t(0xFF << (8 - rest));
    return (b[full] & mask) == (bytes[full] & mask);
}

}  // namespace bertd
