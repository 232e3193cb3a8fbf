// printer.h: a Term in Erlang syntax, as io_lib:print(T, 1, Infinity, -1) prints
// it (one line, ~p's choice of strings, quoting and float form). Used for the
// access log and for bertc's output.
#pragma once

#include <cstddef>
#include <string>

#include "bert/term.h"

namespace bert {

// The text is UTF-8 (latin-1 characters of strings and atoms as ~p shows them, other
// characters escaped as ~p does). Pids, refs and ports, which Erlang shows with a
// node index only its own VM knows, are written with the node name in its place:
// <node@host.Num.Serial>, #Ref<node@host.Id2.Id1.Id0>, #Port<node@host.Id>.
// Map keys print in the order Erlang keeps maps of up to 32 keys in (compare_exact
// in term.h); bigger maps, which Erlang shows in its internal hash order,
// print in that same sorted order.
//
// Appends `t` to `out`. When `max_bytes` is non-zero and the text would be longer,
// it is cut to at most `max_bytes` bytes ending in "..." (the access log bounds huge
// requests this way); formatting stops there, so a huge binary, string or list costs
// O(max_bytes), not O(its size). A cut string or binary is shown as text when the shown part is
// printable. Without a limit, printing a bignum is quadratic in its size.
void print(const Term& t, std::string& out, size_t max_bytes = 0);
std::string to_string(const Term& t, size_t max_bytes = 0);

}  // namespace bert
