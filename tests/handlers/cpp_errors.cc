// cpp_errors.cc: a C++ handler that fails on purpose, so tests can check how the
// handler library turns exceptions and arities into BERT-RPC errors. Never used in benchmarks.
#include <stdexcept>

#include <bertd/handler.h>

int main() {
    bertd::Handler h;
    h.expose("errs", "runtime", 1, [](std::span<const bert::Term> args) -> bert::Term {
        throw std::runtime_error(args[0].is_binary() ? args[0].bytes() : "runtime");
    });
    h.expose("errs", "user", 2, [](std::span<const bert::Term> args) -> bert::Term {
        throw bertd::UserError(args[0].bytes(), args[1].bytes());
    });
    h.expose("errs", "other", 0, [](bertd::Args) -> bert::Term { throw 42; });
    // Any arity: answers the number of arguments it got.
    h.expose("errs", "count", [](bertd::Args args) { return bert::Term(int64_t(args.size())); });
    return h.run();
}
