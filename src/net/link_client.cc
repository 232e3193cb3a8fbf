// link_client.cc: messages to and from the Erlang link. A request's tag at the link
// is its id, so an answer finds its request (or nothing, if the client left) in the
// request path's table.
#include "net/link_client.h"

#include <errno.h>
#include <sys/socket.h>

#include <cstring>
#include <vector>

#include "bert/codec.h"
#include "bert/frame.h"
#include "io/clock.h"
#include "io/unix.h"
#include "log/log.h"
#include "net/acceptor.h"
#include "net/request.h"

namespace bertd {

namespace {
constexpr int64_t kLinkRetryUs = 200'000;
// While the link is down (the master restarts it at once), native requests wait
// this long for it, trying to reach it every kParkRetryUs.
constexpr int64_t kLinkWaitUs = 2'000'000;
constexpr int64_t kParkRetryUs = 20'000;
constexpr int kReadRounds = 16;
}  // namespace

LinkClient::LinkClient(Acceptor& a) : acc_(a) { retry_ev_ = make_event(a.base(), -1, 0, on_retry, this); }

LinkClient::~LinkClient() {
    for (int fd : fds_) ::close(fd);
}

bool LinkClient::configured() const { return !acc_.rt().link_address.empty(); }

void LinkClient::connect() {
    if (!configured()) return;
    if (fd_ && !welcomed_ && monotonic_us() - connected_at_us_ > kLinkWaitUs) {
        lost("it did not take the connection within " + std::to_string(kLinkWaitUs / 1'000'000) +
             " s (it is not running; bertd restarts it)");
        return;
    }
    if (!fd_ && !acc_.stopping()) try_connect();
}

bool LinkClient::try_connect() {
    if (fd_) return true;
    int64_t now = monotonic_us();
    if (now < retry_at_us_) return false;
    retry_at_us_ = now + kLinkRetryUs;
    int fd = connect_abstract(acc_.rt().link_address, SOCK_STREAM);
    if (fd < 0) return false;  // not up yet, or restarting
    // The listening side must be this server's: the master (which holds the socket) or its
    // link. Anyone else who took the name would read the clients' arguments and answer them.
    PeerCred peer;
    pid_t master = acc_.seg().header().master_pid;
    if (!peer_credentials(fd, peer) || (peer.pid != master && parent_of(peer.pid) != master)) {
        ::close(fd);
        uint64_t times;
        if (impostor_.due(times))
            log::error("refused the process at the Erlang link's socket: pid %d (uid %u) is not this server's "
                       "(%llu such since the last line)",
                       int(peer.pid), unsigned(peer.uid), (unsigned long long)times);
        return false;
    }
    fd_.reset(fd);
    welcomed_ = false;
    connected_at_us_ = now;
    ev_ = make_event(acc_.base(), fd, EV_READ | EV_PERSIST, on_io, this);
    event_add(ev_.get(), nullptr);
    char hello[12];
    linkproto::put_u64(hello, acc_.rt().generation);
    linkproto::put_u32(hello + 8, acc_.index());
    linkproto::append(out_, linkproto::Hello, 0, std::string_view(hello, sizeof hello));
    flush();
    log::debug("connected to the Erlang link");
    return true;
}

void LinkClient::on_io(evutil_socket_t, short what, void* arg) {
    auto* self = static_cast<LinkClient*>(arg);
    self->io(what);
    self->acc_.maybe_exit();
}

void LinkClient::watch(bool writable) {
    if (writable == writing_) return;
    writing_ = writable;
    event_del(ev_.get());
    event_assign(ev_.get(), acc_.base(), fd_.get(), EV_READ | EV_PERSIST | (writable ? EV_WRITE : 0), on_io, this);
    event_add(ev_.get(), nullptr);
}

// Writes what is queued. A failure is only noted: the read side then finds the end of
// the stream, so requests are failed from a callback of their own, never from inside
// the serve() that queued them.
void LinkClient::flush() {
    if (!fd_) return;
    switch (flush_some(fd_.get(), out_, out_start_)) {
        case Flush::Done: watch(false); return;
        case Flush::Blocked: watch(true); return;
        case Flush::Failed: event_active(ev_.get(), EV_READ, 0); return;
    }
}

void LinkClient::io(short what) {
    if (!fd_) return;
    if (what & EV_WRITE) flush();
    if (!(what & EV_READ)) return;
    std::string& buf = acc_.scratch();
    for (int round = 0; round < kReadRounds; ++round) {
        std::vector<int> fds;
        ssize_t n = recv_with_fds(fd_.get(), buf.data(), buf.size(), fds);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            lost(n == 0 ? "it closed the connection" : strerror(errno));
            return;
        }
        if (n < 0) break;
        fds_.insert(fds_.end(), fds.begin(), fds.end());
        in_.append(buf.data(), size_t(n));
        if (size_t(n) < buf.size()) break;
    }
    read_messages();
}

void LinkClient::read_messages() {
    while (fd_) {
        linkproto::Message m;
        bool bad;
        std::string_view buf(in_.data() + in_start_, in_.size() - in_start_);
        if (!linkproto::scan(buf, acc_.max_frame() + 64, m, bad)) {
            if (bad) lost("it sent a malformed message");
            break;
        }
        in_start_ += m.total;
        message(m);
    }
    if (in_start_ == in_.size()) {
        in_.clear();
        in_start_ = 0;
    } else if (in_start_ > (1u << 20)) {
        in_.erase(0, in_start_);
        in_start_ = 0;
    }
}

void LinkClient::message(const linkproto::Message& m) {
    switch (m.type) {
        case linkproto::Answer: {
            at_link_.erase(m.tag);
            Request* r = acc_.requests().find(m.tag);
            if (!r || r->stage != Request::Stage::AtLink) return;  // the client left
            std::string frame, error;
            if (native_infos(m.body, r->accepts_cache, frame, error)) {  // {bert_rpc_info, Infos, Result}
                acc_.requests().complete(*r, error.empty() ? Outcome::frames(std::move(frame), -1)
                                                           : Outcome::error(ErrorType::Server, 0, error));
                return;
            }
            frame.reserve(bert::kFrameHeader + m.body.size());
            bert::append_frame(frame, m.body);
            acc_.requests().complete(*r, Outcome::answer(std::move(frame)));
            return;
        }
        case linkproto::Declined: {
            at_link_.erase(m.tag);
            Request* r = acc_.requests().find(m.tag);
            if (!r || r->stage != Request::Stage::AtLink) return;
            auto why = m.body.empty() ? Declined::NoFunction : Declined(uint8_t(m.body[0]));
            acc_.requests().declined(*r, why == Declined::NoModule ? why : Declined::NoFunction);
            return;
        }
        case linkproto::Connection: adopt_connection(); return;
        case linkproto::Welcome:
            welcomed_ = true;
            log::debug("the Erlang link took this acceptor's connection");
            return;
        default: log::warn("the Erlang link sent a message of unknown type %u", unsigned(m.type)); return;
    }
}

void LinkClient::adopt_connection() {
    if (fds_.empty()) {
        log::warn("the Erlang link handed over a connection without its descriptor");
        return;
    }
    int fd = fds_.front();
    fds_.pop_front();
    set_nonblocking(fd);
    sockaddr_storage none{};
    acc_.seg().header().stats.connections_total.fetch_add(1, std::memory_order_relaxed);
    Conn& c = acc_.conns().add(fd, none);
    c.from_link = true;
    c.admin_ok = false;
    acc_.conns().read(c);
}

void LinkClient::lost(const std::string& why) {
    log::warn("lost the Erlang link: %s", why.c_str());
    ev_.reset();
    fd_.reset();
    writing_ = false;
    in_.clear();
    out_.clear();
    in_start_ = out_start_ = 0;
    for (int fd : fds_) ::close(fd);
    fds_.clear();
    lost_at_us_ = monotonic_us();
    retry_at_us_ = lost_at_us_ + kLinkRetryUs / 2;
    auto held = std::exchange(at_link_, {});
    for (uint64_t id : held) {
        Request* r = acc_.requests().find(id);
        if (!r || r->stage != Request::Stage::AtLink) continue;
        acc_.requests().complete(*r, Outcome::error(ErrorType::Server, 0,
                                                    "native call: lost the connection to the Erlang link during "
                                                    "the call"));
    }
}

void LinkClient::send(Request& r) {
    if (r.callback) {
        // Run as a call, so that the native function returns the Result the service gets;
        // the client has its {noreply} now.
        acc_.requests().as_call(r);
        acc_.requests().answer_cast(r);
    }
    if (!fd_) {
        // A connect to a unix socket costs next to nothing: try now. But not just after the
        // link was lost: the dying process's listen socket may still take the connection
        // and then reset it, failing a request that could have waited for the new link.
        if (monotonic_us() - lost_at_us_ >= kParkRetryUs) retry_at_us_ = 0;
        if (!try_connect()) {
            r.stage = Request::Stage::Parked;
            r.park_deadline_us = monotonic_us() + kLinkWaitUs;
            parked_.push_back(r.id);
            if (!evtimer_pending(retry_ev_.get(), nullptr)) {
                timeval tv{0, suseconds_t(kParkRetryUs)};
                evtimer_add(retry_ev_.get(), &tv);
            }
            return;
        }
    }
    write(r);
}

void LinkClient::write(Request& r) {
    char flags = char(r.cast && !r.callback ? linkproto::Cast : 0);
    linkproto::append(out_, linkproto::Request, r.id, std::string_view(&flags, 1), r.payload());
    at_link_.insert(r.id);
    r.stage = Request::Stage::AtLink;
    flush();
}

void LinkClient::on_retry(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<LinkClient*>(arg);
    self->retry_parked();
    self->acc_.maybe_exit();
}

// The parked requests go to the link once it is back; those that waited too long are
// answered with an error.
void LinkClient::retry_parked() {
    retry_at_us_ = 0;
    bool up = try_connect();
    int64_t now = monotonic_us();
    auto parked = std::exchange(parked_, {});
    for (uint64_t id : parked) {
        Request* r = acc_.requests().find(id);
        if (!r || r->stage != Request::Stage::Parked) continue;  // the client left
        if (up) {
            write(*r);
        } else if (now >= r->park_deadline_us) {
            bert::Peek pk;
            bert::peek(r->payload(), pk);
            acc_.requests().complete(
                *r, Outcome::error(ErrorType::Server, 0,
                                   "native module '" + std::string(pk.module) +
                                       "': the Erlang link is not running (" +
                                       std::to_string(kLinkWaitUs / 1'000'000) + " s without it; bertd restarts it)"));
        } else {
            parked_.push_back(id);
        }
    }
    if (!parked_.empty()) {
        timeval tv{0, suseconds_t(kParkRetryUs)};
        evtimer_add(retry_ev_.get(), &tv);
    }
}

}  // namespace bertd
