// nodes.cc: the Erlang nodes the link keeps connected (dialing with back-off, losing and
// finding them again), the table of calls in flight with their deadlines, and the
// packets the link sends them. A call never waits past its deadline; nothing here blocks.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdio>

#include "erl/link.h"
#include "log/log.h"

namespace bertd::erl {

namespace {
int64_t backoff_us(int fails) {
    if (fails <= 0) return 0;
    return std::min<int64_t>(100'000LL << std::min(fails - 1, 5), 2'000'000);
}
}  // namespace

Link::Node& Link::node(const std::string& name) {
    auto it = nodes_.find(name);
    if (it == nodes_.end()) {
        it = nodes_.emplace(name, Node{}).first;
        it->second.name = name;
    }
    return it->second;
}

Link::DistConn* Link::conn_of(Node& n) {
    if (!n.conn) return nullptr;
    return static_cast<DistConn*>(find(n.conn, Stream::Kind::Dist));
}

void Link::ensure_connected(Node& n) {
    if (conn_of(n) || n.dialing || n.name.empty()) return;
    if (monotonic_us() < n.retry_at_us) return;
    n.dialing = true;
    cnode_.dial(n.name);
}

void Link::handshakes_done() {
    for (auto& h : cnode_.take()) {
        if (h.incoming) {
            if (h.fd < 0)
                log::warn("an Erlang node tried to connect: %s", h.error.c_str());
            else
                add_dist(h.fd, h.node, true);
            continue;
        }
        Node& n = node(h.node);
        n.dialing = false;
        if (h.fd >= 0) {
            add_dist(h.fd, h.node, false);
            continue;
        }
        ++n.fails;
        n.retry_at_us = monotonic_us() + retry_delay_us(n);
        if (n.fails == 1 || n.last_error != h.error)
            log::warn("cannot connect to Erlang node %s: %s", n.name.c_str(), h.error.c_str());
        n.last_error = h.error;
        auto waiting = std::exchange(n.on_connect, {});
        for (auto& f : waiting) f(h.error);
        if (!holds_requests(n)) fail_waiting(n, not_connected(n));
    }
}

void Link::add_dist(int fd, const std::string& name, bool incoming) {
    // Small packets in both directions, each awaited by a client: no Nagle delay.
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto d = std::make_unique<DistConn>();
    d->node = name;
    d->last_in_us = monotonic_us();
    Stream* s = add_stream(std::move(d), fd);
    Node& n = node(name);
    n.conn = s->id;
    n.fails = 0;
    n.retry_at_us = 0;
    n.last_error.clear();
    log::info("connected to Erlang node %s (%s)", name.c_str(), incoming ? "it called us" : "we called it");
    node_up(n);
}

void Link::node_up(Node& n) {
    auto waiting = std::exchange(n.on_connect, {});
    for (auto& f : waiting) f("");
    if (n.wanted) start_setup(n);
}

void Link::dist_closed(DistConn& d) {
    Node& n = node(d.node);
    std::vector<uint64_t> lost;
    for (auto& [tag, c] : calls_)
        if (c.conn == d.id) lost.push_back(tag);
    if (n.conn == d.id) {
        n.conn = 0;
        for (auto& [id, s] : streams_)
            if (s.get() != &d && !s->dead && s->kind == Stream::Kind::Dist &&
                static_cast<DistConn&>(*s).node == d.node)
                n.conn = id;
    }
    if (!n.conn) {
        if (n.wanted)
            log::warn("lost Erlang node %s; reconnecting", n.name.c_str());
        else
            log::info("Erlang node %s disconnected", n.name.c_str());
        n.setup = Node::Setup::None;
        n.creation = 0;  // it may come back as a new incarnation
        n.fails = std::max(n.fails, 1);
        n.retry_at_us = monotonic_us() + retry_delay_us(n);
        n.last_error = "the connection was lost";
    }
    for (uint64_t tag : lost) {
        auto it = calls_.find(tag);
        if (it == calls_.end()) continue;
        Call c = std::move(it->second);
        if (c.has_deadline) deadlines_.erase(c.deadline);
        calls_.erase(it);
        fail_call(c, "the Erlang node " + n.name + " went away during the call");
    }
    // Requests not yet sent wait for the node where it is expected back.
    if (!n.conn && !holds_requests(n)) fail_waiting(n, "the Erlang node " + n.name + " went away");
}

// The companion VM is restarted by the master and boots in about a second: look for
// it often, so the requests that wait for it go as soon as it is up.
int64_t Link::retry_delay_us(const Node& n) const {
    int64_t d = backoff_us(n.fails);
    return n.name == id_.companion ? std::min<int64_t>(d, 200'000) : d;
}

// ---- calls ---------------------------------------------------------------------------------------

Link::Call& Link::add_call(uint64_t tag, Call c, double timeout_s) {
    if (timeout_s > 0) {
        c.deadline_us = monotonic_us() + int64_t(timeout_s * 1e6);
        c.deadline = deadlines_.emplace(c.deadline_us, tag);
        c.has_deadline = true;
    }
    c.timeout_s = timeout_s;
    return calls_[tag] = std::move(c);
}

void Link::expire_calls(int64_t now) {
    while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
        uint64_t tag = deadlines_.begin()->second;
        deadlines_.erase(deadlines_.begin());
        auto it = calls_.find(tag);
        if (it == calls_.end()) continue;
        Call c = std::move(it->second);
        calls_.erase(it);
        char secs[32];
        snprintf(secs, sizeof secs, "%g", c.timeout_s);
        fail_call(c, std::string("no answer within ") + secs + " s (timeout)");
    }
}

void Link::fail_call(Call& c, const std::string& why) {
    switch (c.kind) {
        case Call::Kind::Native:
            answer_error(c.acceptor, c.acc_tag, 0, "native call '" + c.mf + "': " + why);
            break;
        case Call::Kind::HandlerRpc:
        case Call::Kind::PidLookup: handler_error(c.handler, why); break;
        case Call::Kind::EnsureLoaded:
        case Call::Kind::LoadBeam:
        case Call::Kind::Exports: setup_failed(node(c.node), "loading the export lists: " + why); break;
    }
}

// ---- packets out ---------------------------------------------------------------------------------

void Link::send_packet(DistConn& d, const bert::Term& control, const bert::Term* message) {
    size_t start = begin_packet(d.out);
    Ext e(d.out);
    e.version().term(control);
    if (message) e.version().term(*message);
    finish_packet(d.out, start);
    queue_out(d);
}

void Link::send_to_pid(const std::string& name, const bert::Pid& to, const bert::Term& message) {
    DistConn* d = conn_of(node(name));
    if (!d) {
        log::debug("cannot answer %s: not connected", name.c_str());
        return;
    }
    send_packet(*d, bert::Term::tuple({bert::Term(kSend), bert::Term::atom(""), bert::Term(to)}), &message);
}

void Link::send_to_name(DistConn& d, const std::string& name, const bert::Term& message,
                        const bert::Pid* from) {
    send_packet(d,
                bert::Term::tuple({bert::Term(kRegSend), bert::Term(from ? *from : cnode_.self()),
                                   bert::Term::atom(""), bert::Term::atom(name)}),
                &message);
}

void Link::rex_call(DistConn& d, uint64_t tag, std::string_view m, std::string_view f, size_t nargs,
                    const std::function<void(Ext&)>& args) {
    size_t start = begin_packet(d.out);
    Ext e(d.out);
    e.version().tuple(4).integer(kRegSend).pid(cnode_.self()).atom("").atom("rex");
    e.version().tuple(3).atom("$gen_call").tuple(2).pid(cnode_.self()).uinteger(tag);
    e.tuple(5).atom("call").atom(m).atom(f);
    if (nargs == 0) {
        e.nil();
    } else {
        e.list(nargs);
        args(e);
        e.nil();
    }
    e.atom("user");
    finish_packet(d.out, start);
    queue_out(d);
}

}  // namespace bertd::erl
