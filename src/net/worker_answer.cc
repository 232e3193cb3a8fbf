// worker_answer.cc: what a worker sends back for the request it holds: infos (a cache
// info, {info, valid, []}, {info, stream, []}), its answer, and for a streamed answer the
// chunks and the zero header that ends them. Infos go on to clients that announced their
// kind and are dropped for others; a streamed answer is relayed chunk by chunk to a client
// that announced streams (the worker is read only as fast as the client reads), and gathered
// into one {reply, Binary} for one that did not. A relayed chunk's bytes go from socket to
// socket through a pipe (splice(2)), never through bertd's memory; only the headers are
// looked at. Every chunk is checked to come from the worker (leases.cc's from_worker);
// nothing a worker sends is decoded here.
#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>

#include <cstring>
#include <vector>

#include "bert/codec.h"
#include "bert/frame.h"
#include "io/clock.h"
#include "io/unix.h"
#include "net/acceptor.h"
#include "net/conn.h"
#include "net/infos.h"
#include "net/leases.h"
#include "net/request.h"
#include "shm/cache.h"

namespace bertd {

namespace {
// A streamed answer pauses the worker once this much waits for the client.
constexpr size_t kStreamHighWater = 1u << 20;
// A relay pipe's room (F_SETPIPE_SZ; the kernel's pipe-max-size is 1 MiB unless lowered).
constexpr size_t kPipeRoom = 1u << 20;
// Pipe-fulls relayed in one turn before the loop serves the others (the event is level-triggered).
constexpr int kSplicesPerTurn = 16;
}  // namespace

void Leases::read_answer(Lease& l) {  // l.req is set (on_io)
    for (;;) {
        if (l.in_chunks && l.mode == Lease::Mode::Relay && splice_chunks(l) == Spliced::Stop) return;
        std::string& buf = l.in_chunks && l.mode == Lease::Mode::Relay ? acc_.stream_scratch() : acc_.scratch();
        std::vector<int> fds;
        PeerCred writer;
        ssize_t n = recv_with_fds(l.fd, buf.data(), buf.size(), fds, &writer);
        if (n <= 0) {
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
            fail(l, "lost the connection to the handler worker");
            return;
        }
        if (!by_writer(l, fds, writer)) return;
        if (!take(l, std::string_view(buf.data(), size_t(n)))) return;  // finished, failed or paused
        if (size_t(n) < buf.size()) return;
    }
}

// Closes what descriptors came; false (the lease failed) unless the worker wrote the bytes.
bool Leases::by_writer(Lease& l, const std::vector<int>& fds, const PeerCred& writer) {
    for (int f : fds) ::close(f);
    if (fds.empty() && from_worker(l.slot, writer.pid)) return true;
    fail(l, "pid " + std::to_string(writer.pid) + ", not the worker, wrote into its socket (a process it " +
                "left behind?); the bytes are dropped");
    return false;
}

// A relayed answer's chunks, spliced while the client keeps up: a peek (MSG_PEEK, with the
// writer's credentials) reads the next header, or one byte of the body, and says who wrote it;
// then one splice takes the header and what the socket holds of the body into the pipe (the
// kernel never joins two writers' bytes in one read, so all of them are that writer's), and
// another sends the pipe to the client. Copy: the copying path reads next (a header cut in
// two, the zero header, a bad header, a client with bytes queued). Stop: wait for the worker
// or the client, or the lease is over.
Leases::Spliced Leases::splice_chunks(Lease& l) {
    Request& r = *l.req;
    for (int turn = 0; turn < kSplicesPerTurn; ++turn) {
        Conn* c = r.conn;
        if (!c || l.no_splice || l.chunk_head_have) return Spliced::Copy;
        if (c->writing) {  // the client is full: flush() drains the pipe and drained() resumes
            l.paused = true;
            rearm(l);
            return Spliced::Stop;
        }
        if (!c->out.empty()) return Spliced::Copy;
        char peeked[bert::kFrameHeader];
        std::vector<int> fds;
        PeerCred writer;
        ssize_t n = recv_with_fds(l.fd, peeked, l.chunk_left ? 1 : sizeof peeked, fds, &writer, MSG_PEEK);
        if (n <= 0) {
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) return Spliced::Stop;
            fail(l, "lost the connection to the handler worker");
            return Spliced::Stop;
        }
        if (!by_writer(l, fds, writer)) return Spliced::Stop;
        if (!splice_in(l, peeked, size_t(n))) return l.req == &r ? Spliced::Copy : Spliced::Stop;
        restart_deadline(l);
        Flush f = drain_pipe(l, *c);
        if (f == Flush::Failed) {
            acc_.conns().close(*c);  // the client is gone: its lease fails (client_left)
            return Spliced::Stop;
        }
        if (f == Flush::Blocked) {
            l.paused = true;
            rearm(l);
            return Spliced::Stop;
        }
    }
    return Spliced::Stop;  // more next turn: the worker's event is level-triggered
}

// Moves the next chunk's header and body, or more of the body, into the (empty) pipe; false
// when the copying path is to read them instead, or the lease failed.
bool Leases::splice_in(Lease& l, const char* peeked, size_t have) {
    if (!l.pipe_w) {
        int p[2];
        if (pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) return false;  // out of descriptors: copy
        l.pipe_r.reset(p[0]);
        l.pipe_w.reset(p[1]);
        (void)fcntl(p[1], F_SETPIPE_SZ, int(kPipeRoom));  // else the default 64 KiB
    }
    size_t head = 0;
    if (l.chunk_left == 0) {
        if (have < bert::kFrameHeader || bert::scan_frame(std::string_view(peeked, have), ~0u).length == 0)
            return false;  // a header cut in two, or the end: copied
        size_t at = 0;
        std::string why;
        if (chunk_head(l, std::string_view(peeked, have), at, why) != ChunkHead::Begun) return false;  // Bad
        head = bert::kFrameHeader;
    }
    size_t want = head + size_t(std::min<uint64_t>(l.chunk_left, kPipeRoom - head));
    ssize_t m = ::splice(l.fd, nullptr, l.pipe_w.get(), nullptr, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (m <= 0) {  // never expected with bytes peeked and the pipe empty: copy from now on
        l.no_splice = true;
        if (head) l.streamed -= std::exchange(l.chunk_left, 0);  // the header is read again
        return false;
    }
    if (size_t(m) < head) {  // as unexpected: part of a header went, and cannot be read again
        fail(l, "the handler's streamed answer could not be relayed (a chunk header split by splice)");
        return false;
    }
    l.piped = uint32_t(m);
    l.chunk_left -= uint64_t(m) - head;
    return true;
}

// Sends the client what the pipe holds; Blocked with the client marked as writing.
Flush Leases::drain_pipe(Lease& l, Conn& c) {
    while (l.piped) {
        ssize_t n = ::splice(l.pipe_r.get(), nullptr, c.fd.get(), nullptr, l.piped, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
            l.piped -= uint32_t(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            c.writing = true;  // its next edge flushes it (Connections::flush)
            return Flush::Blocked;
        }
        return Flush::Failed;
    }
    return Flush::Done;
}

Flush Leases::flush_pipe(Request& r) {
    Lease& l = *slots_[r.slot];
    if (l.req != &r || !l.piped || !r.conn) return Flush::Done;
    return drain_pipe(l, *r.conn);
}

// False once the lease is done with (finished, failed) or paused.
bool Leases::take(Lease& l, std::string_view bytes) {
    if (l.in_chunks) return chunks(l, bytes);
    l.answer.append(bytes);
    return head_frames(l);
}

bool Leases::head_frames(Lease& l) {
    Request& r = *l.req;
    size_t max_frame = acc_.max_frame();
    for (;;) {
        std::string_view buf = std::string_view(l.answer).substr(l.answer_at);
        bert::FrameScan fs = bert::scan_frame(buf, max_frame);
        if (fs.state == bert::FrameScan::State::TooLarge) {
            fail(l, "the handler's answer is over the limit of " + std::to_string(max_frame) +
                        " bytes (limits.max_frame)");
            return false;
        }
        if (fs.state == bert::FrameScan::State::NeedMore) {
            if (buf.size() >= bert::kFrameHeader)  // a big answer's room from a buffer sent before
                acc_.spares().reserve(l.answer, l.answer_at + bert::kFrameHeader + fs.length, monotonic_us());
            return true;
        }
        size_t total = bert::kFrameHeader + fs.length;
        std::string_view payload = buf.substr(bert::kFrameHeader, fs.length);
        if (payload.empty() || uint8_t(payload[0]) != bert::kVersion) {
            fail(l, "the handler sent an answer that is not a BERT term");
            return false;
        }
        WorkerFrame kind = classify_worker_frame(payload);
        if (kind != WorkerFrame::Answer) {
            bool cache_kind = kind == WorkerFrame::CacheInfo || kind == WorkerFrame::ValidInfo;
            if (cache_kind && r.accepts_cache) r.answer_infos.append(buf.substr(0, total));
            if (kind == WorkerFrame::CacheInfo) l.cache_info.assign(buf.substr(0, total));
            if (kind == WorkerFrame::StreamInfo) l.streaming = true;
            l.answer_at += total;
            continue;
        }
        l.answer_type = answer_error_type(payload);
        if (!l.streaming) return whole_answer(l, buf.substr(0, total), buf.substr(total));
        return stream_head(l, buf.substr(0, total), std::string(buf.substr(total)));
    }
}

// The answer, all of it: to the client with the infos before it (and into the cache).
bool Leases::whole_answer(Lease& l, std::string_view answer, std::string_view rest) {
    Request& r = *l.req;
    // A worker that says more than one answer is out of step.
    if (!rest.empty()) {
        fail(l, "the handler sent more than one answer");
        return false;
    }
    if (l.answer_type < 0 && !l.cache_info.empty()) keep_in_cache(l, answer);
    std::string frames;
    if (l.answer_at == 0 && r.answer_infos.empty()) {
        frames = std::move(l.answer);  // exactly the frame: the client's output without a copy
    } else {
        frames = std::move(r.answer_infos);
        frames.append(answer);
    }
    finish(l, Outcome::frames(std::move(frames), l.answer_type));
    return false;
}

// A streamed answer: the reply first, then chunks (`rest` holds the first of them).
bool Leases::stream_head(Lease& l, std::string_view reply, std::string rest) {
    Request& r = *l.req;
    l.in_chunks = true;
    if (r.conn && r.accepts_stream) {
        l.mode = Lease::Mode::Relay;
        std::string head = std::move(r.answer_infos);
        head += stream_info_frame();
        head.append(reply);
        acc_.conns().send(*r.conn, std::move(head));
        if (l.req != &r) return false;  // the send found the client gone: the lease is over
    } else {
        l.mode = r.conn ? Lease::Mode::Gather : Lease::Mode::Drop;
    }
    l.answer.clear();
    l.answer_at = 0;
    return chunks(l, rest);
}

// The next chunk's 4-byte header, from bytes[at...]: Wait while it is incomplete, Begun once
// a chunk starts, End at the zero header, Bad (with `why`) for a chunk over the limits.
Leases::ChunkHead Leases::chunk_head(Lease& l, std::string_view bytes, size_t& at, std::string& why) {
    while (l.chunk_head_have < bert::kFrameHeader && at < bytes.size()) l.chunk_head[l.chunk_head_have++] = bytes[at++];
    if (l.chunk_head_have < bert::kFrameHeader) return ChunkHead::Wait;
    l.chunk_head_have = 0;
    uint32_t n = bert::scan_frame(std::string_view(l.chunk_head, 4), ~0u).length;
    if (n == 0) return ChunkHead::End;
    uint64_t max_stream = acc_.rt().config.limits.max_stream;
    if (n > acc_.max_frame())
        why = "the handler streamed a chunk of " + std::to_string(n) + " bytes, over limits.max_frame";
    else if (max_stream && l.streamed + n > max_stream)
        why = "the handler's streamed answer is over limits.max_stream (" + std::to_string(max_stream) +
              " bytes)";
    if (!why.empty()) return ChunkHead::Bad;
    l.streamed += n;
    l.chunk_left = n;
    return ChunkHead::Begun;
}

// Part of a chunk: into the gathered reply (up to max_frame), or nowhere. (A relayed one
// goes to the client with the bytes around it, chunks().)
void Leases::chunk_piece(Lease& l, std::string_view piece) {
    if (l.mode == Lease::Mode::Gather) {
        if (l.gathered.size() + piece.size() > acc_.max_frame()) {
            l.overflow = true;
            l.mode = Lease::Mode::Drop;
            std::string().swap(l.gathered);
        } else {
            l.gathered.append(piece);
        }
    }
    l.chunk_left -= piece.size();
}

// What the worker sent of its chunks. Relayed, the bytes go to the client as they came
// (headers and all, checked on the way), straight from the read buffer and in one write
// for the whole read: a header split between two reads waits in l.chunk_head meanwhile.
bool Leases::chunks(Lease& l, std::string_view bytes) {
    Request& r = *l.req;
    if (l.mode == Lease::Mode::Relay && !r.conn) l.mode = Lease::Mode::Drop;  // the client left
    size_t carried = l.chunk_left == 0 ? l.chunk_head_have : 0;  // a header begun in the last read
    char carry[bert::kFrameHeader];
    std::memcpy(carry, l.chunk_head, carried);
    size_t at = 0, upto = bytes.size();  // bytes[0, upto) are relayed as they are
    ChunkHead h = ChunkHead::Begun;
    std::string why;
    while (at < bytes.size()) {
        if (l.chunk_left == 0) {
            size_t head_at = at;
            h = chunk_head(l, bytes, at, why);
            if (h != ChunkHead::Begun) {
                upto = head_at;  // the header itself waits (Wait), is the client's end (End) or none
                break;
            }
        }
        size_t take = size_t(std::min<uint64_t>(l.chunk_left, bytes.size() - at));
        chunk_piece(l, bytes.substr(at, take));
        at += take;
    }
    if (h == ChunkHead::End && at < bytes.size()) {
        h = ChunkHead::Bad;
        why = "the handler sent bytes after the end of its streamed answer";
    }
    // The worker has said all of it: a client found gone as it goes out (client_left) costs
    // the request its answer, not the worker its life.
    if (h == ChunkHead::End) l.in_chunks = false;
    if (l.mode == Lease::Mode::Relay && upto > 0) {
        acc_.conns().relay(*r.conn, std::string_view(carry, carried), bytes.substr(0, upto));
        // A client found gone closes its connection, which fails this lease (client_left):
        // `r` is recycled by then and the worker's socket is no longer ours to read.
        if (l.req != &r) return false;
    }
    if (h == ChunkHead::End) {
        end_of_stream(l);
        return false;
    }
    if (h == ChunkHead::Bad) {
        fail(l, why);
        return false;
    }
    restart_deadline(l);
    // A slow client slows the worker: nothing is read from it until the client has read.
    if (l.mode == Lease::Mode::Relay && r.conn && r.conn->out.size() > kStreamHighWater) {
        l.paused = true;
        rearm(l);
        return false;
    }
    return true;
}

void Leases::end_of_stream(Lease& l) {
    Request& r = *l.req;
    acc_.seg().header().stats.streams_out.fetch_add(1, std::memory_order_relaxed);
    // The worker has said all of it: a client that turns out gone while the end goes out
    // (client_left) costs the request its answer, not the worker its life.
    l.in_chunks = false;
    switch (l.mode) {
        case Lease::Mode::Relay:
            if (r.conn) acc_.conns().send(*r.conn, std::string(kStreamEnd, sizeof kStreamEnd));
            finish(l, Outcome::frames({}, l.answer_type));
            return;
        case Lease::Mode::Gather: {
            std::string frames = std::move(r.answer_infos);
            frames += reply_binary_frame(l.gathered);
            finish(l, Outcome::frames(std::move(frames), l.answer_type));
            return;
        }
        case Lease::Mode::Drop:
            if (l.overflow)
                finish(l, Outcome::error(ErrorType::Server, 0,
                                         "the answer was streamed, over limits.max_frame (" +
                                             std::to_string(acc_.max_frame()) +
                                             " bytes), and the client did not announce {info, accept, [stream]}"));
            else
                finish(l, Outcome::frames({}, l.answer_type));
            return;
    }
}

// An answer the worker marked public with an expiration goes into the module's cache (if it
// has one), with its cache info: [u32 length][the info frame][the answer frame].
void Leases::keep_in_cache(Lease& l, std::string_view answer) {
    Request& r = *l.req;
    AnswerCache* cache = acc_.requests().cache_for(r);
    int64_t seconds = 0;
    std::string_view key = r.payload();
    if (!cache || key.empty() ||
        !public_expiration(std::string_view(l.cache_info).substr(bert::kFrameHeader), seconds))
        return;
    std::string value;
    bert::append_frame(value, std::string_view(l.cache_info).substr(bert::kFrameHeader));
    value.append(answer);
    cache->store(key, value, seconds ? monotonic_us() + seconds * 1'000'000 : 0);
}

void Leases::finish(Lease& l, Outcome&& o) {
    Request& r = *l.req;
    uint32_t slot = l.slot;
    acc_.seg().slot(slot).served.fetch_add(1, std::memory_order_relaxed);
    release(l, true);
    l.just_answered = true;
    // The worker goes back (or to the next waiter) before the answer leaves, so the
    // client's next request finds it free. Worker events run before the turn's client
    // reads, so another acceptor's waiter could take it while requests of ours wait unread
    // in the same turn: each answer would then cost two wakes and two epoll_ctl, the slot
    // passing between acceptors on every request. It waits for those reads instead
    // (pass_deferred), and the releasing acceptor's own waiter keeps it (next_waiter).
    if (event_base_get_num_events(acc_.base(), EVENT_BASE_COUNT_ACTIVE) > 0 &&
        acc_.seg().next_waiter_elsewhere(slot)) {
        deferred_.push_back(slot);
        if (deferred_.size() == 1) event_active(deferred_ev_.get(), EV_TIMEOUT, 1);
    } else {
        pass_on(slot);
    }
    acc_.requests().complete(r, std::move(o));
}

// A next request of ours takes the slot's event as it is, and so does an idle slot: this
// acceptor is offered it first (Segment::lease_or_enqueue). Held by another acceptor, the
// event goes now, before that one's answers come.
void Leases::pass_on(uint32_t slot) {
    give_back(slot);
    if (Lease* now = slots_[slot].get()) {  // begin() may have replaced it (a new worker)
        now->just_answered = false;
        if (!now->req && acc_.seg().slot(slot).state.load(std::memory_order_acquire) != uint32_t(SlotState::Idle))
            disarm(*now);
    }
}

void Leases::on_deferred(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<Leases*>(arg);
    self->pass_deferred();
    self->acc_.maybe_exit();
}

void Leases::pass_deferred() {
    std::vector<uint32_t> slots;
    slots.swap(deferred_);
    for (uint32_t slot : slots) pass_on(slot);
}

}  // namespace bertd
