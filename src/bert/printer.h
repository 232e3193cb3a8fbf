// printer.h: a Term in Erlang syntax, as io_lib:print(T, 1, Infinity, -1) prints
// it (one line, ~p's choice of strings, quoting and float form), or the same text
// straight from a term's encoded bytes. Used for the access log, error answers and
// bertc's output.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "bert/codec.h"
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

// Appends the text of the encoded term `bytes` (version byte first, as decode()
// takes them) without building the term: the very text print() writes for the term
// decode() makes of those bytes, cut the same way at `max_bytes`. A cut print reads
// only what it shows, and every key of a map it shows (to find their order); a
// compressed term is inflated only that far. So it costs O(max_bytes + bytes read)
// time and O(max_bytes + depth) memory, whatever the term's shape (one exception:
// a map whose keys are not in order on the wire keeps up to max_bytes / 6 key
// positions while it prints). The bytes it reads get decode()'s checks, but for
// duplicate map keys, and a problem is returned (then `out` is unchanged); bytes
// past the cut are not read, so a term decode() refuses may still print.
DecodeError print_encoded(std::string_view bytes, std::string& out, size_t max_bytes = 0,
                          const Limits& limits = {});

}  // namespace bert
