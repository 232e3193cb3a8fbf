// handlers.cc: the link's socket for external handler workers (its address is in
// their BERTD_ERLANG). A worker sends BERPs and reads {reply, Result} or {error,
// {server, ...}}, one request at a time per connection:
//   {rpc, Node, M, F, Args[, TimeoutMs]}   the rpc's value ({badrpc, R} included)
//   {send, Dest, Msg} / {send, Node, Name, Msg}   ok; Dest a name (on bertd's node),
//                                          {Name, Node}, a pid or {Node, Num, Serial}
//   {connect, Node}                        the node's name once connected; kept up
//   {self}                                 the worker's pid on bertd's node
//   {register, Name}                       ok (processes.cc)
//   {recv, TimeoutMs | infinity}           {message, Msg} or timeout (processes.cc)
// Only our own user may connect. Nothing here waits: a request that must wait (for a
// node, an answer, a message) holds only its connection.
#include "bert/codec.h"
#include "bert/frame.h"
#include "bert/printer.h"
#include "erl/link.h"
#include "erl/terms.h"
#include "log/log.h"

namespace bertd::erl {

namespace {
using bert::Term;

Term ok_reply(Term v = Term::atom("ok")) { return Term::tuple({Term::atom("reply"), std::move(v)}); }

// {Node, Number, Serial}: the seed document's pid as three values (creation 0, which
// a node takes as its current one).
bool pid_triple(const Term& t, bert::Pid& out) {
    std::string node;
    if (!t.is_tuple(3) || !name_of(t[0], node) || node.find('@') == std::string::npos || !t[1].is_int() ||
        !t[2].is_int() || t[1].as_int() < 0 || t[1].as_int() > UINT32_MAX || t[2].as_int() < 0 ||
        t[2].as_int() > UINT32_MAX)
        return false;
    out = bert::Pid{node, uint32_t(t[1].as_int()), uint32_t(t[2].as_int()), 0};
    return true;
}
}  // namespace

bert::Limits Link::term_limits() const {
    return untrusted_limits(config_.limits.max_frame, config_.limits.max_inflated);
}

std::string Link::default_node() const {
    if (!id_.companion.empty()) return id_.companion;
    for (const auto& m : config_.modules)
        if (m.type == ModuleConfig::Type::Native && !m.node.empty()) return m.node;
    return {};
}

void Link::handler_readable(HandlerConn& h) {
    while (!h.dead && !h.busy) {
        std::string_view buf(h.in.data() + h.in_start, h.in.size() - h.in_start);
        bert::FrameScan fs = bert::scan_frame(buf, config_.limits.max_frame);
        if (fs.state == bert::FrameScan::State::TooLarge) {
            close_stream(h, "a request over limits.max_frame");
            return;
        }
        if (fs.state != bert::FrameScan::State::Complete) return;
        std::string_view payload = buf.substr(bert::kFrameHeader, fs.length);
        Term req;
        // Under term_limits(): a request built to cost more than its size is refused
        // before it holds the memory, and answered an error like any other.
        bert::DecodeError err = bert::decode(payload, req, term_limits());
        h.in_start += bert::kFrameHeader + fs.length;
        h.busy = true;
        if (err)
            handler_error(h.id, "undecodable request: " + unreadable(err));
        else
            handler_request(h, req);
    }
}

void Link::handler_request(HandlerConn& h, const Term& req) {
    std::string op = req.is_tuple() && req.size() > 0 && req[0].is_atom() ? req[0].atom_name() : "";
    if (op == "rpc") return handler_rpc(h, req);
    if (op == "send") return handler_send(h, req);
    if (op == "connect") return handler_connect(h, req);
    if (op == "register") return handler_register(h, req);
    if (op == "recv") return handler_recv(h, req);
    if (op == "self" && req.size() == 1) return handler_answer(h.id, ok_reply(Term(pid_of(h))));
    handler_error(h.id,
                  "expected {rpc, Node, Module, Function, Args}, {send, Dest, Message}, {connect, Node}, "
                  "{self}, {register, Name} or {recv, Timeout}, got " +
                      bert::to_string(req, 300));
}

// Runs `go` with the connection to the node `node_term` names (empty: bertd's native
// node) as soon as there is one; with allow_self, bertd's own node runs go(nullptr).
// Every failure is answered to the worker.
void Link::with_node(HandlerConn& h, const Term& node_term, bool allow_self,
                     std::function<void(DistConn*)> go) {
    std::string where;
    if (!name_of(node_term, where)) {
        handler_error(h.id,
                      "a node is an atom, a binary or a string, not " + bert::to_string(node_term, 200));
        return;
    }
    if (where.empty()) where = default_node();
    if (where.empty() || where.find('@') == std::string::npos) {
        handler_error(h.id, where.empty() ? "no node given, and no native node is configured"
                                          : "'" + where + "' is not a node name (name@host)");
        return;
    }
    if (where == cnode_.name()) {
        if (allow_self)
            go(nullptr);
        else
            handler_error(h.id, where + " is bertd itself; call the module through bertd instead");
        return;
    }
    uint64_t hid = h.id;
    auto run = [this, hid, where, go = std::move(go)](const std::string& error) {
        DistConn* d = error.empty() ? conn_of(node(where)) : nullptr;
        if (!d)
            handler_error(hid, "cannot reach Erlang node " + where + (error.empty() ? "" : ": " + error));
        else
            go(d);
    };
    Node& n = node(where);
    if (conn_of(n)) {
        run("");
        return;
    }
    if (!n.dialing && monotonic_us() < n.retry_at_us) {
        run(n.last_error.empty() ? "not connected" : n.last_error);
        return;
    }
    n.on_connect.push_back(std::move(run));
    ensure_connected(n);
}

void Link::handler_rpc(HandlerConn& h, const Term& req) {
    std::string m, f;
    bool timed = req.is_tuple(6);
    if ((!req.is_tuple(5) && !timed) || !name_of(req[2], m) || !name_of(req[3], f) ||
        !req[4].is_proper_list() ||
        (timed && !req[5].is_atom("infinity") && (!req[5].is_int() || req[5].as_int() < 0)) || m.empty() ||
        f.empty()) {
        handler_error(h.id, "expected {rpc, Node, Module, Function, Args[, Milliseconds]}, got " +
                                bert::to_string(req, 300));
        return;
    }
    double timeout = config_.erlang.call_timeout;
    if (timed) timeout = req[5].is_int() ? std::max(double(req[5].as_int()) / 1000, 0.001) : 0;
    uint64_t hid = h.id;
    Term args = req[4];
    with_node(h, req[1], false, [this, hid, m, f, args, timeout](DistConn* d) {
        uint64_t tag = new_tag();
        rex_call(*d, tag, m, f, args.size(), [&](Ext& e) {
            for (const auto& a : args.items()) e.term(a);
        });
        Call c;
        c.kind = Call::Kind::HandlerRpc;
        c.node = d->node;
        c.conn = d->id;
        c.handler = hid;
        add_call(tag, std::move(c), timeout);
    });
}

void Link::handler_send(HandlerConn& h, const Term& req) {
    if (!req.is_tuple(3) && !req.is_tuple(4)) {
        handler_error(h.id, "expected {send, Dest, Message}, got " + bert::to_string(req, 300));
        return;
    }
    // Dest: a pid, {Node, Num, Serial}, {Name, Node} or a name (on bertd's own node);
    // the old {send, Node, Name, Message} names the node first.
    bert::Pid pid;
    bool to_pid = false;
    std::string name;
    Term node_term = Term::atom(cnode_.name());
    const Term& dest = req[1];
    if (req.size() == 4) {
        node_term = req[1];
        if (!name_of(req[2], name)) name.clear();
    } else if (dest.kind() == Term::Kind::Pid) {
        pid = std::get<bert::Pid>(dest.value());
        to_pid = true;
    } else if (pid_triple(dest, pid)) {
        to_pid = true;
    } else if (dest.is_tuple(2)) {
        node_term = dest[1];
        if (!name_of(dest[0], name)) name.clear();
    } else if (!name_of(dest, name)) {
        name.clear();
    }
    if (to_pid) node_term = Term::atom(pid.node);
    if (!to_pid && (name.empty() || name.size() > 255)) {
        handler_error(
            h.id, "a destination is a registered name, {Name, Node}, a pid or {Node, Number, Serial}, not " +
                      bert::to_string(dest, 200));
        return;
    }
    uint64_t hid = h.id;
    bert::Pid from = pid_of(h);
    Term msg = req[req.size() - 1];
    with_node(h, node_term, true, [this, hid, from, to_pid, pid, name, msg](DistConn* d) {
        if (d && to_pid && pid.creation == 0) {
            send_to_triple(*d, hid, pid, msg);
            return;
        }
        if (d) {
            if (to_pid)
                send_to_pid(d->node, pid, msg);
            else
                send_to_name(*d, name, msg, &from);
        } else if (to_pid) {
            bert::Pid local = pid;
            if (local.creation == 0) local.creation = cnode_.creation();
            pid_message(cnode_.name(), local, bert::encode(msg));
        } else if (!deliver_to_name(name, msg, cnode_.name())) {
            handler_error(hid, "no process is registered as '" + name + "' on " + cnode_.name());
            return;
        }
        handler_answer(hid, ok_reply());
    });
}

// A pid given as {Node, Number, Serial} lacks the node's creation, without which the
// node drops the message: the node tells it once (list_to_pid("<0.N.S>") there).
void Link::send_to_triple(DistConn& d, uint64_t handler, bert::Pid pid, const Term& msg) {
    Node& n = node(d.node);
    if (n.creation) {
        pid.creation = n.creation;
        send_to_pid(d.node, pid, msg);
        handler_answer(handler, ok_reply());
        return;
    }
    std::string text = "<0." + std::to_string(pid.num) + "." + std::to_string(pid.serial) + ">";
    uint64_t tag = new_tag();
    rex_call(d, tag, "erlang", "list_to_pid", 1, [&](Ext& e) { e.term(Term::string(text)); });
    Call c;
    c.kind = Call::Kind::PidLookup;
    c.node = d.node;
    c.conn = d.id;
    c.handler = handler;
    c.message = msg;
    add_call(tag, std::move(c), 10);
}

void Link::pid_found(Call& c, std::string_view result) {
    std::string bytes = versioned(result);
    Term t;
    if (bert::decode(bytes, t, term_limits()) || t.kind() != Term::Kind::Pid) {
        handler_error(c.handler, "no such pid on " + c.node + " (" + bert::to_string(t, 200) + ")");
        return;
    }
    const auto& pid = std::get<bert::Pid>(t.value());
    node(c.node).creation = pid.creation;
    send_to_pid(c.node, pid, c.message);
    handler_answer(c.handler, ok_reply());
}

// {connect, Node}: a held connection, kept up while the worker's connection lasts.
void Link::handler_connect(HandlerConn& h, const Term& req) {
    if (!req.is_tuple(2)) {
        handler_error(h.id, "expected {connect, Node}");
        return;
    }
    uint64_t hid = h.id;
    with_node(h, req[1], false, [this, hid](DistConn* d) {
        auto* hc = static_cast<HandlerConn*>(find(hid, Stream::Kind::Handler));
        if (!hc) return;
        if (node(d->node).held_by.insert(hid).second) hc->held.push_back(d->node);
        handler_answer(hid, ok_reply(Term::atom(d->node)));
    });
}

void Link::handler_answer(uint64_t handler, const Term& answer) {
    auto* h = static_cast<HandlerConn*>(find(handler, Stream::Kind::Handler));
    if (!h) return;
    std::string payload;
    bert::encode_append(answer, payload);
    bert::append_frame(h->out, payload);
    queue_out(*h);
    h->busy = false;
    // A pipelined request may wait behind this one (handler_readable re-reads its
    // buffer on every turn, so calling it from inside itself is safe).
    if (h->in_start < h->in.size()) handler_readable(*h);
}

void Link::handler_error(uint64_t handler, const std::string& detail) {
    handler_answer(handler, Term::tuple({Term::atom("error"), server_error(detail)}));
}

}  // namespace bertd::erl
