// rex.cc: bertd's `rex`, the registered name Erlang's rpc module and erl_interface's
// ei_rpc() talk to. It answers every shape they send: $gen_call {call | block_call,
// M, F, A, GL} (rpc:call to nodes without erpc, rpc:block_call, gen_server:call),
// ei_rpc's plain {Pid, {call, M, F, A, GL}} (answered {rex, Result}), $gen_cast
// {cast, M, F, A, GL} (rpc:cast's fallback, rpc:eval_everywhere), and {Pid, {sbcast |
// send, Name, Msg}} (rpc:sbcast). Calls run on external modules. Anything else is
// answered {badrpc, notsup} where the sender can receive an answer, and logged.
#include "bert/printer.h"
#include "erl/link.h"
#include "erl/terms.h"

namespace bertd::erl {

namespace {
using bert::Term;

bool is_pid(const Term& t) { return t.kind() == Term::Kind::Pid; }

// {call, M, F, Args, GroupLeader} (or block_call, cast), M and F atoms, Args a list.
bool is_mfa_request(const Term& req, std::string_view kind) {
    return req.is_tuple(5) && req[0].is_atom(kind) && req[1].is_atom() && req[2].is_atom() &&
           req[3].is_proper_list();
}
}  // namespace

void Link::rex_message(DistConn& d, Term msg) {
    if (msg.is_tuple(3) && msg[0].is_atom("$gen_call") && msg[1].is_tuple(2) && is_pid(msg[1][0])) {
        const auto& from = std::get<bert::Pid>(msg[1][0].value());
        const Term& tag = msg[1][1];
        const Term& req = msg[2];
        if (is_mfa_request(req, "call") || is_mfa_request(req, "block_call")) {
            start_rex_call(d, ExtCall::Origin::Rex, from, tag, req);
            return;
        }
        warn_limited(Drop::Rex, "rex: a gen_server:call from " + d.node + " that bertd does not serve (" +
                                    bert::to_string(req, 200) + "); answered {badrpc, notsup}");
        send_to_pid(d.node, from, Term::tuple({tag, badrpc(Term::atom("notsup"))}));
        return;
    }
    if (msg.is_tuple(2) && msg[0].is_atom("$gen_cast")) {
        const Term& req = msg[1];
        if (!is_mfa_request(req, "cast")) {
            warn_limited(Drop::Rex, "rex: a gen_server:cast from " + d.node + " that bertd does not serve (" +
                                        bert::to_string(req, 200) + "); ignored");
            return;
        }
        auto call = std::make_unique<ExtCall>();
        call->cast = true;
        call->node = d.node;
        call->frame = request_frame(true, req[1], req[2], req[3]);
        call->what = describe(req[1], req[2], req[3]);
        call->key = "m:" + req[1].atom_name();
        call->cap = cap_of(req[1].atom_name());
        start_ext(std::move(call));
        return;
    }
    if (msg.is_tuple(2) && is_pid(msg[0])) {
        const auto& from = std::get<bert::Pid>(msg[0].value());
        const Term& req = msg[1];
        if (is_mfa_request(req, "call")) {
            start_rex_call(d, ExtCall::Origin::RexPlain, from, Term(), req);
            return;
        }
        if (req.is_tuple(3) && (req[0].is_atom("sbcast") || req[0].is_atom("send")) && req[1].is_atom()) {
            sbcast(d, from, req[1].atom_name(), req[2], req[0].is_atom("send"));
            return;
        }
        warn_limited(Drop::Rex, "rex: a request from " + d.node + " that bertd does not serve (" +
                                    bert::to_string(req, 200) + "); answered {rex, {badrpc, notsup}}");
        send_to_pid(d.node, from, Term::tuple({Term::atom("rex"), badrpc(Term::atom("notsup"))}));
        return;
    }
    warn_limited(Drop::Rex, "rex: a message from " + d.node + " that is no request, with no one to answer: " +
                                bert::to_string(msg, 200) + "; dropped");
}

void Link::start_rex_call(DistConn& d, ExtCall::Origin origin, const bert::Pid& from, const Term& tag,
                          const Term& req) {
    auto call = std::make_unique<ExtCall>();
    call->origin = origin;
    call->node = d.node;
    call->from = from;
    call->tag = tag;
    call->frame = request_frame(false, req[1], req[2], req[3]);
    call->what = describe(req[1], req[2], req[3]);
    call->key = "m:" + req[1].atom_name();
    call->cap = cap_of(req[1].atom_name());
    start_ext(std::move(call));
}

// rpc:sbcast: Msg to the name on this node, answered {rex, Node, Node} (delivered) or
// {rex, Node, {nonexisting_name, Name}}. The older {send, Name, Msg} delivers
// {From, Msg} and answers only a failure.
void Link::sbcast(DistConn& d, const bert::Pid& from, const std::string& name, Term msg, bool wrap) {
    if (wrap) msg = Term::tuple({Term(from), std::move(msg)});
    bool ok = name != "rex" && name != "net_kernel" && deliver_to_name(name, std::move(msg), d.node);
    if (!ok)
        dropped(Drop::Unregistered, "a message (rpc:sbcast) from " + d.node + " to '" + name +
                                        "', a name nobody registered on " + cnode_.name());
    if (ok && wrap) return;
    Term me = Term::atom(cnode_.name());
    Term result = ok ? me : Term::tuple({Term::atom("nonexisting_name"), Term::atom(name)});
    send_to_pid(d.node, from, Term::tuple({Term::atom("rex"), me, result}));
}

}  // namespace bertd::erl
