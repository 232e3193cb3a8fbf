// handlers.cc: the link's socket for external handler workers (its address is in
// their BERTD_ERLANG). A worker sends BERPs {rpc, Node, Module, Function, Args} or
// {send, Node, Name, Message} and reads {reply, Result} or {error, {server, ...}},
// one request at a time per connection. Only our own user may connect.
#include "bert/codec.h"
#include "bert/frame.h"
#include "bert/printer.h"
#include "erl/link.h"
#include "log/log.h"
#include "shm/segment.h"

namespace bertd::erl {

namespace {
using bert::Term;

// A node, module or function given as an atom, a binary or a string; "" for nil.
bool name_of(const Term& t, std::string& out) {
    out.clear();
    if (t.is_atom()) {
        out = t.atom_name();
        if (out == "nil" || out == "undefined") out.clear();
        return true;
    }
    if (t.is_binary()) {
        out = t.bytes();
        return true;
    }
    if (t.is_nil() || bert::complex::is_nil(t)) return true;
    if (t.is_proper_list()) {
        for (const auto& c : t.items()) {
            if (!c.is_int() || c.as_int() <= 0 || c.as_int() > 255) return false;
            out.push_back(char(c.as_int()));
        }
        return true;
    }
    return false;
}
}  // namespace

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
        bert::DecodeError err = bert::decode(payload, req);
        h.in_start += bert::kFrameHeader + fs.length;
        h.busy = true;
        if (err)
            handler_error(h.id, "undecodable request: " + err.message);
        else
            handler_request(h, req);
    }
}

void Link::handler_request(HandlerConn& h, const Term& req) {
    bool rpc = req.is_tuple(5) && req[0].is_atom("rpc");
    bool send = req.is_tuple(4) && req[0].is_atom("send");
    std::string where, m, f;
    if ((!rpc && !send) || !name_of(req[1], where) || !name_of(req[2], m) || (rpc && !name_of(req[3], f)) ||
        (rpc && !req[4].is_proper_list())) {
        handler_error(h.id,
                      "expected {rpc, Node, Module, Function, Args} or {send, Node, Name, Message}, got " +
                          bert::to_string(req, 300));
        return;
    }
    if (where.empty()) where = default_node();
    if (where.empty() || where.find('@') == std::string::npos) {
        handler_error(h.id, where.empty() ? "no node given, and no native node is configured"
                                          : "'" + where + "' is not a node name (name@host)");
        return;
    }
    if (where == cnode_.name()) {
        handler_error(h.id, where + " is bertd itself; call the module through bertd instead");
        return;
    }
    if (m.empty() || (rpc && f.empty())) {
        handler_error(h.id, "empty module, function or name");
        return;
    }
    uint64_t hid = h.id;
    Term payload = rpc ? req[4] : req[3];
    auto go = [this, hid, where, m, f, rpc, payload](const std::string& error) {
        if (!error.empty()) {
            handler_error(hid, "cannot reach Erlang node " + where + ": " + error);
            return;
        }
        DistConn* d = conn_of(node(where));
        if (!d) {
            handler_error(hid, "cannot reach Erlang node " + where);
            return;
        }
        if (!rpc) {
            send_to_name(*d, m, payload);
            handler_answer(hid, Term::tuple({Term::atom("reply"), Term::atom("ok")}));
            return;
        }
        uint64_t tag = new_tag();
        rex_call(*d, tag, m, f, payload.size(), [&](Ext& e) {
            for (const auto& a : payload.items()) e.term(a);
        });
        Call c;
        c.kind = Call::Kind::HandlerRpc;
        c.node = where;
        c.conn = d->id;
        c.handler = hid;
        add_call(tag, std::move(c), config_.erlang.call_timeout);
    };
    Node& n = node(where);
    if (conn_of(n)) {
        go("");
        return;
    }
    if (!n.dialing && monotonic_us() < n.retry_at_us) {
        go(n.last_error.empty() ? "not connected" : n.last_error);
        return;
    }
    n.on_connect.push_back(std::move(go));
    ensure_connected(n);
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
    handler_answer(handler,
                   Term::tuple({Term::atom("error"),
                                Term::tuple({Term::atom("server"), Term(0), Term::binary("ServerError"),
                                             Term::binary(detail), Term::nil()})}));
}

}  // namespace bertd::erl
