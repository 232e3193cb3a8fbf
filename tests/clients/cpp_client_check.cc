// cpp_client_check.cc: drives bertd::Client through one scenario against a scripted server (see
// modules/cpp/tests/test_cpp_client.py) and prints one line per request: what came back or which
// exception, with its fields. Usage: cpp_client_check PORT SCENARIO. It judges nothing itself.
#include <bertd/client.h>
#include <bertd/handler.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>

#include "bert/printer.h"

using bert::Term;
using namespace std::chrono_literals;

namespace {

std::string fields(const bertd::rpc::RemoteError& e) {
    std::string s = " type=" + e.type() + " code=" + std::to_string(e.code()) + " class=" + e.error_class() +
                    " detail=" + e.detail() + " trace=";
    for (size_t i = 0; i < e.backtrace().size(); ++i) s += (i ? "|" : "") + e.backtrace()[i];
    return s;
}

// What one request gave, as a line.
std::string outcome(const std::function<std::string()>& request) {
    using namespace bertd::rpc;
    try {
        return "ok " + request();
    } catch (const TimeoutError& e) {
        return std::string("TimeoutError ") + e.what();
    } catch (const ConnectionError& e) {
        return std::string("ConnectionError ") + e.what();
    } catch (const InvalidAnswer& e) {
        return std::string("InvalidAnswer ") + e.what();
    } catch (const ProtocolError& e) {
        return "ProtocolError" + fields(e);
    } catch (const ServerError& e) {
        return "ServerError" + fields(e);
    } catch (const UserError& e) {
        return "UserError" + fields(e);
    } catch (const ProxyError& e) {
        return "ProxyError" + fields(e);
    } catch (const RemoteError& e) {
        return "RemoteError" + fields(e);
    }
}

void say(const std::string& line) {
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
}

std::function<std::string()> call(bertd::Client& c, std::string f, std::vector<Term> args = {},
                                  bertd::RequestOptions o = {}) {
    return [&c, f, args, o] { return bert::to_string(c.call("m", f, args, o)); };
}

std::function<std::string()> cast(bertd::Client& c, std::string f) {
    return [&c, f] {
        c.cast("m", f, {1});
        return std::string("noreply");
    };
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: cpp_client_check PORT SCENARIO\n");
        return 2;
    }
    const auto port = static_cast<uint16_t>(std::atoi(argv[1]));
    const std::string scenario = argv[2];
    bertd::ClientOptions o;
    o.timeout = 5s;
    o.connect_timeout = 10s;  // scenarios with short timeouts must not fail to connect on a busy machine

    if (scenario == "basic") {  // one connection per request
        bertd::Client c("127.0.0.1", port, o);
        say(outcome(call(c, "add", {1, 2})));
        say(outcome(cast(c, "work")));
        say(outcome([&] {
            auto r = c.request_raw(std::string("\x83\x68\x01\x64\x00\x01x", 7));
            return r ? bert::to_string(*r) : std::string("noreply");
        }));
        say(c.connected() ? "connected" : "closed");
    } else if (scenario == "errors") {  // each error type, on one kept connection
        o.persistent = true;
        bertd::Client c("127.0.0.1", port, o);
        for (const char* f : {"protocol", "server", "user", "proxy", "other", "old", "badshape"})
            say(outcome(call(c, f)));
        say(c.connected() ? "connected" : "closed");
    } else if (scenario == "priority") {
        o.priority = bertd::Priority::Low;
        bertd::Client low("127.0.0.1", port, o);
        say(outcome(call(low, "a")));
        bertd::RequestOptions high;
        high.priority = bertd::Priority::High;
        high.infos.push_back({"cache", {Term::atom("validation"), Term::binary("tok")}});
        say(outcome(call(low, "b", {}, high)));
        bertd::Client plain("127.0.0.1", port, bertd::ClientOptions{});
        say(outcome(call(plain, "c")));
    } else if (scenario == "timeout") {
        o.timeout = 300ms;
        bertd::Client c("127.0.0.1", port, o);
        auto t0 = std::chrono::steady_clock::now();
        say(outcome(call(c, "slow")));
        auto ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
        say("elapsed " + std::to_string(ms.count()));
    } else if (scenario == "late") {  // a timed-out answer must never be taken for the next one's
        o.timeout = 300ms;
        o.persistent = true;
        bertd::Client c("127.0.0.1", port, o);
        say(outcome(call(c, "slow")));
        say(c.connected() ? "connected" : "closed");
        bertd::RequestOptions patient;
        patient.timeout = 10s;  // only the first request is meant to time out, however busy the machine
        say(outcome(call(c, "next", {}, patient)));
    } else if (scenario == "persistent") {  // the server closes the idle connection after two answers
        o.persistent = true;
        bertd::Client c("127.0.0.1", port, o);
        say(outcome(call(c, "a")));
        say(outcome(call(c, "b")));
        std::this_thread::sleep_for(200ms);  // the server has closed the connection meanwhile
        say(outcome(call(c, "c")));
        say(outcome(call(c, "d")));
        bertd::Client moved = std::move(c);
        say(outcome(call(moved, "e")));
        moved.close();
        say(moved.connected() ? "connected" : "closed");
    } else if (scenario == "broken") {  // answers that are not BERT-RPC answers
        o.persistent = true;
        o.max_answer = 1000;
        bertd::Client c("127.0.0.1", port, o);
        for (const char* f : {"garbage", "shape", "huge", "noreply", "cut"}) say(outcome(call(c, f)));
        say(outcome(cast(c, "reply_to_cast")));
    } else if (scenario == "floats") {  // the float form of requests, and of a handler's answers
        o.float_format = bert::FloatForm::Ernie;
        bertd::Client c("127.0.0.1", port, o);
        say(outcome(call(c, "echo", {Term(2.5)})));
        for (bert::FloatForm form : {bert::FloatForm::New, bert::FloatForm::Ernie}) {
            bertd::Handler h;
            h.expose("m", "echo", [](bertd::Args a) { return std::move(a[0]); });
            if (form == bert::FloatForm::Ernie) h.set_float_format(form);
            Term request =
                Term::tuple({Term::atom("call"), Term::atom("m"), Term::atom("echo"), Term::list({2.5})});
            // Requests in either form; the answer in the handler's.
            for (bert::FloatForm in : {bert::FloatForm::New, bert::FloatForm::Ernie}) {
                auto answer = h.handle(bert::encode(request, {in}));
                Term expected = Term::tuple({Term::atom("reply"), Term(2.5)});
                say(answer && *answer == bert::encode(expected, {form})
                        ? (form == bert::FloatForm::Ernie ? "handler FLOAT_EXT" : "handler NEW_FLOAT_EXT")
                        : "handler wrong answer");
            }
        }
    } else if (scenario == "refused") {
        bertd::Client c("127.0.0.1", port, o);
        say(outcome(call(c, "a")));
        bertd::Client bad_host("no-such-host.invalid", port, o);
        say(outcome(call(bad_host, "a")));
    } else {
        std::fprintf(stderr, "unknown scenario %s\n", scenario.c_str());
        return 2;
    }
    return 0;
}
