// echo.cc: the minimal C++ external handler, the one bertd is benchmarked with:
// module echo (or the name given as its argument), echo(X) -> X and sleep(Ms) -> ok.
// It must stay as lean as the library.
#include <chrono>
#include <string_view>
#include <thread>

#include <bertd/handler.h>

int main(int argc, char** argv) {
    // A second name lets one binary serve several modules in the soak and the benchmarks.
    std::string_view module = argc > 1 ? argv[1] : "echo";
    bertd::Handler h;
    h.expose(module, "echo", 1, [](bertd::Args args) { return std::move(args[0]); });
    h.expose(module, "sleep", 1, [](bertd::Args args) {
        if (!args[0].is_int() || args[0].as_int() < 0)
            throw bertd::UserError("ArgumentError", "sleep expects a non-negative integer of milliseconds");
        std::this_thread::sleep_for(std::chrono::milliseconds(args[0].as_int()));
        return bert::Term::atom("ok");
    });
    return h.run();
}
