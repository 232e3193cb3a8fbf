// leases.h: an acceptor's requests on external workers: a slot leased from the
// shared segment (or a place in the module's high or low queue), the request written
// to the worker, its one answer read back, its deadline, and the slot given back or
// handed to the next waiter (whose acceptor is woken through its eventfd). A worker
// that dies, times out or answers out of step fails only the request it held, and
// the master replaces it on a fresh socketpair. Answers never cross: bytes a slot holds
// before its request is written, and bytes written by any process but the worker, are
// dropped with the worker, never delivered. Streams (doc/info-packets.md) go through a
// lease chunk by chunk in both directions, each side paced by the other: memory stays
// bounded whatever their size. Reading what a worker answers is in worker_answer.cc.
// Nothing here blocks.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/event.h"
#include "io/fd.h"
#include "io/unix.h"
#include "net/answers.h"

namespace bertd {

class Acceptor;
struct Conn;
struct Outcome;
struct Request;

class Leases {
public:
    explicit Leases(Acceptor& a);
    ~Leases();

    // Leases a slot of the request's module and starts it there, or queues it; a full
    // queue completes it with an error.
    void start(Request& r);
    // Looks at every slot: hand-offs made to this acceptor, workers that died under a lease.
    void scan();
    size_t held() const;
    // Takes the fresh slot sockets the master sent on the control socket.
    void read_control();
    // A streamed request's chunks arrived from its client: on to the worker.
    void relay(Request& r);
    // The client of a streamed answer has read what was waiting: the worker may go on.
    void drained(Request& r);
    // Sends the client of a relayed answer what its lease's pipe holds for it; the client's
    // other output waits behind that (Connections::flush).
    Flush flush_pipe(Request& r);
    // The client of a request on a worker left. A streamed answer has nobody to go to and
    // could go on for ever: its worker is replaced.
    void client_left(Request& r);

private:
    struct Lease {
        Leases* owner = nullptr;
        uint32_t slot = 0;
        int fd = -1;
        EventPtr io, timer;
        Request* req = nullptr;  // set while this acceptor holds the slot
        bool writing = false;    // waiting for the socket to take more
        short armed = 0;         // what the slot's event is registered for (rearm)
        // Set while the answer just read hands the slot on (finish): nothing else can be in
        // its socket yet, so the next request of this acceptor skips clean()'s probe.
        bool just_answered = false;
        // Written to the worker: `head` (the request's infos), then its frame, then any chunks.
        std::string head;
        size_t head_at = 0;
        // Read from the worker (worker_answer.cc): infos and the answer, then a streamed
        // answer's chunks, relayed to the client, gathered into one reply, or dropped.
        std::string answer;
        size_t answer_at = 0;  // what was parsed of `answer`
        bool streaming = false, in_chunks = false, paused = false;
        enum class Mode : uint8_t { Relay, Gather, Drop } mode = Mode::Relay;
        uint64_t chunk_left = 0;
        uint64_t streamed = 0;  // bytes of a streamed answer's chunks so far
        char chunk_head[4];
        uint8_t chunk_head_have = 0;
        std::string gathered;
        // A relayed answer's chunks go from the worker's socket through this pipe to the
        // client's (splice(2): bertd copies none of their bytes); `piped` of them are in it,
        // owed to the client before anything else it is sent. Made by the first relay.
        Fd pipe_r, pipe_w;
        uint32_t piped = 0;
        bool no_splice = false;  // the sockets would not splice: copy for the rest of the stream
        std::string cache_info;  // the worker's {info, cache, ...} frame, for bertd's own cache
        bool overflow = false;
        int answer_type = -1;
    };
    static void on_io(evutil_socket_t, short, void*);
    static void on_timeout(evutil_socket_t, short, void*);

    Lease& lease_of(uint32_t slot);
    bool current(uint32_t slot);
    bool clean(Lease& l);
    bool from_worker(uint32_t slot, pid_t writer);
    void renewed(uint32_t slot, uint64_t epoch, int fd);
    void fault(uint32_t slot, const std::string& why);
    void begin(Request& r, uint32_t slot);
    bool write_some(Lease& l, std::string_view bytes, size_t& at);
    void write_more(Lease& l);
    void relay_some(Lease& l);
    void rearm(Lease& l);
    void disarm(Lease& l);
    void set_writing(Lease& l, bool on);
    void restart_deadline(Lease& l);
    void release(Lease& l, bool keep_event = false);
    // worker_answer.cc
    void read_answer(Lease& l);
    bool by_writer(Lease& l, const std::vector<int>& fds, const PeerCred& writer);
    enum class Spliced { Stop, Copy };
    Spliced splice_chunks(Lease& l);
    bool splice_in(Lease& l, const char* peeked, size_t have);
    Flush drain_pipe(Lease& l, Conn& c);
    bool take(Lease& l, std::string_view bytes);
    bool whole_answer(Lease& l, std::string_view answer, std::string_view rest);
    bool stream_head(Lease& l, std::string_view reply, std::string rest);
    bool head_frames(Lease& l);
    enum class ChunkHead { Wait, Begun, End, Bad };
    ChunkHead chunk_head(Lease& l, std::string_view bytes, size_t& at, std::string& why);
    void chunk_piece(Lease& l, std::string_view piece);
    bool chunks(Lease& l, std::string_view bytes);
    void end_of_stream(Lease& l);
    void keep_in_cache(Lease& l, std::string_view answer);
    void finish(Lease& l, Outcome&& o);
    Outcome failing_module(uint32_t module);  // the error for a module that has no worker
    void refuse_waiting_on_failing_modules();
    void fail(Lease& l, const std::string& why, ErrorType type = ErrorType::Server);
    void give_back(uint32_t slot);
    void pass_on(uint32_t slot);
    static void on_deferred(evutil_socket_t, short, void*);
    void pass_deferred();
    void take_handoff(uint32_t slot);
    void retry_handoff(uint32_t dead_slot);

    Acceptor& acc_;
    std::vector<std::unique_ptr<Lease>> slots_;  // by slot index, made on first use
    // Slots whose answer was read while this loop turn still had clients to read, and whose
    // next waiter was another acceptor's: they are passed on after those reads (finish).
    std::vector<uint32_t> deferred_;
    EventPtr deferred_ev_;
};

}  // namespace bertd
