// acceptor.cc: the acceptor process's loop: setting up its parts, the wake-ups from
// other acceptors and the master, the tick (idle connections, the access log, the
// link, lost wake-ups), signals, and a graceful stop that finishes what is in flight.
#include "net/acceptor.h"

#include <malloc.h>
#include <signal.h>
#include <unistd.h>

#include "io/clock.h"
#include "log/log.h"
#include "net/callbacks.h"
#include "net/conn.h"
#include "net/leases.h"
#include "net/link_client.h"
#include "net/listener.h"
#include "net/request.h"

namespace bertd {

namespace {
constexpr size_t kScratch = 64 * 1024;
}

Acceptor::Acceptor(Runtime& rt, uint32_t index)
    : rt_(rt), seg_(*rt.seg), index_(index), max_frame_(rt.config.limits.max_frame) {
    scratch_.resize(kScratch);
}

Acceptor::~Acceptor() {
    // Requests go before the connections and leases that point at them, events before the base.
    listener_.reset();
    callbacks_.reset();
    link_.reset();
    leases_.reset();
    requests_.reset();
    conns_.reset();
    wake_ev_.reset();
    tick_ev_.reset();
    control_ev_.reset();
    signal_evs_.clear();
    if (base_) event_base_free(base_);
}

int Acceptor::run() {
    if (!start(true)) return 1;
    event_base_dispatch(base_);
    return 0;
}

bool Acceptor::start(bool handle_signals) {
    AcceptorShared& me = seg_.acceptor(index_);
    uint64_t incarnation = me.incarnation.fetch_add(1) + 1;
    me.pid = getpid();
    // Ids stay unique across restarts of this acceptor, so a queued hand-off meant for a
    // previous incarnation's request is never misdelivered.
    id_prefix_ = (uint64_t(index_) << 56) | ((incarnation & 0xFFFF) << 40);

    // A buffer over 128 KiB (a big request or answer) gets a mapping of its own, so
    // freeing it returns the memory. glibc otherwise raises this threshold after the first
    // such free, and connections that once carried big frames leave the heap at its peak.
    // (A fresh mapping costs a page fault per 4 KiB written: spares_ keeps sent answers'
    // buffers for a second, for the next big answer.)
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    base_ = event_base_new();
    if (!base_) return false;
    event_base_priority_init(base_, 2);
    if (!rt_.access_log_path.empty()) access_log_.open(rt_.access_log_path, &seg_.header().access_log, &seg_.header().stats);
    conns_ = std::make_unique<Connections>(*this);
    requests_ = std::make_unique<RequestPath>(*this);
    leases_ = std::make_unique<Leases>(*this);
    link_ = std::make_unique<LinkClient>(*this);
    listener_ = std::make_unique<Listener>(*this);
    callbacks_ = std::make_unique<Callbacks>(*this);
    wake_ev_ = make_event(base_, rt_.acceptor_wake[index_].get(), EV_READ | EV_PERSIST, on_wake, this);
    event_priority_set(wake_ev_.get(), kWorkerPriority);
    event_add(wake_ev_.get(), nullptr);
    if (rt_.control_acceptor.size() > index_) {
        control_ev_ =
            make_event(base_, rt_.control_acceptor[index_].get(), EV_READ | EV_PERSIST, on_control, this);
        event_priority_set(control_ev_.get(), kWorkerPriority);
        event_add(control_ev_.get(), nullptr);
    }
    tick_ev_ = make_event(base_, -1, EV_PERSIST, on_tick, this);
    // A moved access log must be replaced within a second, so look four times a second.
    timeval quarter{0, 250000};
    event_add(tick_ev_.get(), &quarter);
    if (handle_signals) {
        for (int sig : {SIGTERM, SIGINT, SIGQUIT, SIGUSR1}) {
            signal_evs_.push_back(EventPtr(evsignal_new(base_, sig, on_signal, this)));
            event_add(signal_evs_.back().get(), nullptr);
        }
        sigset_t unblock;
        sigemptyset(&unblock);
        sigprocmask(SIG_SETMASK, &unblock, nullptr);
        signal(SIGPIPE, SIG_IGN);
        signal(SIGHUP, SIG_IGN);
    }
    // Hand-offs may have been made to this index while it was down.
    leases_->scan();
    link_->connect();
    return true;
}

void Acceptor::adopt(int fd) {
    sockaddr_storage peer{};
    socklen_t plen = sizeof peer;
    getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &plen);
    set_nonblocking(fd);
    seg_.header().stats.connections_total.fetch_add(1, std::memory_order_relaxed);
    Conn& c = conns_->add(fd, peer);
    conns_->read(c);
}

size_t Acceptor::open_connections() const { return conns_->size(); }

size_t Acceptor::leases_held() const { return leases_->held(); }

size_t Acceptor::buffered() const { return conns_->buffered(); }

void Acceptor::on_wake(evutil_socket_t fd, short, void* arg) {
    uint64_t v;
    [[maybe_unused]] ssize_t n = ::read(fd, &v, sizeof v);
    static_cast<Acceptor*>(arg)->leases_->scan();
}

void Acceptor::on_control(evutil_socket_t, short, void* arg) { static_cast<Acceptor*>(arg)->leases_->read_control(); }

void Acceptor::wake(int32_t acceptor) {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(rt_.acceptor_wake[size_t(acceptor)].get(), &one, sizeof one);
}

void Acceptor::poke_master() {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(rt_.master_wake.get(), &one, sizeof one);
}

void Acceptor::on_tick(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<Acceptor*>(arg);
    int64_t now = monotonic_us();
    self->conns_->sweep(now, int64_t(self->rt_.config.limits.idle_timeout * 1e6));
    self->spares_.sweep(now);
    self->access_log_.reopen_if_moved();
    self->link_->connect();
    // A wake-up may have been lost if an acceptor died between popping a waiter and waking us.
    self->leases_->scan();
    self->maybe_exit();
}

void Acceptor::on_signal(evutil_socket_t sig, short, void* arg) {
    auto* self = static_cast<Acceptor*>(arg);
    if (sig == SIGUSR1) {
        self->access_log_.reopen();
        log::reopen();
        return;
    }
    self->begin_shutdown(sig == SIGQUIT);
}

void Acceptor::begin_shutdown(bool graceful) {
    if (!graceful) {
        event_base_loopbreak(base_);
        return;
    }
    stopping_ = true;
    listener_->stop_accepting();
    maybe_exit();
}

// While stopping: idle connections go to the successor (or are closed when there is
// none), and the loop ends once no request is in flight.
void Acceptor::maybe_exit() {
    if (!stopping_) return;
    listener_->hand_over_idle();
    if (seg_.header().successor.load() == 0) {
        std::vector<Conn*> idle;
        conns_->each([&](Conn& c) {
            if (c.idle() && c.out.empty()) idle.push_back(&c);
        });
        for (Conn* c : idle) conns_->close(*c);
    }
    // Leases of casts outlive their connections: their workers are still working.
    if (conns_->size() == 0 && leases_->held() == 0 && !link_->busy() && callbacks_->in_flight() == 0 &&
        listener_->pending() == 0) {
        // Connections the generation before handed over and nobody read yet would close with
        // this process (a client's request in one of them is then answered by a reset).
        listener_->take_handovers();
        if (conns_->size() == 0) event_base_loopbreak(base_);
    }
}

}  // namespace bertd
