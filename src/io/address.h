// address.h: socket addresses as bertd prints and compares them: loopback, the text
// of an address with or without its port, and the ranges of proxy_protocol_from and
// admin_allow ("10.0.0.0/8", "::1"). Pure functions; nothing here does I/O.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace bertd {

bool is_loopback(const sockaddr_storage& a);
bool is_unix(const sockaddr_storage& a);
// "10.1.2.3", "2001:db8::1" (an IPv4-mapped IPv6 address as IPv4), "unix" for a unix peer.
std::string address_text(const sockaddr_storage& a);
// "10.1.2.3:5678", "[2001:db8::1]:5678", "unix:/path" (or "unix" without a path).
std::string endpoint_text(const sockaddr_storage& a);

// A fixed-size record of an IPv4 or IPv6 address and port (any other kind packs as "none"),
// to pass a connection's client along with its descriptor (a hand-over between generations).
constexpr size_t kPackedAddress = 19;
void append_packed(std::string& out, const sockaddr_storage& a);
// Takes one record from the front of `in`; false when `in` is too short. A "none" record
// leaves `out` with family AF_UNSPEC.
bool take_packed(std::string_view& in, sockaddr_storage& out);

// An address range: "127.0.0.0/8", "::1/128", or one address ("10.0.0.1": /32 or /128).
struct AddressRange {
    int family = 0;  // AF_INET or AF_INET6
    uint8_t bytes[16] = {};
    int prefix = 0;
    bool contains(const sockaddr_storage& a) const;
};
// nullopt when `text` is not a numeric address with an optional /prefix.
std::optional<AddressRange> parse_range(std::string_view text);

}  // namespace bertd
