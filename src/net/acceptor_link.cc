// acceptor_link.cc: the acceptor's side of the Erlang link (src/erl/proto.h). A
// native request keeps its connection busy, with its bytes still in the buffer,
// until the link answers it or says "fallback" (then the same bytes go to the
// external module). Connections the link hands over (rpc:call from Erlang nodes)
// are served like clients, on external modules only. Nothing here blocks, and a
// lost link answers every request waiting on it at once.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "bert/frame.h"
#include "erl/proto.h"
#include "io/unix.h"
#include "log/log.h"
#include "net/acceptor_internal.h"

namespace bertd {

namespace {
constexpr int64_t kLinkRetryUs = 200'000;
// While the link is down (the master restarts it at once), native requests wait
// this long for it, trying to reach it every kParkRetryUs.
constexpr int64_t kLinkWaitUs = 2'000'000;
constexpr int64_t kParkRetryUs = 20'000;
}

bool Acceptor::link_connect() {
    if (link_fd_) return true;
    int64_t now = monotonic_us();
    if (now < link_retry_us_) return false;
    link_retry_us_ = now + kLinkRetryUs;
    int fd = connect_abstract(rt_.link_address, SOCK_STREAM);
    if (fd < 0) return false;  // not up yet, or restarting
    link_fd_.reset(fd);
    link_ev_ = event_new(base_, fd, EV_READ | EV_PERSIST, on_link_io, this);
    event_add(link_ev_, nullptr);
    char hello[12];
    linkproto::put_u64(hello, rt_.generation);
    linkproto::put_u32(hello + 8, index_);
    linkproto::append(link_out_, linkproto::Hello, 0, std::string_view(hello, sizeof hello));
    link_flush();
    log::debug("connected to the Erlang link");
    return true;
}

void Acceptor::on_link_io(evutil_socket_t, short what, void* arg) {
    auto* self = static_cast<Acceptor*>(arg);
    self->graveyard_.clear();
    self->link_io(what);
    self->maybe_exit();
}

// Writes what is queued. A failure is only noted: the read side then finds the
// end of the stream, so requests are failed from a callback of their own and
// never from inside the handle_frame that queued them.
void Acceptor::link_flush() {
    if (!link_fd_) return;
    while (link_out_start_ < link_out_.size()) {
        ssize_t n = ::send(link_fd_.get(), link_out_.data() + link_out_start_,
                           link_out_.size() - link_out_start_, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            link_out_start_ += size_t(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            if (!link_writing_) {
                link_writing_ = true;
                event_del(link_ev_);
                event_assign(link_ev_, base_, link_fd_.get(), EV_READ | EV_WRITE | EV_PERSIST, on_link_io,
                             this);
                event_add(link_ev_, nullptr);
            }
            return;
        }
        event_active(link_ev_, EV_READ, 0);
        return;
    }
    link_out_.clear();
    link_out_start_ = 0;
    if (link_writing_) {
        link_writing_ = false;
        event_del(link_ev_);
        event_assign(link_ev_, base_, link_fd_.get(), EV_READ | EV_PERSIST, on_link_io, this);
        event_add(link_ev_, nullptr);
    }
}

void Acceptor::link_io(short what) {
    if (!link_fd_) return;
    if (what & EV_WRITE) link_flush();
    if (!(what & EV_READ)) return;
    for (int round = 0; round < 16; ++round) {
        std::vector<int> fds;
        ssize_t n = recv_with_fds(link_fd_.get(), read_buf_.data(), read_buf_.size(), fds);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            link_lost(n == 0 ? "it closed the connection" : strerror(errno));
            return;
        }
        if (n < 0) break;
        link_fds_.insert(link_fds_.end(), fds.begin(), fds.end());
        link_in_.append(read_buf_.data(), size_t(n));
        if (size_t(n) < read_buf_.size()) break;
    }
    while (link_fd_) {
        linkproto::Message m;
        bool bad;
        std::string_view buf(link_in_.data() + link_in_start_, link_in_.size() - link_in_start_);
        if (!linkproto::scan(buf, max_frame_ + 64, m, bad)) {
            if (bad) link_lost("it sent a malformed message");
            break;
        }
        link_in_start_ += m.total;
        link_message(m.type, m.tag, m.body);
    }
    if (link_in_start_ == link_in_.size()) {
        link_in_.clear();
        link_in_start_ = 0;
    } else if (link_in_start_ > (1u << 20)) {
        link_in_.erase(0, link_in_start_);
        link_in_start_ = 0;
    }
}

void Acceptor::link_message(uint8_t type, uint64_t tag, std::string_view body) {
    switch (type) {
        case linkproto::Answer: native_answer(tag, body); return;
        case linkproto::Fallback: native_fallback(tag); return;
        case linkproto::Conn: {
            if (link_fds_.empty()) {
                log::warn("the Erlang link handed over a connection without its descriptor");
                return;
            }
            int fd = link_fds_.front();
            link_fds_.pop_front();
            set_nonblocking(fd);
            sockaddr_storage none{};
            seg_.header().stats.connections_total.fetch_add(1, std::memory_order_relaxed);
            Conn& c = add_conn(fd, none);
            c.from_link = true;
            c.admin_ok = false;
            conn_readable(c);
            return;
        }
        default: log::warn("the Erlang link sent a message of unknown type %u", unsigned(type)); return;
    }
}

void Acceptor::link_lost(const std::string& why) {
    log::warn("lost the Erlang link: %s", why.c_str());
    if (link_ev_) event_free(link_ev_);
    link_ev_ = nullptr;
    link_fd_.reset();
    link_writing_ = false;
    link_in_.clear();
    link_out_.clear();
    link_in_start_ = link_out_start_ = 0;
    for (int fd : link_fds_) ::close(fd);
    link_fds_.clear();
    link_lost_us_ = monotonic_us();
    link_retry_us_ = link_lost_us_ + kLinkRetryUs / 2;
    auto pending = std::exchange(native_, {});
    constexpr int et = int(ErrorType::Server);
    for (auto& [tag, p] : pending) {
        auto it = conns_.find(p.conn_id);
        if (it == conns_.end() || it->second->dead) continue;
        Conn& c = *it->second;
        c.in_start += c.frame_len;
        count_request(int32_t(p.stats_module), c.req, et);
        send_owned(c, error_frame(ErrorType::Server, 0,
                                  "native call: lost the connection to the Erlang link during the call"));
        log_request(c.req, et);
        conn_ready(c);
        if (!c.dead) after_input(c);
    }
}

void Acceptor::send_native(Conn& c, std::string_view payload, uint32_t stats_module, bool has_external) {
    c.state = Conn::State::Busy;
    if (!link_fd_) {
        // A connect to a unix socket costs next to nothing: try now. But not just after the
        // link was lost: the dying process's listen socket may still take the connection
        // and then reset it, failing a request that could have waited for the new link.
        if (monotonic_us() - link_lost_us_ >= kParkRetryUs) link_retry_us_ = 0;
        if (!link_connect()) {
            link_parked_.push_back({c.id, stats_module, has_external, monotonic_us() + kLinkWaitUs});
            if (!link_retry_ev_) link_retry_ev_ = evtimer_new(base_, on_link_retry, this);
            if (!evtimer_pending(link_retry_ev_, nullptr)) {
                timeval tv{0, suseconds_t(kParkRetryUs)};
                evtimer_add(link_retry_ev_, &tv);
            }
            return;
        }
    }
    write_native(c, payload, stats_module, has_external);
}

void Acceptor::write_native(Conn& c, std::string_view payload, uint32_t stats_module, bool has_external) {
    uint64_t tag = next_native_++;
    char flags = char((c.cast ? linkproto::Cast : 0) | (has_external ? linkproto::HasExternal : 0));
    linkproto::append(link_out_, linkproto::Request, tag, std::string_view(&flags, 1), payload);
    native_[tag] = {c.id, stats_module};
    link_flush();
}

void Acceptor::on_link_retry(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<Acceptor*>(arg);
    self->graveyard_.clear();
    self->link_retry();
    self->maybe_exit();
}

// The parked requests go to the link once it is back; those that waited too long
// are answered with an error.
void Acceptor::link_retry() {
    link_retry_us_ = 0;
    bool up = link_connect();
    int64_t now = monotonic_us();
    auto parked = std::exchange(link_parked_, {});
    for (const ParkedNative& p : parked) {
        auto it = conns_.find(p.conn_id);
        if (it == conns_.end() || it->second->dead) continue;  // the client left
        Conn& c = *it->second;
        if (up) {
            write_native(c, c.payload(), p.stats_module, p.has_external);
        } else if (now >= p.deadline_us) {
            native_unavailable(c, p.stats_module);
        } else {
            link_parked_.push_back(p);
        }
    }
    if (!link_parked_.empty()) {
        timeval tv{0, suseconds_t(kParkRetryUs)};
        evtimer_add(link_retry_ev_, &tv);
    }
}

void Acceptor::native_unavailable(Conn& c, uint32_t stats_module) {
    constexpr int et = int(ErrorType::Server);
    bert::Peek pk;
    bert::peek(c.payload(), pk);
    c.in_start += c.frame_len;
    count_request(int32_t(stats_module), c.req, et);
    send_owned(
        c, error_frame(ErrorType::Server, 0,
                       "native module '" + std::string(pk.module) + "': the Erlang link is not running (" +
                           std::to_string(kLinkWaitUs / 1'000'000) + " s without it; bertd restarts it)"));
    log_request(c.req, et);
    conn_ready(c);
    if (!c.dead) after_input(c);
}

void Acceptor::native_answer(uint64_t tag, std::string_view payload) {
    auto it = native_.find(tag);
    if (it == native_.end()) return;
    NativeRequest p = it->second;
    native_.erase(it);
    auto ci = conns_.find(p.conn_id);
    if (ci == conns_.end() || ci->second->dead) return;  // the client left
    Conn& c = *ci->second;
    c.in_start += c.frame_len;
    int et = answer_error_type(payload);
    count_request(int32_t(p.stats_module), c.req, et);
    std::string frame;
    frame.reserve(bert::kFrameHeader + payload.size());
    bert::append_frame(frame, payload);
    send_owned(c, std::move(frame));
    log_request(c.req, et);
    conn_ready(c);
    if (!c.dead) after_input(c);
}

// The native module does not take this call: the external module of the same name does.
void Acceptor::native_fallback(uint64_t tag) {
    auto it = native_.find(tag);
    if (it == native_.end()) return;
    uint64_t conn_id = it->second.conn_id;
    native_.erase(it);
    auto ci = conns_.find(conn_id);
    if (ci == conns_.end() || ci->second->dead) return;
    Conn& c = *ci->second;
    c.state = Conn::State::Idle;
    if (route_external(c, c.payload())) c.in_start += c.frame_len;
    if (c.state == Conn::State::Idle) {
        conn_ready(c);
        if (!c.dead) after_input(c);
    } else if (!c.dead) {
        set_reading(c, false);
    }
}

}  // namespace bertd
