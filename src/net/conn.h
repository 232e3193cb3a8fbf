// conn.h: client connections: each one's socket, the bytes read but not yet
// served (one queue, whose front is the request in flight) and the bytes still
// to send (another), and the table of an acceptor's connections. Reading and
// writing never block and never look inside a frame; a closed connection is freed
// at one point per loop turn, never under a caller that may still hold it.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "io/event.h"
#include "io/fd.h"
#include "io/spare_buffers.h"
#include "io/unix.h"
#include "net/infos.h"

namespace bertd {

class Acceptor;
struct Request;

// Bytes with a read cursor: appended at the back, consumed from the front. What it holds
// is charged to its acceptor's total (the memory budget), so the total cannot drift, and so
// is the room of a spare buffer it took (expect()): that memory is in use before the bytes
// come, and a client announcing big frames must not hold it uncounted. The
// buffer and its cursors are one allocation made by the first append and kept while the
// connection is busy: an idle connection's queue is a null pointer (release()). The buffer
// may hold room past the bytes (a socket read straight into it, tail() and commit()), kept
// with it so that reading into it again costs no clearing of its memory.
class ByteQueue {
public:
    ByteQueue() = default;
    ByteQueue(const ByteQueue&) = delete;
    ByteQueue& operator=(const ByteQueue&) = delete;
    ~ByteQueue() { clear(); }
    void charge_to(size_t* total) { total_ = total; }
    std::string_view view() const {
        return b_ ? std::string_view(b_->buf.data() + b_->start, b_->end - b_->start) : std::string_view();
    }
    size_t size() const { return b_ ? b_->end - b_->start : 0; }
    bool empty() const { return size() == 0; }
    size_t capacity() const { return b_ ? b_->buf.capacity() : 0; }
    void append(std::string_view s);
    // Takes `s` whole, without a copy when the queue is empty.
    void append(std::string&& s);
    // Room for `n` bytes at the back, to be filled and then counted in with commit().
    char* tail(size_t n);
    void commit(size_t n) {
        b_->end += n;
        filled(n);
    }
    void consume(size_t n);
    // Moves what is unread to the front once the consumed part is worth reclaiming.
    void compact();
    // Room for `bytes` unread bytes in all, taken at once rather than by doubling (a big
    // frame is then copied and its memory touched once).
    // With `spares`, a big room comes from a spare buffer (only from one, if `only_spare`).
    void expect(size_t bytes, SpareBuffers* spares = nullptr, bool only_spare = false);
    // Gives up the buffer once it is empty and grew past `keep` bytes: returned, for the
    // acceptor's spares (an empty string otherwise).
    std::string shed(size_t keep);
    // Frees all of it once it is empty: a rested connection holds no memory for its queues.
    void release() {
        if (!b_ || !empty()) return;
        drop_room();
        b_.reset();
    }
    void clear();  // drops everything and frees the buffer (drop_all())
    std::string drop_all();  // drops everything; the buffer is returned (for the spares)
    // Sends from the front until it is all gone or the socket is full.
    Flush flush_to(int fd);

private:
    struct Block {
        std::string buf;  // the bytes are buf[start, end); buf[end, size) is room
        size_t start = 0, end = 0;
        size_t room = 0;  // charged for room past `end` (a spare's), until bytes fill it
    };
    Block& block() {
        if (!b_) b_ = std::make_unique<Block>();
        return *b_;
    }
    void charge(size_t n) {
        if (total_) *total_ += n;
    }
    void discharge(size_t n) {
        if (total_) *total_ -= n;
    }
    // n bytes came: charged, less the room charged for them already.
    void filled(size_t n) {
        size_t paid = std::min(n, b_->room);
        b_->room -= paid;
        charge(n - paid);
    }
    void drop_room() {  // the buffer goes, or is replaced
        if (b_) discharge(std::exchange(b_->room, 0));
    }

    std::unique_ptr<Block> b_;
    size_t* total_ = nullptr;
};

// A client's address in the room an IPv6 one takes (a sockaddr_in6 holds an IPv4 one too),
// not a sockaddr_storage's 128 bytes: every idle connection carries one. A unix socket's
// peer keeps only its family (its path, if it has one, says nothing about the client).
struct PeerAddress {
    sockaddr_in6 bytes{};
    void set(const sockaddr_storage& s);
    sockaddr_storage get() const;
};

// Infos for the next request that carry more than a flag.
struct PendingInfos {
    std::string token;                   // {info, cache, [{validation, Token}]}
    std::unique_ptr<Callback> callback;  // {info, callback, ...}
    std::string error;                   // a malformed info: answered in place of the next request
    int error_code = 0;                  // its protocol error code (2: it could not be read)
};

// Every idle connection is one of these and nothing else (no buffer, no other allocation), so
// its size is what an idle connection costs: the flags are bits, rare state is behind
// `pending`, and the event is inside it.
struct Conn {
    Acceptor* owner = nullptr;
    uint64_t id = 0;
    Fd fd;  // declared before `io`: the event leaves the loop before the socket closes
    // One edge-triggered event for both directions, registered from accept to close: whether
    // it is read or written is `reading` and `writing`, never an epoll_ctl (conn.cc).
    InlineEvent io;
    ByteQueue in, out;
    Request* request = nullptr;  // being served; its frame is at the front of `in` while it is attached
    // What few clients send, allocated by the first info that needs it, gone with the request
    // it goes to (RequestPath::take_infos): most connections never have one.
    std::unique_ptr<PendingInfos> pending;
    PendingInfos& pending_infos() {
        if (!pending) pending = std::make_unique<PendingInfos>();
        return *pending;
    }
    // The chunks of a streamed request that was refused are read and dropped to its end.
    uint64_t discard_left = 0;     // of the current chunk
    int64_t last_active_us = 0;    // monotonic, for the idle timeout
    int64_t partial_since_us = 0;  // monotonic: when the unfinished frame at the front began (0: none)
    // Who the client is: the socket's peer, or the address a PROXY header gave (proxy_gate.h).
    PeerAddress client;

    bool writing : 1 = false;  // `out` waits for room in the socket
    bool hup : 1 = false;      // the client shut its side: read to the end, a short read is no edge
    bool reading : 1 = false;
    // What the client's infos said (doc/info-packets.md). For the whole connection:
    bool accepts_stream : 1 = false;  // {info, accept, [...]}
    bool accepts_cache : 1 = false;
    // For the next request only:
    bool high_next : 1 = true;     // {info, priority, ...}
    bool stream_next : 1 = false;  // {info, stream, []}: chunks follow the request
    bool discarding : 1 = false;   // dropping a refused stream's chunks (discard_left)
    bool eof : 1 = false;          // the client will send nothing more
    bool closing : 1 = false;      // close once `out` is flushed
    bool out_paused : 1 = false;   // no request is served until the client has read its answers
    bool serving : 1 = false;      // inside RequestPath::serve: a completion must not serve again
    bool admin_ok : 1 = false;
    bool dead : 1 = false;         // closed; freed at the end of this loop turn
    bool handed_over : 1 = false;  // passed to the next generation, not closed
    bool from_link : 1 = false;    // the Erlang link's: external modules only, never handed over

    bool idle() const { return request == nullptr; }
    std::string client_text() const;  // "192.0.2.7:56324", for logs
};

// The acceptor's connections: adding, reading, writing, closing and sweeping them.
class Connections {
public:
    explicit Connections(Acceptor& a);
    ~Connections();

    // A new connection, reading: the caller reads it at once (read()), which takes what came
    // before its edge, so no kick is queued for it.
    Conn& add(int fd, const sockaddr_storage& peer);
    Conn* find(uint64_t id);
    size_t size() const { return live_; }
    template <class F>
    void each(F&& f) {
        for (size_t i = 0; i < slots_.size(); ++i)
            if (Conn* c = slots_[i].get(); c && !c->dead) f(*c);
    }

    void read(Conn& c);  // reads what the socket holds, then serves what became whole
    void set_reading(Conn& c, bool on);
    void send(Conn& c, std::string&& frame);  // queues and flushes
    // A streamed answer's bytes, a then b, after what waits in `out`: written at once, straight
    // from the caller's buffer, as far as the socket takes them; only the rest is queued.
    void relay(Conn& c, std::string_view a, std::string_view b);
    void flush(Conn& c);
    void close(Conn& c);  // at once; the memory goes at the end of the loop turn
    // The connection may read its next request (its last one is finished).
    void resume(Conn& c);
    // Closes connections idle past the limit and frees buffers of rested ones.
    void sweep(int64_t now_us, int64_t idle_limit_us);
    // An error-log line about one client, naming its address (the PROXY header's when there
    // was one): at most kClientLines per 10 s and acceptor, then how many were left out, so
    // no client can flood the log. `warning`: a protocol error; else an info line.
    void say(const Conn& c, bool warning, const std::string& what);

    // ---- the memory budget (limits.max_buffered) -------------------------------------
    // Every byte the acceptor holds for its clients: their queues and the frames of
    // requests that went on without them. Over budget, reads pause and the longest-waiting
    // unfinished frames are refused until it is back under.
    size_t& buffered() { return buffered_; }
    size_t buffered() const { return buffered_; }
    // The budget holds what the connections' queues are charged and the acceptor's spare
    // buffers (io/spare_buffers.h), which relieve() frees first.
    bool over_budget() const { return held() >= budget_; }
    size_t budget() const { return budget_; }

private:
    static void on_io(evutil_socket_t, short, void*);
    static void on_reap(evutil_socket_t, short, void*);
    static void on_kick(evutil_socket_t, short, void*);
    void kick(Conn& c);  // reads it in a callback of its own: bytes may wait with no edge to come
    ssize_t receive(Conn& c, bool relaying, size_t& want);
    void serve(Conn& c);  // hands whole frames to the request path; closes a finished client
    void pause(Conn& c);
    void relieve();        // over budget: refuses unfinished frames, oldest first
    void resume_paused();  // back under budget: reading goes on
    size_t resume_mark() const { return budget_ / 4 * 3; }
    size_t held() const;

    Acceptor& acc_;
    // The table: a connection's id is its slot here (the low 32 bits) and the count of
    // connections added before it (the high 32), so an id kept after its connection went
    // (kicks_, paused_) never finds the one that took its slot. Ids never leave this object.
    std::vector<std::unique_ptr<Conn>> slots_;
    std::vector<uint32_t> free_;  // empty slots, the last freed taken first
    uint32_t added_ = 0;
    size_t live_ = 0;
    std::vector<std::unique_ptr<Conn>> graveyard_;
    EventPtr reap_ev_;
    EventPtr kick_ev_;
    std::vector<uint64_t> kicks_;  // connections to read at kick_ev_
    size_t buffered_ = 0;
    size_t budget_ = 0;
    std::vector<uint64_t> paused_;  // connections whose reading waits for the budget
    int64_t said_window_us_ = 0;
    uint32_t said_ = 0;
    uint64_t unsaid_ = 0;
};

}  // namespace bertd
