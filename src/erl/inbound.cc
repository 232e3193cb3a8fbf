// inbound.cc: what Erlang nodes send to bertd's C-node. rpc:call arrives as an erpc
// spawn request (or, from rpc:block_call, older nodes and ei_rpc, a request to rex:
// rex.cc); a message to a name becomes a cast, one to a pid the addressee's
// (processes.cc); net_adm:ping is answered. Each call runs as a BERT-RPC request on
// a loop connection (loops.cc). Nothing here waits for an answer.
#include <cstring>

#include "bert/codec.h"
#include "bert/printer.h"
#include "erl/link.h"
#include "erl/terms.h"
#include "log/log.h"

namespace bertd::erl {

namespace {
using bert::Term;

bool has_option(const Term& opts, std::string_view name) {
    if (!opts.is_proper_list()) return false;
    for (const auto& o : opts.items()) {
        if (o.is_atom(name)) return true;
        if (o.is_tuple() && o.size() >= 1 && o[0].is_atom(name)) return true;
    }
    return false;
}

}  // namespace

void Link::dist_packet(DistConn& d, std::string_view body) {
    std::string_view message;
    bert::Pid to;
    if (send_message(body, message, &to)) {
        pid_message(d.node, to, message);
        return;
    }
    Packet p;
    std::string err;
    if (!parse_packet(body, p, err)) {
        log::warn("Erlang node %s sent %s; closing the connection", d.node.c_str(), err.c_str());
        close_stream(d, err);
        return;
    }
    const Term& ctl = p.control;
    switch (ctl[0].as_int()) {
        case kSend:
        case kSendTT:
        case kSendSender:
            if (ctl.size() >= 3 && ctl[2].kind() == Term::Kind::Pid)
                pid_message(d.node, std::get<bert::Pid>(ctl[2].value()), p.message);
            return;
        case kRegSend:
        case kRegSendTT:
            if (ctl.size() >= 4 && ctl[1].kind() == Term::Kind::Pid && ctl[3].is_atom())
                reg_send(d, std::get<bert::Pid>(ctl[1].value()), ctl[3].atom_name(), p.message);
            return;
        case kSpawnRequest:
        case kSpawnRequestTT: spawn_request(d, ctl, p.message); return;
        default:
            // Links, monitors and exits: nothing here holds state that they could affect.
            log::debug("Erlang node %s: control message %s ignored", d.node.c_str(),
                       bert::to_string(ctl, 200).c_str());
            return;
    }
}

// A message to our own pid: the answer {Tag, Result} to one of our calls.
void Link::reply_message(std::string_view message) {
    uint64_t tag;
    std::string_view result;
    if (!parse_tagged(message, tag, result)) {
        log::debug("a message that answers no call was dropped");
        return;
    }
    auto it = calls_.find(tag);
    if (it == calls_.end()) return;  // timed out, or its node connection was replaced
    Call c = std::move(it->second);
    if (c.has_deadline) deadlines_.erase(c.deadline);
    calls_.erase(it);
    switch (c.kind) {
        case Call::Kind::Native: native_reply(c, result); return;
        case Call::Kind::PidLookup: pid_found(c, result); return;
        case Call::Kind::HandlerRpc: {
            std::string bytes = versioned(result);
            Term t;
            if (auto e = bert::decode(bytes, t, term_limits()))
                handler_error(c.handler, "undecodable answer from " + c.node + ": " + unreadable(e));
            else
                handler_answer(c.handler, Term::tuple({Term::atom("reply"), std::move(t)}));
            return;
        }
        default: setup_reply(c, result); return;
    }
}

void Link::reg_send(DistConn& d, const bert::Pid& /*from*/, const std::string& name,
                    std::string_view message) {
    if (name != "net_kernel") count_inbound(name == "rex" ? Inbound::Rpc : Inbound::Name);
    Term msg;
    if (auto e = bert::decode(message, msg)) {
        dropped(Drop::Undecodable,
                "a message from " + d.node + " to '" + name + "' that cannot be decoded (" + e.message + ")");
        return;
    }
    if (name == "net_kernel") {
        // net_adm:ping asks {is_auth, Node}; the handshake already checked the cookie.
        if (msg.is_tuple(3) && msg[0].is_atom("$gen_call") && msg[1].is_tuple(2) &&
            msg[1][0].kind() == Term::Kind::Pid && msg[2].is_tuple(2) && msg[2][0].is_atom("is_auth"))
            send_to_pid(d.node, std::get<bert::Pid>(msg[1][0].value()),
                        Term::tuple({msg[1][1], Term::atom("yes")}));
        return;
    }
    if (name == "rex") {
        rex_message(d, std::move(msg));
        return;
    }
    if (!deliver_to_name(name, std::move(msg), d.node))
        dropped(Drop::Unregistered, "a message from " + d.node + " to '" + name +
                                        "', a name nobody registered on " + cnode_.name());
}

// erpc (and so rpc:call, rpc:cast) spawns erpc:execute_call/4 or execute_cast/3 on
// the remote node. bertd answers as if a process had been spawned, runs the call
// on an external module, then signals that "process"'s exit to the monitor, which
// is how erpc learns the result.
void Link::spawn_request(DistConn& d, const Term& ctl, std::string_view message) {
    if (ctl.size() < 6 || ctl[2].kind() != Term::Kind::Pid) return;
    count_inbound(Inbound::Rpc);
    const Term& req_id = ctl[1];
    const auto& from = std::get<bert::Pid>(ctl[2].value());
    const Term& mfa = ctl[4];
    const Term& opts = ctl[5];
    Term args;
    bool args_ok = !message.empty() && !bert::decode(message, args) && args.is_proper_list();
    bool monitor = has_option(opts, "monitor"), linked = has_option(opts, "link");
    auto reply = [&](const Term& result, int flags) {
        send_packet(d, Term::tuple({Term(kSpawnReply), req_id, Term(from), Term(flags), result}), nullptr);
    };
    bool call = mfa.is_tuple(3) && mfa[0].is_atom("erpc") && mfa[1].is_atom("execute_call") && args_ok &&
                args.size() == 4 && args[1].is_atom() && args[2].is_atom() && args[3].is_proper_list();
    bool cast = mfa.is_tuple(3) && mfa[0].is_atom("erpc") && mfa[1].is_atom("execute_cast") && args_ok &&
                args.size() == 3 && args[0].is_atom() && args[1].is_atom() && args[2].is_proper_list();
    if (!call && !cast) {
        log::debug("spawn request from %s for %s refused", d.node.c_str(), bert::to_string(mfa, 200).c_str());
        reply(Term::atom("notsup"), 0);
        return;
    }
    auto c = std::make_unique<ExtCall>();
    c->origin = ExtCall::Origin::Spawn;
    c->node = d.node;
    c->from = from;
    c->req_id = req_id;
    c->monitor = monitor;
    c->linked = linked;
    c->cast = cast;
    c->fake = cnode_.self();
    // A pid of its own, so a late signal can never be mistaken for another call's.
    c->fake.num = new_pid_num();
    c->fake.serial = 1;
    size_t base = call ? 1 : 0;
    if (call) c->res = args[0];
    c->frame = request_frame(cast, args[base], args[base + 1], args[base + 2]);
    c->what = describe(args[base], args[base + 1], args[base + 2]);
    c->key = "m:" + args[base].atom_name();
    c->cap = cap_of(args[base].atom_name());
    reply(Term(c->fake), (linked ? 1 : 0) | (monitor ? 2 : 0));
    start_ext(std::move(c));
}

void Link::finish_ext(ExtCall& call, const Term* answer, const std::string& error) {
    bool ok = false;
    Term value = Term::atom("ok");
    Term reason;
    if (answer && answer->is_tuple(2) && (*answer)[0].is_atom("reply")) {
        ok = true;
        value = (*answer)[1];
    } else if (answer && answer->is_tuple(1) && (*answer)[0].is_atom("noreply")) {
        ok = true;
    } else if (answer && answer->is_tuple(2) && (*answer)[0].is_atom("error") && (*answer)[1].is_tuple()) {
        reason = (*answer)[1];
    } else {
        reason = server_error(answer ? "unexpected answer " + bert::to_string(*answer, 300) : error);
    }
    if (!ok && call.origin == ExtCall::Origin::Message)
        warn_limited(Drop::Process, "a message from " + call.node + " failed: " + call.what + ": " +
                                        bert::to_string(reason, 300));
    else if (!ok)
        log::debug("%s from %s failed: %s", call.what.c_str(), call.node.c_str(),
                   bert::to_string(reason, 300).c_str());
    switch (call.origin) {
        case ExtCall::Origin::Rex:
        case ExtCall::Origin::RexPlain: {
            // What rpc:call returns for an exception: {badrpc, {'EXIT', {Reason, Stack}}}.
            Term result =
                ok ? value : badrpc(Term::tuple({Term::atom("EXIT"), Term::tuple({reason, Term::nil()})}));
            Term head = call.origin == ExtCall::Origin::Rex ? call.tag : Term::atom("rex");
            send_to_pid(call.node, call.from, Term::tuple({head, result}));
            return;
        }
        case ExtCall::Origin::Spawn: {
            DistConn* d = conn_of(node(call.node));
            if (!d) return;
            Term exit = call.cast ? Term::atom("normal")
                        : ok      ? Term::tuple({call.res, Term::atom("return"), value})
                                  : Term::tuple({call.res, Term::atom("error"), reason, Term::nil()});
            if (call.monitor)
                send_packet(
                    *d,
                    Term::tuple({Term(kMonitorPExit), Term(call.fake), Term(call.from), call.req_id, exit}),
                    nullptr);
            if (call.linked)
                send_packet(*d, Term::tuple({Term(kExit), Term(call.fake), Term(call.from), exit}), nullptr);
            return;
        }
        case ExtCall::Origin::Message: return;
    }
}

}  // namespace bertd::erl
