// test_config.cc: YAML and Ernie .cfg configuration, and the messages for bad ones.
#include <CppUTest/TestHarness.h>

#include <unistd.h>

#include <fstream>
#include <string>

#include "core/config.h"

using bertd::Config;
using bertd::ConfigError;
using bertd::ModuleConfig;
using bertd::parse_config_text;

namespace {
// Returns the ConfigError text for a config that must be refused.
std::string refusal(const std::string& text, const std::string& path) {
    try {
        parse_config_text(text, path);
    } catch (const ConfigError& e) {
        return e.what();
    }
    FAIL(("accepted a bad config: " + text).c_str());
    return "";
}
bool contains(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }
}  // namespace

TEST_GROUP(Config){};

TEST(Config, yaml_with_every_key_is_read) {
    Config c = parse_config_text(
        "listen: 127.0.0.1\n"
        "port: 9999\n"
        "acceptors: 3\n"
        "access_log: /tmp/a.log\n"
        "error_log: /tmp/e.log\n"
        "log_level: 4\n"
        "pidfile: /tmp/p.pid\n"
        "admin_allow: [10.0.0.1]\n"
        "limits:\n"
        "  max_frame: 8MiB\n"
        "  idle_timeout: 90s\n"
        "  max_connections: 500\n"
        "  max_queue: 77\n"
        "modules:\n"
        "  - name: ext\n"
        "    command: ruby ext.rb\n"
        "    count: 4\n"
        "    timeout: 1500ms\n"
        "  - name: nat\n"
        "    type: native\n"
        "    codepaths: [/srv/ebin]\n",
        "t.yaml");
    STRCMP_EQUAL("127.0.0.1", c.listen.c_str());
    CHECK_EQUAL(9999, c.port);
    CHECK_EQUAL(3, c.acceptors);
    STRCMP_EQUAL("/tmp/a.log", c.access_log.c_str());
    CHECK_EQUAL(4, c.log_level);
    CHECK_EQUAL(size_t(8) << 20, c.limits.max_frame);
    DOUBLES_EQUAL(90, c.limits.idle_timeout, 1e-9);
    CHECK_EQUAL(500u, c.limits.max_connections);
    CHECK_EQUAL(77u, c.limits.max_queue);
    CHECK_EQUAL(2u, c.modules.size());
    CHECK(c.modules[0].type == ModuleConfig::Type::External);
    CHECK_EQUAL(4, c.modules[0].count);
    DOUBLES_EQUAL(1.5, c.modules[0].timeout, 1e-9);
    CHECK(c.modules[1].type == ModuleConfig::Type::Native);
    STRCMP_EQUAL("/srv/ebin", c.modules[1].codepaths.at(0).c_str());
    STRCMP_EQUAL("t.yaml:15", c.modules[0].where.c_str());
}

TEST(Config, ernie_config_file_is_accepted_unchanged) {
    // The example from Ernie's README, comments and all.
    Config c = parse_config_text(
        "% native first, then the external fallback\n"
        "[{module, nat},\n"
        " {type, native},\n"
        " {codepaths, [\"/path/to/app/ebin\"]}].\n"
        "\n"
        "[{module, ext},\n"
        " {type, external},\n"
        " {command, \"ruby /path/to/app/ernie/ext.rb\"},\n"
        " {count, 2}].\n",
        "ernie.cfg");
    CHECK_EQUAL(2u, c.modules.size());
    STRCMP_EQUAL("nat", c.modules[0].name.c_str());
    CHECK(c.modules[0].type == ModuleConfig::Type::Native);
    STRCMP_EQUAL("ext", c.modules[1].name.c_str());
    STRCMP_EQUAL("ruby /path/to/app/ernie/ext.rb", c.modules[1].command.c_str());
    CHECK_EQUAL(2, c.modules[1].count);
    STRCMP_EQUAL("ernie.cfg:6", c.modules[1].where.c_str());
    CHECK_EQUAL(8000, c.port);  // Ernie's default
}

TEST(Config, cfg_syntax_error_names_file_and_line) {
    std::string e = refusal("[{module, a}, {type, external}, {command, \"x\"}, {count, 1}].\n\n[{module, b}, {type,, x}].\n",
                            "bad.cfg");
    CHECK_TEXT(contains(e, "bad.cfg:3:"), e.c_str());
}

TEST(Config, cfg_semantic_errors_name_the_term) {
    CHECK(contains(refusal("[{module, a}, {type, external}, {count, 1}].", "x.cfg"), "needs a command"));
    CHECK(contains(refusal("[{module, a}, {type, external}, {command, \"c\"}, {count, 0}].", "x.cfg"), "count"));
    CHECK(contains(refusal("[{module, a}, {type, externa}, {command, \"c\"}].", "x.cfg"), "external or native"));
    CHECK(contains(refusal("[{module, a}, {type, external}, {command, \"c\"}, {colour, red}].", "x.cfg"),
                   "unknown option 'colour'"));
    CHECK(contains(refusal("[{module, a}, {type, external}, {command, \"c\"}, {count, 1}]", "x.cfg"), "'.'"));
    CHECK(contains(refusal("% only a comment\n", "x.cfg"), "no modules"));
}

TEST(Config, yaml_errors_name_file_and_line) {
    std::string e = refusal("port: 8000\nmodules:\n  - name: a\n    command: x\n    cuont: 2\n", "c.yaml");
    CHECK_TEXT(contains(e, "c.yaml:5:") && contains(e, "unknown module key 'cuont'"), e.c_str());
    e = refusal("port: eighty\nmodules: []\n", "c.yaml");
    CHECK_TEXT(contains(e, "c.yaml:1:") && contains(e, "whole number"), e.c_str());
    e = refusal("port: 8000\nlimits:\n  max_frame: 3 parsecs\n", "c.yaml");
    CHECK_TEXT(contains(e, "c.yaml:3:") && contains(e, "unit"), e.c_str());
    e = refusal("port: [1\n", "c.yaml");
    CHECK_TEXT(contains(e, "c.yaml:"), e.c_str());
    e = refusal("modules:\n  - name: a\n    command: x\n  - name: a\n    command: y\n", "c.yaml");
    CHECK_TEXT(contains(e, "c.yaml:4:") && contains(e, "defined twice"), e.c_str());
    e = refusal("modules:\n  - name: __admin__\n    command: x\n", "c.yaml");
    CHECK_TEXT(contains(e, "reserved"), e.c_str());
    e = refusal("colour: blue\n", "c.yaml");
    CHECK_TEXT(contains(e, "c.yaml:1:") && contains(e, "unknown key 'colour'"), e.c_str());
}

TEST(Config, native_and_external_may_share_a_name) {
    Config c = parse_config_text(
        "[{module, m}, {type, native}, {codepaths, [\"ebin\"]}].\n"
        "[{module, m}, {type, external}, {command, \"c\"}, {count, 1}].\n",
        "s.cfg");
    CHECK_EQUAL(2u, c.modules.size());
}

TEST(Config, float_format_is_new_or_ernie_in_both_forms) {
    Config y = parse_config_text("modules:\n  - name: a\n    command: x\n    float_format: ernie\n  - name: b\n"
                                 "    command: y\n",
                                 "c.yaml");
    CHECK(y.modules[0].ernie_floats);
    CHECK(!y.modules[1].ernie_floats);
    Config c = parse_config_text("[{module, a}, {type, external}, {command, \"c\"}, {float_format, ernie}].", "x.cfg");
    CHECK(c.modules[0].ernie_floats);
    std::string e = refusal("modules:\n  - name: a\n    command: x\n    float_format: old\n", "c.yaml");
    CHECK_TEXT(contains(e, "c.yaml:4:") && contains(e, "new or ernie"), e.c_str());
    CHECK(contains(refusal("[{module, a}, {type, external}, {command, \"c\"}, {float_format, 1}].", "x.cfg"),
                   "new or ernie"));
}

TEST(Config, sizes_and_durations) {
    CHECK_EQUAL(size_t(512) << 10, bertd::parse_size("512KiB"));
    CHECK_EQUAL(size_t(1) << 30, bertd::parse_size("1g"));
    CHECK_EQUAL(size_t(123), bertd::parse_size("123"));
    CHECK_THROWS(std::invalid_argument, bertd::parse_size("MiB"));
    CHECK_THROWS(std::invalid_argument, bertd::parse_size("12 furlongs"));
    DOUBLES_EQUAL(0.5, bertd::parse_duration("500ms"), 1e-12);
    DOUBLES_EQUAL(300, bertd::parse_duration("5m"), 1e-12);
    DOUBLES_EQUAL(30, bertd::parse_duration("30"), 1e-12);
    CHECK_THROWS(std::invalid_argument, bertd::parse_duration("-1"));
    CHECK_THROWS(std::invalid_argument, bertd::parse_duration("soon"));
}

TEST(Config, the_cookie_can_come_from_a_file_and_only_one_place) {
    std::string path = "/tmp/bertd-unit-cookie." + std::to_string(getpid());
    {
        std::ofstream f(path);
        f << "from-a-file  \n";
    }
    Config c = parse_config_text("erlang:\n  cookie_file: " + path + "\nmodules: []\n", "c.yaml");
    STRCMP_EQUAL("from-a-file", c.erlang.cookie.c_str());  // first line, trailing blanks gone
    CHECK(contains(refusal("erlang:\n  cookie: x\n  cookie_file: " + path + "\nmodules: []\n", "c.yaml"),
                   "give cookie or cookie_file, not both"));
    unlink(path.c_str());
    CHECK(contains(refusal("erlang:\n  cookie_file: " + path + "\nmodules: []\n", "c.yaml"),
                   "cannot read the cookie"));
    { std::ofstream f(path); }
    CHECK(contains(refusal("erlang:\n  cookie_file: " + path + "\nmodules: []\n", "c.yaml"),
                   "the cookie file is empty"));
    unlink(path.c_str());
}
