// echo.cc: the minimal C++ external handler, the one bertd is benchmarked with:
// module echo, echo(X) -> X and sleep(Ms) -> ok. It must stay as lean as the library.
#include <chrono>
#include <thread>

#include <bertd/handler.h>

int main() {
    bertd::Handler h;
    h.expose("echo", "echo", 1, [](bertd::Args args) { return std::move(args[0]); });
    h.expose("echo", "sleep", 1, [](bertd::Args args) {
        if (!args[0].is_int() || args[0].as_int() < 0)
            throw bertd::UserError("ArgumentError", "sleep expects a non-negative integer of milliseconds");
        std::this_thread::sleep_for(std::chrono::milliseconds(args[0].as_int()));
        return bert::Term::atom("ok");
    });
    return h.run();
}
