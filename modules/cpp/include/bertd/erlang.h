// erlang.h: calling Erlang from a C++ handler that bertd runs, through bertd's
// Erlang link (its socket is in the environment variable BERTD_ERLANG), so the
// handler needs no Erlang distribution of its own. One connection per process,
// one request at a time on it (calls from several threads take turns).
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "bert/term.h"

namespace bertd {

// The call did not return normally: bertd could not reach the node, or the node
// answered {badrpc, Reason} (then reason() is Reason; otherwise it is []).
class ErlangError : public std::runtime_error {
public:
    explicit ErlangError(const std::string& message, bert::Term reason = bert::Term::nil())
        : std::runtime_error(message), reason_(std::move(reason)) {}
    const bert::Term& reason() const { return reason_; }

private:
    bert::Term reason_;
};

// Calls module:function(args...) on `node` ("" for bertd's native node) and returns
// the result. Throws ErlangError.
bert::Term erlang_rpc(std::string_view node, std::string_view module, std::string_view function,
                      std::vector<bert::Term> args);

// Sends `message` to the process registered as `name` on `node` ("": bertd's native node).
void erlang_send(std::string_view node, std::string_view name, const bert::Term& message);

}  // namespace bertd
