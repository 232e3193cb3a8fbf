// streams.cc: the link's sockets: distribution connections, the acceptors', loop
// connections and handler workers'. Accepts only this server's processes, frames what
// each kind sends and hands it on; never blocks: a write that would block waits for
// EV_WRITE, and no packet longer than kMaxPacket is buffered.
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "erl/link.h"
#include "erl/proto.h"
#include "io/unix.h"
#include "log/log.h"

namespace bertd::erl {

namespace {
constexpr size_t kReadChunk = 64 * 1024;
constexpr size_t kMaxPacket = size_t(1) << 30;

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
    switch (flush_some(s.fd, s.out, s.out_start)) {
        case Flush::Blocked: event_add(s.wev, nullptr); return;
        case Flush::Failed: close_stream(s, strerror(errno)); return;
        case Flush::Done: break;
    }
    event_del(s.wev);
    if (s.out.capacity() > (4u << 20)) std::string().swap(s.out);
}

}  // namespace bertd::erl
