// rpc10_cpp_client.cc PORT SCENARIO [ARG]: bertd's C++ client (bertd::Client) doing one
// BERT-RPC 1.0 scenario against module `lib` of a server on 127.0.0.1:PORT, for
// tests/integration/test_rpc10.py. Prints what happened, one `key=value` per line (a thrown
// rpc error as `raised=Type` and `message=...`), and exits 0.
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

#include "bert/printer.h"
#include "bertd/client.h"

namespace {

using bert::Term;

void line(const std::string& key, const std::string& value) { std::cout << key << "=" << value << "\n"; }
std::string show(const Term& t) { return bert::to_string(t); }
std::string show(const std::optional<Term>& t) { return t ? bert::to_string(*t) : "none"; }
std::string show(const std::optional<bertd::CacheInfo>& c) {
    if (!c) return "none";
    std::string s = c->access == bertd::CacheInfo::Access::Public ? "public" : "private";
    if (c->expiration) s += " expiration " + std::to_string(*c->expiration);
    if (c->validation) s += " validation " + *c->validation;
    return s;
}

void streams(bertd::Client& c, const std::string& name, const std::string& arg);

void scenario(bertd::Client& c, const std::string& name, const std::string& arg) {
    bertd::RequestOptions o;
    if (name == "cache") {
        o.accept_cache = true;
        bertd::Answer a = c.request("call", "lib", "cached", {7}, o);
        line("cache", show(a.cache));
        line("value", show(a.value->items()[0]));
        line("plain", show(c.call("lib", "cached", {8}).items()[0]));
    } else if (name == "validation") {
        o.accept_cache = true;
        bertd::Answer first = c.request("call", "lib", "validated", {1}, o);
        line("first", show(first.cache));
        bertd::RequestOptions again;
        again.validation = *first.cache->validation;
        bertd::Answer a = c.request("call", "lib", "validated", {1}, again);
        line("again", std::string(a.valid ? "valid " : "not valid ") + show(a.value));
        again.validation = "v0";
        bertd::Answer stale = c.request("call", "lib", "validated", {2}, again);
        line("stale", std::string(stale.valid ? "valid " : "not valid ") + show(stale.cache));
    } else {
        streams(c, name, arg);
    }
}

void streams(bertd::Client& c, const std::string& name, const std::string& arg) {
    bertd::RequestOptions o;
    if (name == "callback") {
        o.callback = bertd::Callback{"127.0.0.1:" + arg, "cron", "updated_stats", {42}};
        c.cast("lib", "add", {86000, 193}, o);
        line("cast", "done");
    } else if (name == "bad_options") {
        o.callback = bertd::Callback{"127.0.0.1:1", "m", "f", {}};
        try {
            c.call("lib", "add", {1, 1}, o);
        } catch (const std::invalid_argument& e) {
            line("call", e.what());
        }
        o.callback = bertd::Callback{"nowhere", "m", "f", {}};
        try {
            c.cast("lib", "add", {1, 1}, o);
        } catch (const std::invalid_argument& e) {
            line("cast", e.what());
        }
    } else if (name == "max_stream") {
        o.stream_in = [](char* buf, size_t cap) {
            std::fill(buf, buf + cap, 's');
            return cap;
        };
        c.call("lib", "sum_stream", {}, o);
    } else if (name == "stop_reading") {
        struct Enough {};
        size_t got = 0;
        o.on_chunk = [&](std::string_view chunk) {
            got += chunk.size();
            throw Enough{};
        };
        try {
            c.call("lib", "stream_out", {64, 1 << 20}, o);
        } catch (const Enough&) {
            line("first", std::to_string(got));
        }
        line("then", show(c.call("lib", "add", {5, 5})));
    } else if (name == "stream") {
        size_t n = 0, bytes = 0;
        o.on_chunk = [&](std::string_view chunk) {
            ++n;
            bytes += chunk.size();
        };
        bertd::Answer a = c.request("call", "lib", "stream_out", {5, 300000}, o);
        line("streamed", a.streamed ? "yes" : "no");
        line("value", show(a.value));
        line("bytes", std::to_string(bytes) + " in " + std::to_string(n) + " chunks, counted " +
                          std::to_string(a.stream_bytes));
        line("gathered", show(c.call("lib", "stream_out", {3, 4})));
    } else if (name.rfind("fake_", 0) == 0) {  // against a scripted server
        if (name == "fake_cache") o.accept_cache = true;
        if (name == "fake_stream")
            o.on_chunk = [](std::string_view chunk) { line("chunk", std::string(chunk)); };
        line("value", show(c.request("call", "m", "f", {}, o).value));
    } else {
        line("unknown", name);
    }
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3) return 2;
    bertd::ClientOptions opts;
    opts.timeout = std::chrono::seconds(20);
    if (argc > 3 && std::string(argv[2]) == "fake_stream")
        opts.max_chunk = std::strtoul(argv[3], nullptr, 10);
    bertd::Client c("127.0.0.1", static_cast<uint16_t>(std::atoi(argv[1])), opts);
    try {
        scenario(c, argv[2], argc > 3 ? argv[3] : "");
    } catch (const bertd::rpc::RemoteError& e) {
        line("raised", e.type());
        line("message", e.detail());
    } catch (const bertd::rpc::InvalidAnswer& e) {
        line("raised", "InvalidAnswer");
        line("message", e.what());
    } catch (const bertd::rpc::ConnectionError& e) {
        line("raised", "ConnectionError");
        line("message", e.what());
    }
    return 0;
}
