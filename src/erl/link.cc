// link.cc: the link's event loop: its sockets (distribution connections, the
// acceptors, loop connections, handler workers), the nodes it keeps connected, and
// the table of calls in flight with their deadlines. It never blocks: a write
// that would block waits for EV_WRITE, a handshake runs on a CNode thread.
#include "erl/link.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "bert/codec.h"
#include "bert/printer.h"
#include "core/master.h"
#include "erl/proto.h"
#include "io/unix.h"
#include "log/log.h"
#include "shm/segment.h"

namespace bertd::erl {

namespace {
constexpr size_t kReadChunk = 64 * 1024;
constexpr int64_t kTickUs = 50'000;
constexpr int64_t kKeepaliveUs = 15'000'000;  // Erlang's own tick is net_ticktime/4 = 15 s
constexpr int64_t kSilenceUs = 75'000'000;    // nothing at all from a node for this long: it is gone
constexpr size_t kMaxPacket = size_t(1) << 30;

int64_t backoff_us(int fails) {
    if (fails <= 0) return 0;
    return std::min<int64_t>(100'000LL << std::min(fails - 1, 5), 2'000'000);
}

// Only this server's processes may use the link (it runs code on Erlang nodes and answers
// clients): on the acceptors' socket, the master's children; on the handlers' socket, any
// process the master started (a handler worker, or a process that worker started).
bool peer_allowed(int fd, bool acceptor, pid_t master, PeerCred& peer) {
    if (!peer_credentials(fd, peer)) return false;
    return acceptor ? parent_of(peer.pid) == master : descends_from(peer.pid, master);
}
}  // namespace

Link::Stream::~Stream() {
    if (rev) event_free(rev);
    if (wev) event_free(wev);
    if (fd >= 0) {
        if (kind == Kind::Dist)
            close_connection(fd);
        else
            ::close(fd);
    }
}

Link::Link(Options opts, Config config, Identity id, int master_pid, IpcNames ipc, int acceptors, int handlers)
    : opts_(std::move(opts)),
      config_(std::move(config)),
      id_(std::move(id)),
      master_pid_(master_pid),
      ipc_(std::move(ipc)),
      acc_listen_(acceptors),
      handler_listen_(handlers) {
    // Tags only have to be unique among calls in flight, but a reply that arrives
    // after a restart of the link must not match a new call: start somewhere random.
    next_tag_ = (uint64_t(now_us()) << 16) ^ uint64_t(getpid());
}

Link::~Link() {
    streams_.clear();
    graveyard_.clear();
    for (auto* e : events_) event_free(e);
    if (epmd_ev_) event_free(epmd_ev_);
    if (base_) event_base_free(base_);
}

int run_link(const Options& opts, const Config& config, const Identity& id, int master_pid,
             const IpcNames& ipc, int acceptors, int handlers) {
    Link l(opts, config, id, master_pid, ipc, acceptors, handlers);
    return l.run();
}

int Link::run() {
    signal(SIGPIPE, SIG_IGN);
    base_ = event_base_new();
    if (!base_) return 1;
    for (int sig : {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1}) {
        event* e = evsignal_new(base_, sig, on_signal, this);
        event_add(e, nullptr);
        events_.push_back(e);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);

    // The acceptors' socket first: they connect as soon as they start.
    if (!acc_listen_ || !handler_listen_) {
        log::error("the master gave the link no listen sockets");
        return 1;
    }
    if (std::string err = cnode_.start(id_.cnode_alive, id_.host, id_.cnode, id_.cookie); !err.empty()) {
        log::error("Erlang node %s: %s", id_.cnode.c_str(), err.c_str());
        return 1;
    }
    if (!id_.ebin.empty()) {
        std::ifstream in(id_.ebin + "/bertd_native.beam", std::ios::binary);
        std::ostringstream ss;
        ss << in.rdbuf();
        helper_beam_ = ss.str();
    }
    cnode_.start_threads();

    auto add = [&](int fd, short what, event_callback_fn fn, void* arg) {
        event* e = event_new(base_, fd, what, fn, arg);
        event_add(e, nullptr);
        events_.push_back(e);
    };
    add(acc_listen_.get(), EV_READ | EV_PERSIST, on_listen, this);
    add(handler_listen_.get(), EV_READ | EV_PERSIST, on_listen, this);
    add(cnode_.notify_fd(), EV_READ | EV_PERSIST, on_handshake, this);
    event* t = event_new(base_, -1, EV_PERSIST, on_tick, this);
    timeval tv{0, suseconds_t(kTickUs)};
    event_add(t, &tv);
    events_.push_back(t);
    epmd_ev_ = event_new(base_, cnode_.epmd_fd(), EV_READ | EV_PERSIST, on_epmd, this);
    event_add(epmd_ev_, nullptr);

    log::info("Erlang node %s is up (creation %u)%s", id_.cnode.c_str(), cnode_.creation(),
              id_.companion.empty() ? "" : (", native modules on " + id_.companion).c_str());
    apply_config();
    event_base_dispatch(base_);
    log::info("Erlang node %s stops", id_.cnode.c_str());
    return 0;
}

// ---- callbacks --------------------------------------------------------------------------

void Link::on_signal(evutil_socket_t sig, short, void* arg) {
    auto* self = static_cast<Link*>(arg);
    if (sig == SIGHUP) {
        self->reload();
        self->after_callback();
    } else if (sig == SIGUSR1) {
        log::reopen();
    } else {
        self->stopping_ = true;
        event_base_loopbreak(self->base_);
    }
}

void Link::on_read(evutil_socket_t, short, void* arg) {
    auto* s = static_cast<Stream*>(arg);
    Link* self = s->link;
    self->graveyard_.clear();
    self->stream_readable(*s);
    self->after_callback();
}

void Link::on_write(evutil_socket_t, short, void* arg) {
    auto* s = static_cast<Stream*>(arg);
    Link* self = s->link;
    self->graveyard_.clear();
    self->flush(*s);
    self->after_callback();
}

void Link::on_listen(evutil_socket_t fd, short, void* arg) {
    auto* self = static_cast<Link*>(arg);
    self->graveyard_.clear();
    self->accept_local(int(fd),
                       fd == self->acc_listen_.get() ? Stream::Kind::Acceptor : Stream::Kind::Handler);
    self->after_callback();
}

void Link::on_handshake(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<Link*>(arg);
    self->graveyard_.clear();
    self->handshakes_done();
    self->after_callback();
}

void Link::on_tick(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<Link*>(arg);
    self->graveyard_.clear();
    self->tick();
    self->after_callback();
}

// epmd closed our registration (it was restarted or killed): register again.
void Link::on_epmd(evutil_socket_t fd, short, void* arg) {
    auto* self = static_cast<Link*>(arg);
    char buf[64];
    ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0 || (n < 0 && errno == EAGAIN)) return;
    log::warn("epmd dropped the registration of %s; registering again", self->id_.cnode.c_str());
    event_del(self->epmd_ev_);
    self->epmd_retry_us_ = monotonic_us();
}

void Link::after_callback() { flush_dirty(); }

// ---- streams --------------------------------------------------------------------------------

Link::Stream* Link::add_stream(std::unique_ptr<Stream> s, int fd) {
    set_nonblocking(fd);
    s->link = this;
    s->id = next_stream_++;
    s->fd = fd;
    s->rev = event_new(base_, fd, EV_READ | EV_PERSIST, on_read, s.get());
    s->wev = event_new(base_, fd, EV_WRITE | EV_PERSIST, on_write, s.get());
    event_add(s->rev, nullptr);
    uint64_t id = s->id;
    return streams_.emplace(id, std::move(s)).first->second.get();
}

Link::Stream* Link::find(uint64_t id, Stream::Kind kind) {
    auto it = streams_.find(id);
    if (it == streams_.end() || it->second->dead || it->second->kind != kind) return nullptr;
    return it->second.get();
}

void Link::accept_local(int listen_fd, Stream::Kind kind) {
    for (int i = 0; i < 64; ++i) {
        int fd = accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        PeerCred peer;
        bool acceptor = kind == Stream::Kind::Acceptor;
        if (!peer_allowed(fd, acceptor, master_pid_, peer)) {
            ::close(fd);
            uint64_t times;
            if ((acceptor ? refused_acceptors_ : refused_handlers_).due(times))
                log::warn("refused a connection to the link's %s socket from pid %d (uid %u): not a process of "
                          "this server (%llu such since the last line)",
                          acceptor ? "acceptor" : "handler", int(peer.pid), unsigned(peer.uid),
                          (unsigned long long)times);
            continue;
        }
        if (kind == Stream::Kind::Acceptor) {
            Stream* s = add_stream(std::make_unique<AccConn>(), fd);
            linkproto::append(s->out, linkproto::Welcome, 0, {});
            queue_out(*s);
        } else
            add_stream(std::make_unique<HandlerConn>(), fd);
    }
}

void Link::stream_readable(Stream& s) {
    if (s.in_start > 0 && (s.in_start == s.in.size() || s.in_start > (1u << 20))) {
        s.in.erase(0, s.in_start);
        s.in_start = 0;
    }
    char buf[kReadChunk];
    for (int round = 0; round < 8; ++round) {
        ssize_t n = ::recv(s.fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0) {
            s.in.append(buf, size_t(n));
            if (size_t(n) < sizeof buf) break;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
        close_stream(s, n == 0 ? "closed" : strerror(errno));
        return;
    }
    switch (s.kind) {
        case Stream::Kind::Dist: {
            auto& d = static_cast<DistConn&>(s);
            d.last_in_us = monotonic_us();
            while (!d.dead) {
                std::string_view buf(d.in.data() + d.in_start, d.in.size() - d.in_start);
                if (buf.size() < 4) break;
                size_t len = linkproto::get_u32(buf.data());
                if (len > kMaxPacket) {
                    close_stream(d, "a packet of " + std::to_string(len) + " bytes");
                    return;
                }
                if (buf.size() < 4 + len) break;
                d.in_start += 4 + len;
                if (len > 0) dist_packet(d, buf.substr(4, len));  // len 0 is a tick
            }
            break;
        }
        case Stream::Kind::Acceptor: {
            auto& a = static_cast<AccConn&>(s);
            while (!a.dead) {
                linkproto::Message m;
                bool bad;
                std::string_view buf(a.in.data() + a.in_start, a.in.size() - a.in_start);
                if (!linkproto::scan(buf, config_.limits.max_frame + 64, m, bad)) {
                    if (bad) close_stream(a, "a malformed message");
                    break;
                }
                a.in_start += m.total;
                acceptor_message(a, m.type, m.tag, m.body);
            }
            break;
        }
        case Stream::Kind::Loop: loop_readable(static_cast<LoopConn&>(s)); break;
        case Stream::Kind::Handler: handler_readable(static_cast<HandlerConn&>(s)); break;
    }
}

void Link::close_stream(Stream& s, const std::string& why) {
    if (s.dead) return;
    s.dead = true;
    event_del(s.rev);
    event_del(s.wev);
    switch (s.kind) {
        case Stream::Kind::Dist: dist_closed(static_cast<DistConn&>(s)); break;
        case Stream::Kind::Loop: {
            auto& l = static_cast<LoopConn&>(s);
            if (l.busy && l.call) {
                auto call = std::move(l.call);
                finish_ext(*call, nullptr,
                           "the acceptor closed the connection during the call (" + why + ")");
                ext_queues_.finished(call->key);
            }
            break;
        }
        case Stream::Kind::Acceptor:
            log::debug("acceptor %u of generation %llu left the link (%s)", static_cast<AccConn&>(s).index,
                       (unsigned long long)static_cast<AccConn&>(s).generation, why.c_str());
            break;
        case Stream::Kind::Handler: handler_gone(static_cast<HandlerConn&>(s)); break;
    }
    auto it = streams_.find(s.id);
    if (it != streams_.end()) {
        graveyard_.push_back(std::move(it->second));
        streams_.erase(it);
    }
}

void Link::queue_out(Stream& s) {
    if (s.dead || s.dirty) return;
    s.dirty = true;
    dirty_.push_back(s.id);
}

void Link::flush_dirty() {
    // flush() may close streams, which may queue output elsewhere: loop until quiet.
    while (!dirty_.empty()) {
        std::vector<uint64_t> ids = std::exchange(dirty_, {});
        for (uint64_t id : ids) {
            auto it = streams_.find(id);
            if (it == streams_.end() || it->second->dead) continue;
            it->second->dirty = false;
            flush(*it->second);
        }
    }
}

void Link::flush(Stream& s) {
    while (s.out_start < s.out.size()) {
        ssize_t n =
            ::send(s.fd, s.out.data() + s.out_start, s.out.size() - s.out_start, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            s.out_start += size_t(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            event_add(s.wev, nullptr);
            return;
        }
        close_stream(s, strerror(errno));
        return;
    }
    event_del(s.wev);
    s.out.clear();
    s.out_start = 0;
    if (s.out.capacity() > (4u << 20)) std::string().swap(s.out);
}

// ---- nodes -------------------------------------------------------------------------------------

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

// ---- time and configuration ------------------------------------------------------------------------

void Link::tick() {
    int64_t now = monotonic_us();
    expire_calls(now);
    expire_waiting(now);
    expire_receives(now);
    if (!pending_registers_.empty()) retry_registers();
    for (auto& [name, n] : nodes_) {
        if (n.wanted || !n.held_by.empty()) ensure_connected(n);
        if (conn_of(n) && n.wanted && n.setup == Node::Setup::Failed && now >= n.setup_retry_us)
            start_setup(n);
    }
    // Calls from Erlang that found no loop connection (none could be made then) try again.
    if (ext_queues_.waiting() > 0) pump_ext();
    if (now - last_keepalive_us_ >= kKeepaliveUs) {
        last_keepalive_us_ = now;
        std::vector<DistConn*> silent;
        for (auto& [id, s] : streams_) {
            if (s->dead || s->kind != Stream::Kind::Dist) continue;
            auto& d = static_cast<DistConn&>(*s);
            if (now - d.last_in_us > kSilenceUs)
                silent.push_back(&d);
            else if (d.out_start == d.out.size()) {
                append_tick(d.out);
                queue_out(d);
            }
        }
        for (auto* d : silent) close_stream(*d, "silent for too long");
    }
    if (epmd_retry_us_ && now >= epmd_retry_us_) {
        std::string err = cnode_.republish();
        if (err.empty()) {
            epmd_retry_us_ = 0;
            event_free(epmd_ev_);
            epmd_ev_ = event_new(base_, cnode_.epmd_fd(), EV_READ | EV_PERSIST, on_epmd, this);
            event_add(epmd_ev_, nullptr);
        } else {
            log::error("%s", err.c_str());
            epmd_retry_us_ = now + 5'000'000;
        }
    }
}

void Link::reload() {
    try {
        Config c = load_config(opts_.config);
        apply_overrides(opts_, c);
        config_ = std::move(c);
    } catch (const ConfigError& e) {
        log::error("reload: keeping the previous configuration: %s", e.what());
        return;
    }
    log::info("reload: refreshing native modules and registered names");
    apply_config();
    for (auto& [name, n] : nodes_)
        if (n.wanted && conn_of(n)) start_setup(n);  // fresh export lists
}

void Link::apply_config() {
    native_modules_.clear();
    native_timeouts_.clear();
    registered_.clear();
    for (auto& [name, n] : nodes_) n.wanted = false;
    for (const auto& m : config_.modules) {
        if (m.type != ModuleConfig::Type::Native) continue;
        std::string where = module_node(m, id_);
        native_modules_[m.name] = where;
        native_timeouts_[m.name] = m.timeout > 0 ? m.timeout : config_.erlang.call_timeout;
        if (!where.empty()) node(where).wanted = true;
    }
    for (const auto& r : config_.erlang.registered) registered_[r.name] = r;
    for (auto& [name, n] : nodes_)
        if (n.wanted) ensure_connected(n);
}

}  // namespace bertd::erl
