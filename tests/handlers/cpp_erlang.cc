// cpp_erlang.cc: C++'s side of erlang_rpc/erlang_send for tests/integration/test_erlang.py:
// module `cpperl` calls Erlang through bertd. Node, module and function come as binaries.
#include "bertd/erlang.h"
#include "bertd/handler.h"

using bert::Term;

int main() {
    bertd::Handler h;
    h.expose("cpperl", "rpc", 4, [](bertd::Args a) -> Term {
        try {
            return bertd::erlang_rpc(a[0].bytes(), a[1].bytes(), a[2].bytes(), a[3].items());
        } catch (const bertd::ErlangError& e) {
            return Term::list({Term::binary("ErlangError"), Term::binary(e.what())});
        }
    });
    h.expose("cpperl", "send", 3, [](bertd::Args a) -> Term {
        bertd::erlang_send(a[0].bytes(), a[1].bytes(), a[2]);
        return Term::atom("true");
    });
    return h.run();
}
