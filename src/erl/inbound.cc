// inbound.cc: what Erlang nodes send to bertd's C-node. rpc:call arrives as an erpc
// spawn request (or, from rpc:block_call and older nodes, a $gen_call to rex); a
// message to a registered name becomes a cast; net_adm:ping is answered. Each call
// runs as a BERT-RPC request on a loop connection: a socketpair whose other end an
// acceptor serves like a client, with queues, priorities, stats and the access log,
// but never routed to native modules. Nothing here waits for an answer.
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "bert/codec.h"
#include "bert/frame.h"
#include "bert/printer.h"
#include "erl/link.h"
#include "erl/proto.h"
#include "io/unix.h"
#include "log/log.h"

namespace bertd::erl {

namespace {
constexpr size_t kMaxLoops = 64;

using bert::Term;

bool has_option(const Term& opts, std::string_view name) {
    if (!opts.is_proper_list()) return false;
    for (const auto& o : opts.items()) {
        if (o.is_atom(name)) return true;
        if (o.is_tuple() && o.size() >= 1 && o[0].is_atom(name)) return true;
    }
    return false;
}

std::string describe(const Term& m, const Term& f, const Term& a) {
    return (m.is_atom() ? m.atom_name() : "?") + ":" + (f.is_atom() ? f.atom_name() : "?") + "/" +
           std::to_string(a.is_proper_list() ? a.size() : 0);
}

std::string request_frame(bool cast, const Term& m, const Term& f, const Term& a) {
    std::string frame;
    bert::append_frame(frame, bert::encode(Term::tuple({Term::atom(cast ? "cast" : "call"), m, f, a})));
    return frame;
}

Term server_error(const std::string& detail) {
    return Term::tuple(
        {Term::atom("server"), Term(0), Term::binary("ServerError"), Term::binary(detail), Term::nil()});
}
}  // namespace

void Link::dist_packet(DistConn& d, std::string_view body) {
    std::string_view message;
    if (send_message(body, message)) {
        reply_message(message);
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
        case kSendSender: reply_message(p.message); return;
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
        case Call::Kind::HandlerRpc: {
            std::string bytes(1, char(bert::kVersion));
            bytes.append(result);
            Term t;
            if (auto e = bert::decode(bytes, t))
                handler_error(c.handler, "undecodable answer: " + e.message);
            else
                handler_answer(c.handler, Term::tuple({Term::atom("reply"), std::move(t)}));
            return;
        }
        default: setup_reply(c, result); return;
    }
}

void Link::reg_send(DistConn& d, const bert::Pid& from, const std::string& name, std::string_view message) {
    Term msg;
    if (auto e = bert::decode(message, msg)) {
        log::warn("a message from %s to '%s' cannot be decoded (%s); dropped", d.node.c_str(), name.c_str(),
                  e.message.c_str());
        return;
    }
    bool gen_call = msg.is_tuple(3) && msg[0].is_atom("$gen_call") && msg[1].is_tuple(2) &&
                    msg[1][0].kind() == Term::Kind::Pid;
    if (name == "net_kernel") {
        // net_adm:ping asks {is_auth, Node}; the handshake already checked the cookie.
        if (gen_call && msg[2].is_tuple(2) && msg[2][0].is_atom("is_auth"))
            send_to_pid(d.node, std::get<bert::Pid>(msg[1][0].value()),
                        Term::tuple({msg[1][1], Term::atom("yes")}));
        return;
    }
    if (name == "rex") {
        if (gen_call) {
            const Term& req = msg[2];
            auto call = std::make_unique<ExtCall>();
            call->origin = ExtCall::Origin::Rex;
            call->node = d.node;
            call->from = std::get<bert::Pid>(msg[1][0].value());
            call->tag = msg[1][1];
            if (req.is_tuple(5) && (req[0].is_atom("call") || req[0].is_atom("block_call")) &&
                req[1].is_atom() && req[2].is_atom() && req[3].is_proper_list()) {
                call->frame = request_frame(false, req[1], req[2], req[3]);
                call->what = describe(req[1], req[2], req[3]);
                start_ext(std::move(call));
            } else {
                send_to_pid(
                    d.node, call->from,
                    Term::tuple({call->tag, Term::tuple({Term::atom("badrpc"), Term::atom("notsup")})}));
            }
        } else if (msg.is_tuple(2) && msg[0].is_atom("$gen_cast") && msg[1].is_tuple(5) &&
                   msg[1][0].is_atom("cast") && msg[1][1].is_atom() && msg[1][2].is_atom() &&
                   msg[1][3].is_proper_list()) {
            auto call = std::make_unique<ExtCall>();
            call->cast = true;
            call->node = d.node;
            call->frame = request_frame(true, msg[1][1], msg[1][2], msg[1][3]);
            call->what = describe(msg[1][1], msg[1][2], msg[1][3]);
            start_ext(std::move(call));
        }
        return;
    }
    auto r = registered_.find(name);
    if (r == registered_.end()) {
        log::debug("a message from %s to the unregistered name '%s' was dropped", d.node.c_str(),
                   name.c_str());
        return;
    }
    auto call = std::make_unique<ExtCall>();
    call->cast = true;
    call->node = d.node;
    call->from = from;
    Term m = Term::atom(r->second.module), f = Term::atom(r->second.function);
    Term args = Term::list({std::move(msg)});
    call->frame = request_frame(true, m, f, args);
    call->what = "{" + name + ", " + cnode_.name() + "} ! Msg -> " + describe(m, f, args);
    start_ext(std::move(call));
}

// erpc (and so rpc:call, rpc:cast) spawns erpc:execute_call/4 or execute_cast/3 on
// the remote node. bertd answers as if a process had been spawned, runs the call
// on an external module, then signals that "process"'s exit to the monitor, which
// is how erpc learns the result.
void Link::spawn_request(DistConn& d, const Term& ctl, std::string_view message) {
    if (ctl.size() < 6 || ctl[2].kind() != Term::Kind::Pid) return;
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
    c->fake.num = (next_fake_++ % 0x7FFFFFF) + 1;
    if (c->fake.num == cnode_.self().num) c->fake.num = (next_fake_++ % 0x7FFFFFF) + 1;
    c->fake.serial = 1;
    size_t base = call ? 1 : 0;
    if (call) c->res = args[0];
    c->frame = request_frame(cast, args[base], args[base + 1], args[base + 2]);
    c->what = describe(args[base], args[base + 1], args[base + 2]);
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
    if (!ok)
        log::debug("%s from %s failed: %s", call.what.c_str(), call.node.c_str(),
                   bert::to_string(reason, 300).c_str());
    switch (call.origin) {
        case ExtCall::Origin::Rex: {
            // What rpc:call returns for an exception: {badrpc, {'EXIT', {Reason, Stack}}}.
            Term result =
                ok ? value
                   : Term::tuple({Term::atom("badrpc"),
                                  Term::tuple({Term::atom("EXIT"), Term::tuple({reason, Term::nil()})})});
            send_to_pid(call.node, call.from, Term::tuple({call.tag, result}));
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

// ---- loop connections ----------------------------------------------------------------------

void Link::start_ext(std::unique_ptr<ExtCall> call) {
    LoopConn* l = free_loop();
    if (!l) l = new_loop();
    if (!l) {
        bool any_loop = false, any_acceptor = false;
        for (auto& [id, s] : streams_) {
            if (s->dead) continue;
            any_loop |= s->kind == Stream::Kind::Loop;
            any_acceptor |= s->kind == Stream::Kind::Acceptor && static_cast<AccConn&>(*s).hello;
        }
        if (!any_loop && !any_acceptor) {
            finish_ext(*call, nullptr, "bertd has no acceptor ready to run " + call->what);
            return;
        }
        ext_waiting_.push_back(std::move(call));
        return;
    }
    l->busy = true;
    l->out += call->frame;
    l->call = std::move(call);
    queue_out(*l);
}

Link::LoopConn* Link::free_loop() {
    for (auto& [id, s] : streams_) {
        if (s->dead || s->kind != Stream::Kind::Loop) continue;
        auto& l = static_cast<LoopConn&>(*s);
        if (!l.busy && !l.closing && l.generation == newest_generation_) return &l;
    }
    return nullptr;
}

// Makes a socketpair and hands one end to an acceptor of the newest generation.
Link::LoopConn* Link::new_loop() {
    size_t loops = 0;
    std::vector<AccConn*> acceptors;
    for (auto& [id, s] : streams_) {
        if (s->dead) continue;
        if (s->kind == Stream::Kind::Loop) ++loops;
        if (s->kind == Stream::Kind::Acceptor) {
            auto& a = static_cast<AccConn&>(*s);
            if (a.hello && a.generation == newest_generation_) acceptors.push_back(&a);
        }
    }
    if (loops >= kMaxLoops) return nullptr;
    // The descriptor must follow everything already queued for that acceptor.
    std::vector<AccConn*> ready;
    for (AccConn* a : acceptors) {
        if (a->out_start != a->out.size()) flush(*a);
        if (!a->dead && a->out_start == a->out.size()) ready.push_back(a);
    }
    acceptors.swap(ready);
    if (acceptors.empty()) return nullptr;
    AccConn& a = *acceptors[next_acceptor_++ % acceptors.size()];
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return nullptr;
    std::string msg;
    linkproto::append(msg, linkproto::Connection, 0, {});
    ssize_t n = send_with_fds(a.fd, msg, &sv[1], 1);
    ::close(sv[1]);
    if (n != ssize_t(msg.size())) {
        // Nothing or part went: the acceptor's stream cannot be trusted to be in step.
        ::close(sv[0]);
        if (n > 0) close_stream(a, "a partial hand-over");
        return nullptr;
    }
    auto l = std::make_unique<LoopConn>();
    l->acceptor = a.id;
    l->generation = a.generation;
    return static_cast<LoopConn*>(add_stream(std::move(l), sv[0]));
}

void Link::loop_readable(LoopConn& l) {
    while (!l.dead) {
        std::string_view buf(l.in.data() + l.in_start, l.in.size() - l.in_start);
        bert::FrameScan fs = bert::scan_frame(buf, config_.limits.max_frame);
        if (fs.state == bert::FrameScan::State::TooLarge) {
            close_stream(l, "an answer over limits.max_frame");
            return;
        }
        if (fs.state != bert::FrameScan::State::Complete) return;
        std::string_view payload = buf.substr(bert::kFrameHeader, fs.length);
        l.in_start += bert::kFrameHeader + fs.length;
        if (!l.busy || !l.call) {
            close_stream(l, "an answer nobody asked for");
            return;
        }
        Term answer;
        auto call = std::move(l.call);
        l.busy = false;
        if (auto e = bert::decode(payload, answer))
            finish_ext(*call, nullptr, "undecodable answer: " + e.message);
        else
            finish_ext(*call, &answer, "");
        loop_done(l);
    }
}

void Link::loop_done(LoopConn& l) {
    if (l.closing || l.generation != newest_generation_) {
        close_stream(l, "retired");
        // Whatever waits gets a loop connection of the newest generation.
        if (!ext_waiting_.empty()) {
            auto next = std::move(ext_waiting_.front());
            ext_waiting_.pop_front();
            start_ext(std::move(next));
        }
        return;
    }
    if (ext_waiting_.empty()) return;
    auto next = std::move(ext_waiting_.front());
    ext_waiting_.pop_front();
    l.busy = true;
    l.out += next->frame;
    l.call = std::move(next);
    queue_out(l);
}

// A new generation's acceptors are here: the old generation's loop connections go
// (idle ones now, busy ones after their answer), so its acceptors can finish.
void Link::retire_loops(uint64_t newest) {
    std::vector<LoopConn*> idle;
    for (auto& [id, s] : streams_) {
        if (s->dead || s->kind != Stream::Kind::Loop) continue;
        auto& l = static_cast<LoopConn&>(*s);
        if (l.generation >= newest) continue;
        if (l.busy)
            l.closing = true;
        else
            idle.push_back(&l);
    }
    for (auto* l : idle) close_stream(*l, "retired");
}

}  // namespace bertd::erl
