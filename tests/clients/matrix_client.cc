// matrix_client.cc: the cross-language matrix's C++ client: runs every check of a plan against one bertd
// over one persistent bertd::Client and prints `ok N` or `fail N why` per check, then `done`.
// Usage: matrix_client HOST PORT TABLE PLAN. It never retries a failed check.
#include <bertd/client.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>

#include "matrix_values.h"

using bert::Term;

namespace {

const std::string kMessage = "matrix failure: \xe2\x98\x83 \xc3\xbc";

std::string changed(const Term& got, const Term& want) {
    return matrix::same(got, want) ? "" : "changed: " + matrix::short_text(got);
}

template <typename E>
std::string expect_error(const std::function<void()>& fn, int64_t code, const std::string* detail,
                         const char* error_class = nullptr) {
    try {
        fn();
    } catch (const E& e) {
        if (e.code() != code || (detail && e.detail() != *detail) ||
            (error_class && e.error_class() != error_class))
            return std::string("got ") + e.what();
        return "";
    } catch (const bertd::rpc::Error& e) {
        return std::string("got another error: ") + e.what();
    }
    return "no error";
}

std::string run_check(bertd::Client& c, const std::string& check, const std::string& mod,
                      const std::string& name, const matrix::Table& table) {
    auto it = table.values.find(name);
    if (!name.empty() && it == table.values.end()) return "the codec cannot decode the value";
    const Term value = name.empty() ? Term() : it->second;
    if (check == "echo") return changed(c.call(mod, "echo", {value}), value);
    if (check == "send") {
        Term got = c.call(mod, "check", {Term::binary(name), value});
        return got.is_atom("ok") ? "" : "handler saw: " + matrix::short_text(got);
    }
    if (check == "fetch") return changed(c.call(mod, "value", {Term::binary(name)}), value);
    if (check == "priority") {
        bertd::RequestOptions low;
        low.priority = bertd::Priority::Low;
        return changed(c.call(mod, "echo", {value}, low), value);
    }
    if (check == "cast") {
        c.cast(mod, "echo", {value});
        return "";
    }
    if (check == "user_error")
        return expect_error<bertd::rpc::UserError>([&] { c.call(mod, "fail", {Term::binary(kMessage)}); }, 0,
                                                   &kMessage, "MatrixError");
    if (check == "no_function") {
        std::string detail = "No such function '" + mod + ":no_such_function'";
        return expect_error<bertd::rpc::ServerError>([&] { c.call(mod, "no_such_function", {1}); }, 2,
                                                     &detail);
    }
    if (check == "no_module") {
        std::string detail = "No such module 'matrix_none'";
        return expect_error<bertd::rpc::ServerError>([&] { c.call("matrix_none", "f"); }, 1, &detail);
    }
    if (check == "protocol")
        return expect_error<bertd::rpc::ProtocolError>([&] { c.request_raw(std::string("\x83\xff\x00", 3)); },
                                                       2, nullptr);
    return "unknown check " + check;
}

std::string one_line(std::string s) {
    for (char& ch : s)
        if (ch == '\n' || ch == '\r') ch = ' ';
    return s;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 5) {
        std::fprintf(stderr, "usage: matrix_client HOST PORT TABLE PLAN\n");
        return 2;
    }
    const matrix::Table table = matrix::load_table(argv[3]);
    Term plan;
    std::string plan_error;
    if (matrix::read_term(argv[4], plan, plan_error) && !plan.is_proper_list())
        plan_error = "the plan is not a list";
    if (!table.error.empty() || !plan_error.empty()) {
        std::fprintf(stderr, "matrix_client: %s%s\n", table.error.c_str(), plan_error.c_str());
        return 1;
    }
    bertd::ClientOptions options;
    options.timeout = std::chrono::seconds(60);
    options.persistent = true;
    bertd::Client c(argv[1], static_cast<uint16_t>(std::atoi(argv[2])), options);
    std::string out;
    size_t i = 0;
    for (const Term& item : plan.items()) {
        std::string why;
        try {
            why = run_check(c, item[0].atom_name(), item[1].atom_name(), item[2].bytes(), table);
        } catch (const std::exception& e) {
            why = e.what();
        }
        out += why.empty() ? "ok " + std::to_string(i) : "fail " + std::to_string(i) + " " + one_line(why);
        out += '\n';
        ++i;
    }
    out += "done\n";
    std::fputs(out.c_str(), stdout);
    return 0;
}
