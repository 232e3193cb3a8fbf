// parser.h: Erlang term syntax -> Term, for Ernie .cfg files and command-line
// arguments. Literal terms only (no expressions, no variables; of funs only
// fun Module:Function/Arity; bit strings such as <<5,1:3>> included); errors carry
// the line and column where the text went wrong.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "bert/term.h"

namespace bert {

struct ParseError {
    std::string message;  // empty on success
    size_t line = 0;      // 1-based
    size_t column = 0;    // 1-based, in bytes
    explicit operator bool() const { return !message.empty(); }
    std::string str() const;  // "line:column: message"
};

// `message` says what was expected where, e.g. "expected ',' or '}' after tuple
// element"; it does not repeat the position.

// Parses exactly one term, optionally followed by a single '.', then only
// whitespace and comments. On error `out` is left unchanged. Nesting is limited to
// 1000 levels, integer literals to 100000 digits, binary literals to 16 MiB.
ParseError parse(std::string_view text, Term& out);

// Parses a sequence of dotted terms ("T1. T2. ..."), as in an Ernie config file.
// Appends each term to `out`; on error, the terms before the bad one are kept.
ParseError parse_dotted(std::string_view text, std::vector<Term>& out);

}  // namespace bert
