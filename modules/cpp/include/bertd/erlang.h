// erlang.h: a C++ handler that bertd runs is a process of bertd's Erlang node.
// Through bertd's Erlang link (its socket is in the environment variable
// BERTD_ERLANG) it calls Erlang, holds node connections, sends to names and pids,
// has a pid and a mailbox of its own, and registers names whose messages run a
// function, with no Erlang distribution of its own. One connection per process,
// one request at a time on it (calls from several threads take turns).
#pragma once

#include <chrono>
#include <functional>
#include <optional>
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

using Timeout = std::optional<std::chrono::milliseconds>;  // nullopt: bertd's erlang.call_timeout / for ever

// A held connection to an Erlang node (erlang_connect): bertd keeps it up while
// this worker lives, and calls through it reuse it.
class ErlangNode {
public:
    explicit ErlangNode(std::string name) : name_(std::move(name)) {}
    const std::string& name() const { return name_; }
    bert::Term rpc(std::string_view module, std::string_view function, std::vector<bert::Term> args,
                   Timeout timeout = std::nullopt) const;
    void send(std::string_view registered_name, const bert::Term& message) const;

private:
    std::string name_;
};

// Connects bertd to `node` now (or throws ErlangError) and returns the handle.
ErlangNode erlang_connect(std::string_view node);

// Calls module:function(args...) on `node` ("" for bertd's native node) and returns
// the result. Throws ErlangError, also after `timeout`.
bert::Term erlang_rpc(std::string_view node, std::string_view module, std::string_view function,
                      std::vector<bert::Term> args, Timeout timeout = std::nullopt);

// Sends `message` to the process registered as `name` on `node` ("": bertd's native node).
void erlang_send(std::string_view node, std::string_view name, const bert::Term& message);
// ... to a name registered on bertd's own node (another worker's, or the configuration's).
void erlang_send(std::string_view name, const bert::Term& message);
// ... to a pid (one received in a message, or a worker's self_pid()).
void erlang_send(const bert::Pid& pid, const bert::Term& message);
// ... to `dest` as a term: {Name, Node}, a pid, {Node, Number, Serial} or a name.
void erlang_send(const bert::Term& dest, const bert::Term& message);

// This worker's pid on bertd's node; it lasts as long as the worker's connection.
bert::Pid self_pid();

// The next message sent to self_pid(), oldest first; nullopt after `timeout`
// (nullopt: wait for ever).
std::optional<bert::Term> erlang_recv_message(Timeout timeout = std::nullopt);

// Registers `name` on bertd's node for this worker's module: {name, BertdNode} !
// Msg from any Erlang node then runs fn(Msg) on one of the module's workers (as a
// cast), so register it in code every worker runs, before Handler::run(). A name
// another module holds throws ErlangError.
using ProcessFunction = std::function<void(const bert::Term& message)>;
void erlang_register_process(std::string_view name, ProcessFunction fn);

namespace detail {
// The function registered for `name` in this process, or an empty one (Handler uses it).
ProcessFunction erlang_process(std::string_view name);
}  // namespace detail

}  // namespace bertd
