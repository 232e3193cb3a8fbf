// request.h: one request, from the moment its frame is whole until it is
// finished, and the one place where every request finishes: complete() counts it,
// answers it, logs it, pops its frame and lets its connection go on, whatever the
// outcome (an answer, a handler fault, a timeout, a lost link, a full queue). It
// never decodes a request's arguments; the frame stays in the connection's queue
// while the client waits, and is copied only when the client no longer does.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "bert/codec.h"
#include "bert/frame.h"
#include "net/answers.h"
#include "net/conn.h"
#include "net/infos.h"
#include "net/router.h"

namespace bertd {

class Acceptor;
class AnswerCache;

struct Request {
    enum class Kind : uint8_t { Rpc, Info, Bad };  // Bad: not a BERT-RPC request
    enum class Stage : uint8_t { New, Queued, OnSlot, AtLink, Parked, Done };
    uint64_t id = 0;
    Conn* conn = nullptr;  // the client waiting for the answer; null once it no longer does
    Kind kind = Kind::Rpc;
    Stage stage = Stage::New;
    bool cast = false;
    bool high = true;
    bool orphaned = false;  // its client left: finished without being counted or logged
    bool popped = false;    // its frame left the connection's queue (it is in `owned`, or gone)
    // BERT-RPC 1.0 (doc/info-packets.md), from the client's infos before it:
    bool accepts_stream = false, accepts_cache = false;
    bool stream_in = false;  // chunks follow it from the client
    enum class InStream : uint8_t { None, Waiting, Relaying, Done } in_stream = InStream::None;
    uint64_t stream_bytes = 0;  // relayed so far
    uint64_t chunk_left = 0;    // of the chunk being relayed (its header included)
    bool stream_ending = false;  // that chunk is the zero header that ends the stream
    std::string token;          // a validation token, passed to the worker before the request
    std::unique_ptr<Callback> callback;
    // From the worker, before its answer: the infos the client gets with it.
    std::string answer_infos;
    uint32_t slot = 0;  // OnSlot: which
    bool cached = false;  // answered from bertd's own cache
    Route route;
    uint32_t frame_len = 0;  // header and payload
    uint32_t written = 0;    // bytes of the frame a worker has been sent
    std::string owned;       // the frame, once the connection's queue no longer holds it
    std::string log_text;    // the request in Erlang syntax, taken before its bytes went
    std::string client;      // access_log_format: extended: its client, taken with log_text
    int64_t arrived_us = 0, started_us = 0, finished_us = 0;  // monotonic
    int64_t arrived_wall_us = 0;
    uint32_t queued_high = 0, queued_low = 0;  // the module's queues when it arrived
    int64_t park_deadline_us = 0;  // Parked: the wait for the Erlang link ends then

    std::string_view frame() const {
        return conn && !popped ? conn->in.view().substr(0, frame_len) : std::string_view(owned);
    }
    // Empty once the request's bytes are gone (its client left, or they were streamed on).
    std::string_view payload() const {
        std::string_view f = frame();
        return f.size() < bert::kFrameHeader ? std::string_view() : f.substr(bert::kFrameHeader);
    }
};

// What a request ended with: the frame its client gets (empty: nothing to send)
// and, for the stats and the access log, -1 or the ErrorType of the answer.
struct Outcome {
    int error_type = -1;
    std::string frame;

    static Outcome nothing() { return {}; }
    static Outcome answer(std::string&& frame);  // a whole frame; its error type read from it
    // Frames (infos, then the answer) whose answer has the given error type (-1: none).
    static Outcome frames(std::string&& frames, int error_type);
    static Outcome error(ErrorType type, int code, std::string_view detail);
};

class RequestPath {
public:
    explicit RequestPath(Acceptor& a);
    ~RequestPath();

    // Turns the whole frames at the front of c.in into requests, one at a time, until
    // one is in flight, the input runs out, or the client must first read its answers.
    void serve(Conn& c);
    // The one exit. After it `r` is gone.
    void complete(Request& r, Outcome o);
    // A cast is answered {noreply} now and goes on without its client.
    void answer_cast(Request& r);
    // The client left: a request not yet running is dropped, a running one finishes unseen.
    void orphan(Request& r);
    // The native module does not take `r`: the router's fallback serves it.
    void declined(Request& r, Declined why);
    // A request that waits somewhere by id (a shared-memory queue, the link); null if it is gone.
    Request* find(uint64_t id);
    // The frame of a request that goes on without its connection: a copy of its own, charged
    // to the acceptor's memory budget, and dropped once nobody needs it.
    void keep_frame(Request& r);
    void drop_frame(Request& r);
    // The frame leaves the connection's queue (what follows it, a stream's chunks, is then at
    // the front); the request keeps its own copy.
    void own_frame(Request& r);
    // A callback's cast runs as a call, so that the worker returns the Result.
    void as_call(Request& r);
    void take_log_text(Request& r);
    // Can this request's answer come from (and go into) its module's cache?
    AnswerCache* cache_for(const Request& r);
    size_t live() const { return live_.size(); }
    // The requests that wait in a shared queue for a worker of `module`.
    std::vector<Request*> queued_for(uint32_t module);

private:
    Request& make(Conn& c, uint32_t frame_len);
    void dispatch(Request& r);
    void go(Request& r, const bert::Peek& pk);  // to the place r.route names
    bool from_cache(Request& r);
    bool inflate(Request& r, Outcome& refused);
    void replace_frame(Request& r, std::string_view payload);
    bool ernie_floats(const Request& r) const;  // the module has float_format: ernie
    void floats_to_ernie(Request& r);
    void info(Request& r, const bert::Peek& pk);
    std::string apply_info(Conn& c, const bert::Term& info);  // what is wrong with it, if anything
    bool list_form_info(Request& r);
    void take_info(Request& r);
    bool take_infos(Request& r, Outcome& refused);
    bool discard_stream(Conn& c);
    Outcome admin(Request& r, const bert::Peek& pk);
    void count(const Request& r, int error_type);
    void log(Request& r, int error_type);
    void recycle(Request& r);

    Acceptor& acc_;
    bert::Limits limits_;  // for the bytes of requests: the codec's, with the config's max_inflated
    uint64_t prefix_ = 0;
    uint64_t next_ = 1;
    std::unordered_map<uint64_t, std::unique_ptr<Request>> live_;
    std::vector<std::unique_ptr<Request>> spare_;  // finished, kept for reuse
};

}  // namespace bertd
