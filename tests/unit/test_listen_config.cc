// test_listen_config.cc: the `listen` key in all its shapes (Ernie's address and port,
// one entry, a list with options) and the messages for bad entries.
#include <CppUTest/TestHarness.h>

#include <string>

#include "core/config.h"

using bertd::Config;
using bertd::ConfigError;
using bertd::listen_entries;
using bertd::listen_text;
using bertd::parse_config_text;
using bertd::parse_listen_address;

namespace {
std::string refusal(const std::string& text) {
    try {
        parse_config_text(text, "b.yaml");
    } catch (const ConfigError& e) {
        return e.what();
    }
    FAIL(("accepted a bad config: " + text).c_str());
    return "";
}
bool contains(const std::string& hay, const std::string& needle) {
    return hay.find(needle) != std::string::npos;
}
const char* kModule = "modules:\n  - {name: m, command: cat}\n";
}  // namespace

TEST_GROUP(ListenConfig){};

TEST(ListenConfig, ernie_listen_and_port_make_one_entry) {
    Config c = parse_config_text(std::string("listen: 127.0.0.1\nport: 9001\n") + kModule, "b.yaml");
    LONGS_EQUAL(1, listen_entries(c).size());
    STRCMP_EQUAL("127.0.0.1:9001", listen_text(c).c_str());
    Config d = parse_config_text(kModule, "b.yaml");
    STRCMP_EQUAL("0.0.0.0:8000", listen_text(d).c_str());
}

TEST(ListenConfig, a_list_takes_addresses_ipv6_unix_sockets_and_options) {
    Config c =
        parse_config_text(std::string("port: 7000\n"
                                      "listen:\n"
                                      "  - 127.0.0.1:8000\n"
                                      "  - {address: \"127.0.0.1:8001\", proxy_protocol: true}\n"
                                      "  - \"[::1]:8002\"\n"
                                      "  - ::1\n"
                                      "  - {address: \"unix:/run/bertd/bertd.sock\", mode: \"0660\"}\n") +
                              kModule,
                          "b.yaml");
    auto e = listen_entries(c);
    LONGS_EQUAL(5, e.size());
    CHECK_FALSE(e[0].proxy_protocol);
    CHECK(e[1].proxy_protocol);
    LONGS_EQUAL(0660, e[4].mode);
    STRCMP_EQUAL(
        "127.0.0.1:8000, 127.0.0.1:8001 (proxy_protocol), [::1]:8002, [::1]:7000, unix:/run/bertd/bertd.sock",
        listen_text(c).c_str());
}

TEST(ListenConfig, one_mapping_is_one_entry) {
    Config c = parse_config_text(
        std::string("listen: {address: 127.0.0.1, proxy_protocol: yes}\nport: 8100\n") + kModule, "b.yaml");
    auto e = listen_entries(c);
    LONGS_EQUAL(1, e.size());
    CHECK(e[0].proxy_protocol);
    STRCMP_EQUAL("127.0.0.1:8100 (proxy_protocol)", listen_text(c).c_str());
}

TEST(ListenConfig, bad_entries_name_the_line_and_the_fix) {
    std::string m = kModule;
    CHECK(contains(refusal("listen:\n  - 127.0.0.1:8000\n  - localhost:8001\n" + m), "b.yaml:3"));
    CHECK(contains(refusal("listen:\n  - localhost:8001\n" + m), "not a numeric"));
    CHECK(contains(refusal("listen:\n  - 127.0.0.1:99999\n" + m), "port"));
    CHECK(contains(refusal("listen:\n  - \"[::1]8000\"\n" + m), "[::1]:8000"));
    CHECK(contains(refusal("listen:\n  - unix:relative.sock\n" + m), "absolute path"));
    CHECK(contains(refusal("listen:\n  - 127.0.0.1:8000\n  - 127.0.0.1:8000\n" + m), "given twice"));
    CHECK(
        contains(refusal("listen:\n  - {address: 127.0.0.1:1, mode: \"0600\"}\n" + m), "unix sockets only"));
    CHECK(contains(refusal("listen:\n  - {address: 127.0.0.1:1, proxy: true}\n" + m),
                   "unknown listen key 'proxy'"));
    CHECK(contains(refusal("listen:\n  - {address: 127.0.0.1:1, proxy_protocol: maybe}\n" + m),
                   "true or false"));
    CHECK(contains(refusal("listen:\n  - {address: \"unix:/x\", mode: \"rw\"}\n" + m), "octal"));
    CHECK(contains(refusal("listen: []\n" + m), "empty"));
    CHECK(contains(refusal("listen:\n  - {proxy_protocol: true}\n" + m), "needs an address"));
    CHECK(contains(refusal("proxy_protocol_from: [10.0.0.0/33]\n" + m), "proxy_protocol_from"));
}

TEST(ListenConfig, addresses_resolve_with_or_without_a_port) {
    STRCMP_EQUAL("10.1.2.3:8000", parse_listen_address("10.1.2.3", 8000).text().c_str());
    STRCMP_EQUAL("10.1.2.3:81", parse_listen_address("10.1.2.3:81", 8000).text().c_str());
    STRCMP_EQUAL("[2001:db8::1]:8000", parse_listen_address("2001:db8::1", 8000).text().c_str());
    STRCMP_EQUAL("[::]:9", parse_listen_address("[::]:9", 8000).text().c_str());
    CHECK(parse_listen_address("unix:/run/b.sock", 8000).unix_socket);
    CHECK_THROWS(std::invalid_argument, parse_listen_address("unix:", 1));
    CHECK_THROWS(std::invalid_argument, parse_listen_address("unix:/" + std::string(200, 'x'), 1));
    CHECK_THROWS(std::invalid_argument, parse_listen_address("10.1.2.3:", 1));
}

TEST(ListenConfig, proxy_options_and_the_extended_access_log_are_read) {
    Config c = parse_config_text(std::string("proxy_protocol_from: [10.0.0.0/8, 192.0.2.7]\n"
                                             "access_log_format: extended\n"
                                             "limits: {proxy_header_timeout: 500ms}\n") +
                                     kModule,
                                 "b.yaml");
    LONGS_EQUAL(2, c.proxy_protocol_from.size());
    CHECK(c.access_log_extended);
    DOUBLES_EQUAL(0.5, c.limits.proxy_header_timeout, 1e-9);
    CHECK(contains(refusal(std::string("access_log_format: apache\n") + kModule), "ernie or extended"));
    Config d = parse_config_text(kModule, "b.yaml");
    CHECK_FALSE(d.access_log_extended);
    LONGS_EQUAL(2, d.proxy_protocol_from.size());  // loopback, both families
}
