// link.cc: the link's event loop: the libevent callbacks, the tick that expires calls
// and keeps nodes connected, and reload. Its sockets are streams.cc's, its nodes and
// calls in flight nodes.cc's. It never blocks: a write that would block waits for
// EV_WRITE, a handshake runs on a CNode thread.
#include "erl/link.h"

#include <errno.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "core/master.h"
#include "log/log.h"

namespace bertd::erl {

namespace {
constexpr int64_t kTickUs = 50'000;
constexpr int64_t kKeepaliveUs = 15'000'000;  // Erlang's own tick is net_ticktime/4 = 15 s
constexpr int64_t kSilenceUs = 75'000'000;    // nothing at all from a node for this long: it is gone
}  // namespace

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
