// printer.h: a Term in Erlang syntax, as io_lib:print(T, 1, Infinity, -1) prints
// it (one line, ~p's choice of strings, quoting and float form). Used for the
// access log and for bertc's output.
#pragma once

#include <cstddef>
#include <string>

#include "bert/term.h"

namespace bert {

// Appends `t` to `out`. When `max_bytes` is non-zero and the text would be longer,
// it is cut there and ends in "..." (the access log bounds huge requests this way).
void print(const Term& t, std::string& out, size_t max_bytes = 0);
std::string to_string(const Term& t, size_t max_bytes = 0);

}  // namespace bert
