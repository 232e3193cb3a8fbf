// test_erl.cc: the Erlang link's pure parts: distribution packets and the term
// writer (checked against the codec), the acceptor-link framing, the node names
// and cookie bertd chooses, the companion's command line, and the erlang: config.
// The standard containers before CppUTest, whose leak detector redefines `new`.
#include <deque>
#include <unordered_map>

#include <CppUTest/TestHarness.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "bert/codec.h"
#include "core/cli.h"
#include "core/config.h"
#include "erl/dist.h"
#include "erl/drops.h"
#include "erl/fair.h"
#include "erl/identity.h"
#include "erl/proto.h"

using bert::Term;
using bertd::Config;
using bertd::ConfigError;
using bertd::Options;
using bertd::parse_config_text;
namespace erl = bertd::erl;

namespace {
std::string ext_of(const Term& t) { return bert::encode(t).substr(1); }

// The term some external-format bytes (no version byte) stand for.
Term term_of(std::string_view ext) {
    Term t;
    if (auto err = bert::decode("\x83" + std::string(ext), t)) FAIL(err.message.c_str());
    return t;
}

bool contains(const std::string& hay, const std::string& needle) {
    return hay.find(needle) != std::string::npos;
}

// A directory holding a (fake) bertd_native.beam, for configs with native
// modules; removed when the test program exits.
struct FakeEbin {
    std::string dir;
    FakeEbin() {
        char tmpl[] = "/tmp/bertd-unit-ebinXXXXXX";
        dir = mkdtemp(tmpl);
        std::ofstream(dir + "/bertd_native.beam") << "beam";
    }
    ~FakeEbin() {
        unlink((dir + "/bertd_native.beam").c_str());
        rmdir(dir.c_str());
    }
};
const std::string& fake_ebin() {
    static FakeEbin e;
    return e.dir;
}

Config native_config(const std::string& extra = "") {
    return parse_config_text(
        "port: 9000\n"
        "modules:\n"
        "  - name: nat\n"
        "    type: native\n"
        "    codepaths: [/srv/a, /srv/b]\n"
        "  - name: ext\n"
        "    command: ruby ext.rb\n"
        "erlang:\n"
        "  cookie: sesame\n"
        "  ebin: " +
            fake_ebin() + "\n" + extra,
        "t.yaml");
}
}  // namespace

TEST_GROUP(Dist){};

// The writer's atoms are SMALL_ATOM_UTF8 (what the distribution uses), where
// term_to_binary in OTP 25 writes latin-1 atoms: the terms are the same.
TEST(Dist, writer_matches_the_codec) {
    std::string out;
    erl::Ext e(out);
    bert::Pid pid{"n@127.0.0.1", 7, 3, 123456};
    bert::Ref ref{"n@127.0.0.1", {1, 2, 3}, 99};
    e.tuple(8)
        .atom("call")
        .integer(5)
        .integer(-70000)
        .uinteger(uint64_t(1) << 40)
        .binary("ab", "cd")
        .pid(pid)
        .ref(ref);
    e.list(2).integer(1).atom("").nil();
    Term expect =
        Term::tuple({Term::atom("call"), Term(5), Term(-70000), Term(int64_t(1) << 40), Term::binary("abcd"),
                     Term(pid), Term(ref), Term::list({Term(1), Term::atom("")})});
    CHECK(term_of(out) == expect);
}

TEST(Dist, skip_term_finds_the_end_of_every_kind_and_refuses_truncation) {
    Term t =
        Term::tuple({Term(1), Term(1000), Term(1.5), Term::atom("a"), Term::binary("xyz"),
                     Term::string("str"), Term::list({Term(1), Term(2)}),
                     Term(bert::Map{{{Term(1), Term(2)}}}), Term(bert::Pid{"n@h", 1, 2, 3}),
                     Term(bert::Ref{"n@h", {1, 2}, 3}), Term(bert::BigInt{false, std::string(20, '\x07')})});
    std::string bytes = ext_of(t);
    CHECK_EQUAL(bytes.size(), erl::skip_term(bytes, 0));
    for (size_t cut = 0; cut < bytes.size(); ++cut)
        CHECK_EQUAL(std::string_view::npos, erl::skip_term(std::string_view(bytes).substr(0, cut), 0));
    // A list that claims more elements than there are bytes.
    std::string lying("\x6c\xff\xff\xff\xff\x61\x01\x6a", 8);
    CHECK_EQUAL(std::string_view::npos, erl::skip_term(lying, 0));
    // Nesting beyond the limit.
    std::string deep;
    for (int i = 0; i < 300; ++i) deep += std::string("\x68\x01", 2);
    deep += "\x6a";
    CHECK_EQUAL(std::string_view::npos, erl::skip_term(deep, 0, 200));
}

TEST(Dist, packets_split_into_control_and_message) {
    std::string out;
    size_t start = erl::begin_packet(out);
    erl::Ext e(out);
    e.version().tuple(4).integer(erl::kRegSend).pid({"a@h", 1, 0, 5}).atom("").atom("rex");
    e.version().tuple(2).uinteger(77).binary("\x83\x61\x01");
    erl::finish_packet(out, start);
    CHECK_EQUAL(out.size() - 4, size_t(uint8_t(out[3])));
    erl::Packet p;
    std::string err;
    CHECK_TEXT(erl::parse_packet(std::string_view(out).substr(4), p, err), err.c_str());
    CHECK(p.control[0] == Term(erl::kRegSend));
    CHECK(p.control[3].is_atom("rex"));
    uint64_t tag = 0;
    std::string_view result, bytes;
    CHECK(erl::parse_tagged(p.message, tag, result));
    CHECK_EQUAL(77u, tag);
    CHECK(erl::binary_bytes(result, bytes));
    CHECK(bytes == std::string_view("\x83\x61\x01", 3));

    std::string_view fast;
    CHECK_FALSE(erl::send_message(std::string_view(out).substr(4), fast));  // a REG_SEND
    std::string send;
    size_t at = erl::begin_packet(send);
    erl::Ext(send).version().tuple(3).integer(erl::kSend).atom("").pid({"a@h", 1, 0, 5});
    erl::Ext(send).version().atom("hello");
    erl::finish_packet(send, at);
    CHECK(erl::send_message(std::string_view(send).substr(4), fast));
    CHECK(term_of(fast.substr(1)) == Term::atom("hello"));
    bert::Pid to;
    CHECK(erl::send_message(std::string_view(send).substr(4), fast, &to));
    CHECK_EQUAL(1u, to.num);
    CHECK_EQUAL(0u, to.serial);
    CHECK_EQUAL(5u, to.creation);
    CHECK_FALSE(
        erl::parse_packet(std::string_view("E\x83\x68\x00", 4), p, err));  // a fragment: not negotiated
    CHECK(contains(err, "pass-through"));
    CHECK_FALSE(erl::parse_packet(std::string_view("p\x83\x68\x05", 4), p, err));
}

TEST(Dist, pids_are_read_in_both_formats_and_truncation_is_refused) {
    std::string wide = ext_of(Term(bert::Pid{"n@h", 70000, 9, 0xABCDEF01}));
    bert::Pid p;
    CHECK_EQUAL(wide.size(), erl::read_pid(wide, 0, p));
    CHECK_EQUAL(70000u, p.num);
    CHECK_EQUAL(9u, p.serial);
    CHECK_EQUAL(0xABCDEF01u, p.creation);
    // PID_EXT, as older nodes write it: a one-byte creation.
    std::string old =
        std::string("\x67\x77\x03n@h", 6) + std::string("\x00\x00\x00\x07\x00\x00\x00\x02\x03", 9);
    CHECK_EQUAL(old.size(), erl::read_pid(old, 0, p));
    CHECK_EQUAL(7u, p.num);
    CHECK_EQUAL(3u, p.creation);
    for (size_t cut = 0; cut < wide.size(); ++cut)
        CHECK_EQUAL(std::string_view::npos, erl::read_pid(std::string_view(wide).substr(0, cut), 0, p));
    CHECK_EQUAL(std::string_view::npos, erl::read_pid(ext_of(Term::atom("pid")), 0, p));
}

TEST(Dist, tags_beyond_32_bits_round_trip) {
    for (uint64_t tag : {uint64_t(0), uint64_t(255), uint64_t(256), uint64_t(1) << 31, ~uint64_t(0)}) {
        std::string out;
        erl::Ext(out).version().tuple(2).uinteger(tag).atom("ok");
        uint64_t got = 1;
        std::string_view rest;
        CHECK(erl::parse_tagged(out, got, rest));
        CHECK_EQUAL(tag, got);
        CHECK(term_of(rest) == Term::atom("ok"));
    }
    std::string neg;
    erl::Ext(neg).version().tuple(2).integer(-1).atom("ok");
    uint64_t got;
    std::string_view rest;
    CHECK_FALSE(erl::parse_tagged(neg, got, rest));
}

TEST_GROUP(FairQueues){};

TEST(FairQueues, a_key_at_its_cap_waits_and_keeps_its_order) {
    erl::FairQueues<int> q;
    CHECK(q.can_start("a", 1));
    q.started("a", 1);
    CHECK_FALSE(q.can_start("a", 1));
    CHECK(q.push("a", 1, 10, 1));
    CHECK(q.push("a", 1, 10, 2));
    std::string key;
    int v = 0;
    CHECK_FALSE(q.pop(key, v));  // "a" runs its one already
    q.finished("a");
    CHECK(q.pop(key, v));
    STRCMP_EQUAL("a", key.c_str());
    CHECK_EQUAL(1, v);
    CHECK_FALSE(q.can_start("a", 1));  // 2 waits: a newcomer goes behind it
}

TEST(FairQueues, keys_take_turns_so_a_flood_to_one_never_starves_another) {
    erl::FairQueues<int> q;
    for (int i = 0; i < 100; ++i) CHECK(q.push("flood", 4, 1000, int(i)));
    CHECK(q.push("other", 4, 1000, 1000));
    std::string key;
    int v;
    bool other_ran = false;
    for (int i = 0; i < 4 && q.pop(key, v); ++i) other_ran |= key == "other";
    CHECK(other_ran);  // among the first turns, not after the hundred
}

TEST(FairQueues, a_full_key_refuses_and_empty_keys_are_forgotten) {
    erl::FairQueues<int> q;
    CHECK(q.push("a", 1, 2, 1));
    CHECK(q.push("a", 1, 2, 2));
    CHECK_FALSE(q.push("a", 1, 2, 3));
    CHECK_EQUAL(2u, q.waiting("a"));
    std::string key;
    int v;
    while (q.pop(key, v)) q.finished(key);
    CHECK_EQUAL(0u, q.waiting());
    CHECK_FALSE(q.push("b", 1, 0, 1));  // a limit of 0 holds nothing, and leaves no key behind
    CHECK_EQUAL(0u, q.keys());
}

TEST_GROUP(DropLog){};

TEST(DropLog, a_few_lines_per_reason_per_interval_and_every_drop_counted) {
    erl::DropLog d;
    uint64_t unlogged = 99;
    for (int i = 0; i < erl::DropLog::kLinesPerInterval; ++i) {
        CHECK(d.note(erl::Drop::DeadPid, 1'000 + i, unlogged));
        CHECK_EQUAL(0u, unlogged);
    }
    for (int i = 0; i < 5; ++i) CHECK_FALSE(d.note(erl::Drop::DeadPid, 2'000, unlogged));
    CHECK(d.note(erl::Drop::Unregistered, 2'000, unlogged));  // another reason has lines of its own
    CHECK(d.note(erl::Drop::DeadPid, 1'000 + erl::DropLog::kIntervalUs, unlogged));
    CHECK_EQUAL(5u, unlogged);
    CHECK_EQUAL(uint64_t(erl::DropLog::kLinesPerInterval + 6), d.count(erl::Drop::DeadPid));
    CHECK_EQUAL(0u, d.count(erl::Drop::QueueFull));
}

TEST_GROUP(LinkProto){};

TEST(LinkProto, messages_round_trip_and_bad_lengths_are_caught) {
    std::string buf;
    bertd::linkproto::append(buf, bertd::linkproto::Request, 42, std::string_view("\x03", 1), "payload");
    bertd::linkproto::Message m;
    bool bad;
    CHECK_FALSE(bertd::linkproto::scan(std::string_view(buf).substr(0, buf.size() - 1), 1024, m, bad));
    CHECK_FALSE(bad);
    CHECK(bertd::linkproto::scan(buf, 1024, m, bad));
    CHECK_EQUAL(bertd::linkproto::Request, m.type);
    CHECK_EQUAL(42u, m.tag);
    CHECK(m.body == std::string_view("\x03payload", 8));
    CHECK_EQUAL(buf.size(), m.total);
    std::string tiny("\x00\x00\x00\x02xx", 6);
    CHECK_FALSE(bertd::linkproto::scan(tiny, 1024, m, bad));
    CHECK(bad);
    CHECK_FALSE(bertd::linkproto::scan(buf, 4, m, bad));
    CHECK(bad);
}

TEST_GROUP(Identity){};

TEST(Identity, no_erlang_needed_means_no_link) {
    Config c = parse_config_text("modules:\n  - name: ext\n    command: x\n", "t.yaml");
    Options o;
    CHECK_FALSE(erl::resolve_identity(o, c).enabled);
}

TEST(Identity, a_companion_takes_the_name_and_the_cnode_a_derived_one) {
    Options o;
    o.name = "ernie0@127.0.0.1";
    erl::Identity id = erl::resolve_identity(o, native_config());
    CHECK(id.enabled);
    CHECK(id.long_names);
    STRCMP_EQUAL("ernie0@127.0.0.1", id.companion.c_str());
    STRCMP_EQUAL("ernie0_bertd@127.0.0.1", id.cnode.c_str());
    STRCMP_EQUAL("sesame", id.cookie.c_str());
    STRCMP_EQUAL("ernie0@127.0.0.1", erl::module_node(native_config().modules[0], id).c_str());

    o.cookie = "fromcli";
    id = erl::resolve_identity(o, native_config("  link_name: front\n"));
    STRCMP_EQUAL("front@127.0.0.1", id.cnode.c_str());
    STRCMP_EQUAL("fromcli", id.cookie.c_str());
}

TEST(Identity, without_a_companion_the_cnode_takes_the_name) {
    Config c = parse_config_text(
        "modules:\n"
        "  - name: nat\n"
        "    type: native\n"
        "    node: app@10.0.0.2\n"
        "erlang:\n"
        "  name: front@10.0.0.1\n"
        "  cookie: c\n"
        "  ebin: " +
            fake_ebin() + "\n",
        "t.yaml");
    Options o;
    erl::Identity id = erl::resolve_identity(o, c);
    STRCMP_EQUAL("front@10.0.0.1", id.cnode.c_str());
    CHECK(id.companion.empty());
    STRCMP_EQUAL("app@10.0.0.2", erl::module_node(c.modules[0], id).c_str());
}

TEST(Identity, short_names_and_the_default) {
    Options o;
    o.sname = "web";
    erl::Identity id = erl::resolve_identity(o, native_config());
    CHECK_FALSE(id.long_names);
    CHECK(id.cnode.rfind("web_bertd@", 0) == 0);
    CHECK(id.cnode.find('.') == std::string::npos);
    o.sname.clear();
    id = erl::resolve_identity(o, native_config());
    CHECK(id.companion.rfind("bertd_9000@", 0) == 0);
}

TEST(Identity, bad_names_are_refused) {
    Options o;
    o.name = "bad name@host";
    CHECK_THROWS(ConfigError, erl::resolve_identity(o, native_config()));
    o.name.clear();
    o.sname = "web@host.example.com";
    CHECK_THROWS(ConfigError, erl::resolve_identity(o, native_config()));
    o.sname = "web";
    CHECK_THROWS(ConfigError, erl::resolve_identity(o, native_config("  link_name: web\n")));
}

TEST(Identity, companion_command_has_the_paths_options_and_a_hidden_cookie) {
    Options o;
    o.name = "n@127.0.0.1";
    o.erlang_opts = "+S 1";
    Config c = native_config("  vm_options: -kernel x y\n");
    erl::Identity id = erl::resolve_identity(o, c);
    erl::CompanionCommand cc = erl::companion_command(id, c, o);
    CHECK(contains(cc.command, "-name 'n@127.0.0.1'"));
    CHECK(contains(cc.command, "-pa '" + fake_ebin() + "' -pa '/srv/a' -pa '/srv/b'"));
    CHECK(contains(cc.command, "-kernel x y +S 1"));
    CHECK_FALSE(contains(cc.command, "sesame"));
    for (const auto& e : cc.env) CHECK_FALSE(contains(e, "sesame"));
    STRCMP_EQUAL("sesame", cc.cookie.c_str());  // the master writes it to the VM's private HOME
    CHECK(contains(cc.command, "BERTD_HOME"));
    STRCMP_EQUAL("'it'\\''s'", erl::shell_quote("it's").c_str());
}

TEST_GROUP(ErlangConfig){};

TEST(ErlangConfig, every_key_is_read) {
    Config c = native_config(
        "  name: n@127.0.0.1\n"
        "  trust_clients: true\n"
        "  call_timeout: 2s\n"
        "  max_queue: 500\n"
        "  registered:\n"
        "    - name: events\n"
        "      module: ext\n"
        "      function: event\n");
    CHECK(c.erlang.present);
    CHECK(c.erlang.trust_clients);
    DOUBLES_EQUAL(2.0, c.erlang.call_timeout, 1e-9);
    CHECK_EQUAL(1u, c.erlang.registered.size());
    STRCMP_EQUAL("event", c.erlang.registered[0].function.c_str());
    CHECK_EQUAL(500u, c.erlang.max_queue);
    CHECK_EQUAL(10000u, native_config().erlang.max_queue);  // the default
}

TEST(ErlangConfig, mistakes_are_refused_with_what_to_fix) {
    auto refusal = [](const std::string& extra) -> std::string {
        try {
            native_config(extra);
        } catch (const ConfigError& e) {
            return e.what();
        }
        return "";
    };
    CHECK(contains(refusal("  registered:\n    - name: e\n      module: nat\n      function: f\n"),
                   "not an external module"));
    CHECK(contains(refusal("  registered:\n    - name: rex\n      module: ext\n      function: f\n"), "rex"));
    CHECK(contains(refusal("  trust_clients: maybe\n"), "true or false"));
    CHECK(contains(refusal("  nmae: x\n"), "unknown erlang key 'nmae'"));
    CHECK(contains(refusal("  max_queue: 0\n"), "max_queue"));
    CHECK(contains(refusal("  name: a@h\n  sname: b\n"), "not both"));
}

TEST(Identity, the_cookie_file_is_created_like_erl_does_and_then_read) {
    char tmpl[] = "/tmp/bertd-unit-homeXXXXXX";
    std::string home = mkdtemp(tmpl);
    const char* old = getenv("HOME");
    std::string saved = old ? old : "";
    setenv("HOME", home.c_str(), 1);
    Config c = parse_config_text("erlang:\n  name: n@127.0.0.1\n", "t.yaml");
    Options o;
    erl::Identity a = erl::resolve_identity(o, c);
    erl::Identity b = erl::resolve_identity(o, c);
    std::string path = home + "/.erlang.cookie";
    struct stat st {};
    int rc = stat(path.c_str(), &st);
    unlink(path.c_str());
    rmdir(home.c_str());
    if (old)
        setenv("HOME", saved.c_str(), 1);
    else
        unsetenv("HOME");
    CHECK_EQUAL(0, rc);
    CHECK_EQUAL(0400u, st.st_mode & 0777u);
    CHECK_EQUAL(20u, a.cookie.size());
    STRCMP_EQUAL(a.cookie.c_str(), b.cookie.c_str());
    CHECK(a.cookie_from_file);
    for (char ch : a.cookie) CHECK(ch >= 'A' && ch <= 'Z');
}
