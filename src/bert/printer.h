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
// Map keys print in the order Erlang keeps maps of up to 32 keys in (see
// compare_map_keys); bigger maps, which Erlang shows in its internal hash order,
// print in that same sorted order.
//
// Appends `t` to `out`. When `max_bytes` is non-zero and the text would be longer,
// it is cut to at most `max_bytes` bytes ending in "..." (the access log bounds huge
// requests this way); formatting stops there, so a huge binary, string or list costs
// O(max_bytes), not O(its size). A cut string or binary is shown as text when the shown part is
// printable. Without a limit, printing a bignum is quadratic in its size.
void print(const Term& t, std::string& out, size_t max_bytes = 0);
std::string to_string(const Term& t, size_t max_bytes = 0);

// The order in which Erlang/OTP 25 keeps the keys of a map of up to 32 keys (and
// so prints them and writes them in term_to_binary): term order, except that all
// integers come before all floats, at every nesting level ({2} before {1.5}).
// Returns <0, 0 or >0. The parser sorts map literals with it too.
int compare_map_keys(const Term& a, const Term& b);

}  // namespace bert
