// cpp_proc.cc: a C++ handler as a process of bertd's Erlang node, for
// tests/integration/test_erlang_node.py (module `cppproc`): the twin of pyproc.py.
// At start it registers `cppproc_events`: a message {ReplyTo, Payload} to that
// name makes the worker that runs it send {got, Payload, OsPid} to ReplyTo.
#include <unistd.h>

#include "bertd/erlang.h"
#include "bertd/handler.h"

using bert::Term;

namespace {
void forward(const Term& message) {
    if (!message.is_tuple(2)) return;
    bertd::erlang_send(message[0], Term::tuple({Term::atom("got"), message[1], Term(int64_t(getpid()))}));
}

Term error_pair(const bertd::ErlangError& e) {
    return Term::list({Term::binary("ErlangError"), Term::binary(e.what())});
}

bertd::Timeout millis(const Term& t) {
    if (!t.is_int() || t.as_int() < 0) return std::nullopt;
    return std::chrono::milliseconds(t.as_int());
}

// [A, B] from the test as the tuple {A, B} (a list stands for a tuple destination).
Term dest_of(const Term& t) {
    if (!t.is_list() || t.is_nil()) return t.is_binary() ? Term::atom(t.bytes()) : t;
    std::vector<Term> items;
    for (const auto& i : t.items()) items.push_back(i.is_binary() ? Term::atom(i.bytes()) : i);
    return Term::tuple(std::move(items));
}
}  // namespace

int main() {
    bertd::erlang_register_process("cppproc_events", forward);
    bertd::Handler h;
    h.expose("cppproc", "me", 0, [](bertd::Args) -> Term { return Term(bertd::self_pid()); });
    h.expose("cppproc", "echo", 1, [](bertd::Args a) -> Term { return std::move(a[0]); });
    h.expose("cppproc", "forward_next", 2, [](bertd::Args a) -> Term {
        auto m = bertd::erlang_recv_message(millis(a[1]));
        if (!m) return Term::atom("timeout");
        bertd::erlang_send(a[0], *m);
        return Term::atom("true");
    });
    h.expose("cppproc", "ospid", 0, [](bertd::Args) -> Term { return Term(int64_t(getpid())); });
    h.expose("cppproc", "recv", 1, [](bertd::Args a) -> Term {
        auto m = bertd::erlang_recv_message(millis(a[0]));
        return m ? *m : Term::atom("timeout");
    });
    h.expose("cppproc", "recv_all", 2, [](bertd::Args a) -> Term {
        std::vector<Term> got;
        for (int64_t i = 0; i < a[0].as_int(); ++i) {
            auto m = bertd::erlang_recv_message(millis(a[1]));
            if (!m) break;
            got.push_back(*m);
        }
        return Term::list(std::move(got));
    });
    h.expose("cppproc", "send", 2, [](bertd::Args a) -> Term {
        try {
            bertd::erlang_send(dest_of(a[0]), a[1]);
        } catch (const bertd::ErlangError& e) {
            return error_pair(e);
        }
        return Term::atom("true");
    });
    h.expose("cppproc", "register", 1, [](bertd::Args a) -> Term {
        try {
            bertd::erlang_register_process(a[0].bytes(), forward);
        } catch (const bertd::ErlangError& e) {
            return error_pair(e);
        }
        return Term::atom("true");
    });
    h.expose("cppproc", "connect_and_call", 2, [](bertd::Args a) -> Term {
        bertd::ErlangNode node = bertd::erlang_connect(a[0].bytes());
        std::vector<Term> out;
        for (int64_t i = 0; i < a[1].as_int(); ++i) out.push_back(node.rpc("erlang", "node", {}));
        return Term::list(std::move(out));
    });
    h.expose("cppproc", "rpc", 5, [](bertd::Args a) -> Term {
        try {
            return bertd::erlang_rpc(a[0].bytes(), a[1].bytes(), a[2].bytes(), a[3].items(), millis(a[4]));
        } catch (const bertd::ErlangError& e) {
            return error_pair(e);
        }
    });
    return h.run();
}
