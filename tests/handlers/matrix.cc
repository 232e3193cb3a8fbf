// matrix.cc: the cross-language matrix's handler written with the C++ library, module matrix_cc:
// echo(X), value(Name), check(Name, X) and fail(Message), as in matrix.py. Usage: matrix TABLE.
// It never alters a value.
#include <bertd/handler.h>

#include <cstdio>

#include "../clients/matrix_values.h"

using bert::Term;

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: matrix TABLE\n");
        return 2;
    }
    const matrix::Table table = matrix::load_table(argv[1]);
    if (!table.error.empty()) {
        std::fprintf(stderr, "matrix: %s\n", table.error.c_str());
        return 1;
    }
    bertd::Handler h;
    h.expose("matrix_cc", "echo", 1, [](bertd::Args a) { return std::move(a[0]); });
    h.expose("matrix_cc", "value", 1, [&](bertd::Args a) {
        auto it = a[0].is_binary() ? table.values.find(a[0].bytes()) : table.values.end();
        if (it == table.values.end())
            throw bertd::UserError("MatrixError", "no value " + bert::to_string(a[0]));
        return it->second;
    });
    h.expose("matrix_cc", "check", 2, [&](bertd::Args a) {
        auto it = a[0].is_binary() ? table.values.find(a[0].bytes()) : table.values.end();
        if (it == table.values.end()) return Term::tuple({Term::atom("undecodable"), a[0]});
        if (matrix::same(a[1], it->second)) return Term::atom("ok");
        return Term::tuple({Term::atom("mismatch"), Term::binary(matrix::short_text(a[1]))});
    });
    h.expose("matrix_cc", "fail", 1, [](bertd::Args a) -> Term {
        throw bertd::UserError("MatrixError", a[0].is_binary() ? a[0].bytes() : bert::to_string(a[0]));
    });
    return h.run();
}
