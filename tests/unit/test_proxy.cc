// test_proxy.cc: the PROXY protocol parser (net/proxy.h) and the address helpers it
// reports through (io/address.h): what HAProxy writes is read, and hostile bytes are
// refused at once or waited for only within the header's bounds.
#include <CppUTest/TestHarness.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <string>

#include "io/address.h"
#include "net/proxy.h"

using bertd::address_text;
using bertd::endpoint_text;
using bertd::parse_range;
using bertd::proxy::Header;
using bertd::proxy::parse;

namespace {
sockaddr_storage v4(const char* a, uint16_t port) {
    sockaddr_storage s{};
    auto* in = reinterpret_cast<sockaddr_in*>(&s);
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    inet_pton(AF_INET, a, &in->sin_addr);
    return s;
}
sockaddr_storage v6(const char* a, uint16_t port) {
    sockaddr_storage s{};
    auto* in = reinterpret_cast<sockaddr_in6*>(&s);
    in->sin6_family = AF_INET6;
    in->sin6_port = htons(port);
    inet_pton(AF_INET6, a, &in->sin6_addr);
    return s;
}
bool is(const Header& h, Header::Status s) { return h.status == s; }
std::string tlv(uint8_t type, const std::string& value) {
    std::string t(1, char(type));
    t.push_back(char(value.size() >> 8));
    t.push_back(char(value.size() & 0xFF));
    return t + value;
}
}  // namespace

TEST_GROUP(Proxy){};

TEST(Proxy, v1_tcp4_gives_the_client_address_and_the_header_length) {
    std::string h = "PROXY TCP4 192.0.2.7 127.0.0.1 56324 8000\r\n";
    Header r = parse(h + "\x00\x00\x00\x05rest");
    CHECK(is(r, Header::Status::Done));
    LONGS_EQUAL(h.size(), r.length);
    CHECK(r.has_address);
    STRCMP_EQUAL("192.0.2.7:56324", endpoint_text(r.source).c_str());
    STRCMP_EQUAL("127.0.0.1:8000", endpoint_text(r.destination).c_str());
}

TEST(Proxy, v1_tcp6_and_unknown_are_read) {
    Header r = parse("PROXY TCP6 2001:db8::1 ::1 4000 8000\r\n");
    CHECK(is(r, Header::Status::Done));
    STRCMP_EQUAL("[2001:db8::1]:4000", endpoint_text(r.source).c_str());
    Header u = parse("PROXY UNKNOWN\r\n");
    CHECK(is(u, Header::Status::Done));
    CHECK_FALSE(u.has_address);
    CHECK(is(parse("PROXY UNKNOWN ffff::1 ::1 1 2\r\n"), Header::Status::Done));
}

TEST(Proxy, a_header_arriving_in_pieces_waits_for_the_rest) {
    std::string h = "PROXY TCP4 192.0.2.7 127.0.0.1 56324 8000\r\n";
    for (size_t n = 1; n < h.size(); ++n) CHECK(is(parse(h.substr(0, n)), Header::Status::NeedMore));
    std::string v2 = bertd::proxy::make_v2(v4("192.0.2.7", 1), v4("127.0.0.1", 2));
    for (size_t n = 1; n < v2.size(); ++n) CHECK(is(parse(v2.substr(0, n)), Header::Status::NeedMore));
    CHECK(is(parse(v2), Header::Status::Done));
}

TEST(Proxy, v1_without_crlf_in_107_bytes_is_refused) {
    std::string h = "PROXY TCP4 " + std::string(200, '1');
    Header r = parse(h);
    CHECK(is(r, Header::Status::Bad));
    CHECK(r.error.find("107") != std::string::npos);
}

TEST(Proxy, v1_with_bad_fields_is_refused) {
    const char* bad[] = {
        "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",   "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n",
        "PROXY TCP4 ::1 ::1 1 2\r\n",           "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",  "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",  "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        "PROXX TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    };
    for (const char* b : bad) {
        Header r = parse(b);
        CHECK_TEXT(is(r, Header::Status::Bad), b);
        CHECK_TEXT(!r.error.empty(), b);
    }
    // A NUL inside the line must not end an address early ("1.2.3.4\0junk").
    std::string nul = std::string("PROXY TCP4 1.2.3.4") + '\0' + "x 5.6.7.8 1 2\r\n";
    CHECK(is(parse(nul), Header::Status::Bad));
}

TEST(Proxy, v1_refusals_say_what_is_wrong) {
    CHECK(parse("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n").error.find("fewer than 6") != std::string::npos);
    CHECK(parse("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n").error.find("UDP4") != std::string::npos);
    CHECK(parse("PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n").error.find("port") != std::string::npos);
}

TEST(Proxy, bytes_that_are_not_a_proxy_header_are_refused_at_once) {
    CHECK(is(parse(std::string("\x00\x00\x00\x10", 4)), Header::Status::Bad));  // a BERP frame
    CHECK(is(parse("GET / HTTP/1.1\r\n"), Header::Status::Bad));
    CHECK(is(parse(std::string("\r\n\r\n\0\r\nQUIX\n", 12)), Header::Status::Bad));
    CHECK(is(parse("P"), Header::Status::NeedMore));
    CHECK(is(parse("PR0"), Header::Status::Bad));
}

TEST(Proxy, v2_ipv4_and_ipv6_give_the_client_address) {
    Header r = parse(bertd::proxy::make_v2(v4("198.51.100.9", 40000), v4("127.0.0.1", 8000)));
    CHECK(is(r, Header::Status::Done));
    LONGS_EQUAL(16 + 12, r.length);
    STRCMP_EQUAL("198.51.100.9:40000", endpoint_text(r.source).c_str());
    Header r6 = parse(bertd::proxy::make_v2(v6("2001:db8::9", 1234), v6("::1", 8000)));
    CHECK(is(r6, Header::Status::Done));
    LONGS_EQUAL(16 + 36, r6.length);
    STRCMP_EQUAL("[2001:db8::9]:1234", endpoint_text(r6.source).c_str());
}

TEST(Proxy, v2_local_keeps_the_connection_address) {
    Header r = parse(bertd::proxy::make_v2_local());
    CHECK(is(r, Header::Status::Done));
    CHECK_FALSE(r.has_address);
    LONGS_EQUAL(16, r.length);
    // LOCAL ignores its family byte and what follows, as the spec says.
    std::string odd = bertd::proxy::make_v2_local();
    odd[13] = char(0x11);
    odd[15] = char(3);
    Header o = parse(odd + "abc");
    CHECK(is(o, Header::Status::Done));
    CHECK_FALSE(o.has_address);
    LONGS_EQUAL(19, o.length);
}

TEST(Proxy, v2_with_well_formed_tlvs_skips_them) {
    std::string tlvs = tlv(0x01, "bertrpc") + tlv(0x05, "unique-id-123");
    Header r = parse(bertd::proxy::make_v2(v4("192.0.2.1", 5), v4("127.0.0.1", 6), tlvs) + "after");
    CHECK(is(r, Header::Status::Done));
    LONGS_EQUAL(16 + 12 + tlvs.size(), r.length);
}

TEST(Proxy, v2_with_a_tlv_that_overruns_the_header_is_refused) {
    std::string tlvs = tlv(0x01, "bertrpc");
    tlvs[2] = char(50);  // says 50 bytes, has 7
    Header r = parse(bertd::proxy::make_v2(v4("192.0.2.1", 5), v4("127.0.0.1", 6), tlvs));
    CHECK(is(r, Header::Status::Bad));
    CHECK(r.error.find("TLV") != std::string::npos);
    Header two = parse(bertd::proxy::make_v2(v4("192.0.2.1", 5), v4("127.0.0.1", 6), "\x01\x00"));
    CHECK(is(two, Header::Status::Bad));
}

TEST(Proxy, v2_oversized_is_refused_before_its_body_arrives) {
    std::string h = bertd::proxy::make_v2_local();
    h[14] = char(0xFF);
    h[15] = char(0xFF);
    Header r = parse(h);
    CHECK(is(r, Header::Status::Bad));
    CHECK(r.error.find("65535") != std::string::npos);
}

TEST(Proxy, v2_with_a_bad_version_command_or_family_is_refused) {
    std::string h = bertd::proxy::make_v2(v4("192.0.2.1", 5), v4("127.0.0.1", 6));
    std::string v = h, c = h, f = h, shortaddr = h;
    v[12] = char(0x31);
    c[12] = char(0x22);
    f[13] = char(0x41);
    shortaddr[13] = char(0x21);  // says IPv6, carries 12 bytes
    CHECK(is(parse(v), Header::Status::Bad));
    CHECK(is(parse(c), Header::Status::Bad));
    CHECK(is(parse(f), Header::Status::Bad));
    CHECK(is(parse(shortaddr), Header::Status::Bad));
}

TEST(Proxy, every_prefix_of_random_bytes_is_answered_within_bounds) {
    // Whatever arrives, the parser decides within kMaxHeader bytes.
    unsigned seed = 12345;
    for (int round = 0; round < 2000; ++round) {
        std::string b(bertd::proxy::kMaxHeader + 8, '\0');
        for (auto& ch : b) ch = char((seed = seed * 1103515245 + 12345) >> 16);
        if (round % 3 == 0) b.replace(0, 12, std::string("\r\n\r\n\0\r\nQUIT\n", 12));
        if (round % 3 == 1) b.replace(0, 6, "PROXY ");
        Header r = parse(b);
        CHECK(!is(r, Header::Status::NeedMore));
        if (is(r, Header::Status::Done)) CHECK(r.length <= bertd::proxy::kMaxHeader);
    }
}

TEST(Proxy, packed_addresses_come_back_as_they_went) {
    std::string packed;
    bertd::append_packed(packed, v4("192.0.2.7", 56324));
    bertd::append_packed(packed, v6("2001:db8::9", 1234));
    sockaddr_storage un{};
    un.ss_family = AF_UNIX;
    bertd::append_packed(packed, un);
    LONGS_EQUAL(3 * bertd::kPackedAddress, packed.size());
    std::string_view in = packed;
    sockaddr_storage a, b, c, d;
    CHECK(bertd::take_packed(in, a));
    CHECK(bertd::take_packed(in, b));
    CHECK(bertd::take_packed(in, c));
    CHECK_FALSE(bertd::take_packed(in, d));
    STRCMP_EQUAL("192.0.2.7:56324", endpoint_text(a).c_str());
    STRCMP_EQUAL("[2001:db8::9]:1234", endpoint_text(b).c_str());
    LONGS_EQUAL(AF_UNSPEC, c.ss_family);
}

TEST(Proxy, ranges_match_addresses_ipv4_mapped_included) {
    auto lo = parse_range("127.0.0.0/8");
    CHECK(lo.has_value());
    CHECK(lo->contains(v4("127.1.2.3", 0)));
    CHECK_FALSE(lo->contains(v4("128.0.0.1", 0)));
    CHECK(lo->contains(v6("::ffff:127.0.0.1", 0)));
    auto one = parse_range("::1");
    CHECK(one->contains(v6("::1", 0)));
    CHECK_FALSE(one->contains(v6("::2", 0)));
    auto net = parse_range("10.20.0.0/14");
    CHECK(net->contains(v4("10.23.255.255", 0)));
    CHECK_FALSE(net->contains(v4("10.24.0.0", 0)));
    CHECK_FALSE(parse_range("10.0.0.0/33").has_value());
    CHECK_FALSE(parse_range("localhost").has_value());
    CHECK_FALSE(parse_range("10.0.0.0/").has_value());
    STRCMP_EQUAL("127.0.0.1", address_text(v6("::ffff:127.0.0.1", 0)).c_str());
}
