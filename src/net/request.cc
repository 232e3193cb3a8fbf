// request.cc: framing a connection's input into requests, sending each where the
// router says, and the one completion point, after Redis's commandProcessed and
// resetClient: whatever happened to a request, it ends in complete().
#include "net/request.h"

#include "admin/admin.h"
#include "admin/health.h"
#include "bert/inflate.h"
#include "bert/printer.h"
#include "io/clock.h"
#include "net/acceptor.h"
#include "net/callbacks.h"
#include "net/floats.h"
#include "shm/cache.h"
#include "net/leases.h"
#include "net/link_client.h"

namespace bertd {

namespace {
// A client that does not read its answers gets no more requests served once this much
// waits to be sent: without the bound, pipelined requests grow the buffer without limit.
constexpr size_t kOutHighWater = 1u << 20;
constexpr size_t kLogRequestBytes = 4096;  // a huge request is cut short in the access log
constexpr size_t kShownBytes = 200;        // of a frame that is no request, in its error
constexpr size_t kSpareRequests = 64;

// A decode error in the words of bertd's config.
std::string unreadable(const bert::DecodeError& err) {
    std::string text = "unable to read data: " + err.message;
    if (err.message.find("max_inflated") != std::string::npos) text += " (limits.max_inflated)";
    return text;
}

// The answer to a frame that is not {call|cast, M, F, Args} or {info, Command, Options},
// with the start of what came. Only what that text shows is read (never the whole term):
// bytes that do not read there are "unable to read data".
Outcome not_a_request(std::string_view payload, const bert::Limits& limits) {
    std::string text;
    if (bert::DecodeError err = bert::print_encoded(payload, text, kShownBytes, limits))
        return Outcome::error(ErrorType::Protocol, 2, unreadable(err));
    return Outcome::error(ErrorType::Protocol, 0,
                          "not a BERT-RPC request: expected {call, Module, Function, Arguments}, "
                          "{cast, ...} or {info, Command, Options}, got " + text);
}
}  // namespace

Outcome Outcome::answer(std::string&& frame) {
    Outcome o;
    o.error_type = answer_error_type(std::string_view(frame).substr(bert::kFrameHeader));
    o.frame = std::move(frame);
    return o;
}

Outcome Outcome::frames(std::string&& frames, int error_type) {
    Outcome o;
    o.error_type = error_type;
    o.frame = std::move(frames);
    return o;
}

Outcome Outcome::error(ErrorType type, int code, std::string_view detail) {
    Outcome o;
    o.error_type = int(type);
    o.frame = error_frame(type, code, detail);
    return o;
}

RequestPath::RequestPath(Acceptor& a) : acc_(a), prefix_(a.id_prefix()) {
    limits_.max_inflated = a.rt().config.limits.max_inflated;
}

RequestPath::~RequestPath() = default;

// ---- from frames to requests ---------------------------------------------------------

void RequestPath::serve(Conn& c) {
    c.serving = true;
    Connections& conns = acc_.conns();
    GlobalStats& gs = acc_.seg().header().stats;
    // A streamed request on a worker takes what arrives, chunk by chunk.
    if (c.request && c.request->in_stream == Request::InStream::Relaying) acc_.leases().relay(*c.request);
    while (c.idle() && !c.closing && !c.dead) {
        if (c.discarding && !discard_stream(c)) break;
        if (c.out.size() > kOutHighWater) {
            c.out_paused = true;  // the flush that empties `out` serves again
            conns.set_reading(c, false);
            break;
        }
        std::string_view buf = c.in.view();
        bert::FrameScan fs = bert::scan_frame(buf, acc_.max_frame());
        if (fs.state == bert::FrameScan::State::TooLarge) {
            gs.protocol_errors.fetch_add(1, std::memory_order_relaxed);
            c.closing = true;  // the stream cannot be resynchronised
            conns.set_reading(c, false);
            c.in.consume(c.in.size());
            std::string why = "frame of " + std::to_string(fs.length) + " bytes is over the limit of " +
                              std::to_string(acc_.max_frame()) + " bytes (limits.max_frame)";
            conns.say(c, true, why + "; closed");
            conns.send(c, error_frame(ErrorType::Protocol, 1, std::move(why)));
            break;
        }
        if (fs.state == bert::FrameScan::State::NeedMore) {
            if (!buf.empty() && !c.partial_since_us) c.partial_since_us = monotonic_us();
            if (c.eof && !buf.empty()) {
                gs.protocol_errors.fetch_add(1, std::memory_order_relaxed);
                size_t had = buf.size();
                c.in.consume(had);
                std::string why = "connection closed inside a frame (" + std::to_string(had) +
                                  " bytes of an incomplete frame)";
                conns.say(c, true, why);
                conns.send(
                    c, error_frame(ErrorType::Protocol, had < bert::kFrameHeader ? 1 : 2, std::move(why)));
            }
            if (!c.eof) conns.set_reading(c, true);
            break;
        }
        c.partial_since_us = 0;
        dispatch(make(c, uint32_t(bert::kFrameHeader + fs.length)));
    }
    c.serving = false;
    // A busy connection keeps its read event: a client that waits for its answer sends
    // nothing, and toggling the event would cost two epoll_ctl calls a request.
    // Connections::read stops reading once a whole frame beyond the one in flight is buffered.
}

Request& RequestPath::make(Conn& c, uint32_t frame_len) {
    std::unique_ptr<Request> p;
    if (spare_.empty()) {
        p = std::make_unique<Request>();
    } else {
        p = std::move(spare_.back());
        spare_.pop_back();
    }
    Request& r = *p;
    r.id = prefix_ | (next_++ & 0xFFFFFFFFFFull);
    r.conn = &c;
    r.frame_len = frame_len;
    c.request = &r;
    live_.emplace(r.id, std::move(p));
    return r;
}

void RequestPath::dispatch(Request& r) {
    Conn& c = *r.conn;
    bert::Peek pk;
    bool peeked = bert::peek(r.payload(), pk);
    Outcome refused;
    if (!peeked && bert::is_compressed(r.payload())) {
        peeked = inflate(r, refused) && bert::peek(r.payload(), pk);
    }
    if (!peeked) {
        if (refused.frame.empty() && list_form_info(r)) return;  // the Ruby bertrpc client's [info, cache, [validation, Token]]
        r.kind = Request::Kind::Bad;
        acc_.seg().header().stats.protocol_errors.fetch_add(1, std::memory_order_relaxed);
        acc_.conns().say(c, true,
                         "a frame of " + std::to_string(r.frame_len - bert::kFrameHeader) +
                             " bytes that is not a BERT-RPC request (a protocol error answered)");
        complete(r, refused.frame.empty() ? not_a_request(r.payload(), limits_) : std::move(refused));
        return;
    }
    if (pk.kind == bert::Peek::Kind::Info) {
        r.kind = Request::Kind::Info;
        info(r, pk);
        return;
    }
    r.cast = pk.kind == bert::Peek::Kind::Cast;
    r.arrived_us = monotonic_us();
    r.started_us = r.arrived_us;
    r.high = c.high_next;
    c.high_next = true;  // priority applies to the next request only
    if (acc_.access_log().enabled()) r.arrived_wall_us = now_us();
    r.route = decide(pk, acc_.rt(), c.from_link);
    if (Outcome refused; take_infos(r, refused)) {
        r.callback.reset();  // the refusal is the whole answer: nothing is cast, nothing counted
        complete(r, std::move(refused));
        return;
    }
    if (r.route.to == Route::To::NoModule)
        acc_.seg().header().stats.unknown_module.fetch_add(1, std::memory_order_relaxed);
    go(r, pk);
}

// The infos the client sent before this request now belong to it. True (and `refused` set)
// when they make it fail: a malformed info, a stream or a callback it cannot have.
bool RequestPath::take_infos(Request& r, Outcome& refused) {
    Conn& c = *r.conn;
    r.accepts_stream = c.accepts_stream;
    std::unique_ptr<PendingInfos> pending = std::move(c.pending);
    r.accepts_cache = c.accepts_cache || (pending && !pending->token.empty());
    r.stream_in = c.stream_next;
    c.stream_next = false;
    if (r.stream_in) r.in_stream = Request::InStream::Waiting;
    if (pending) {
        r.token = std::move(pending->token);
        r.callback = std::move(pending->callback);
        if (!pending->error.empty()) {
            refused = Outcome::error(ErrorType::Protocol, pending->error_code, pending->error);
            return true;
        }
    }
    if (r.stream_in && r.route.to != Route::To::External) {
        refused = Outcome::error(ErrorType::Server, 0, "a streamed request goes to an external module only");
        return true;
    }
    if (r.callback) {
        std::string why = r.cast ? acc_.callbacks().refusal(r.callback->service) :
                                   "{info, callback, ...} goes before a cast, not a call";
        if (!why.empty()) {
            refused = Outcome::error(ErrorType::Server, 0, why);
            return true;
        }
    }
    return false;
}

void RequestPath::go(Request& r, const bert::Peek& pk) {
    switch (r.route.to) {
        case Route::To::Admin: complete(r, admin(r, pk)); return;
        case Route::To::Native: acc_.link().send(r); return;
        case Route::To::External:
            if (ernie_floats(r)) floats_to_ernie(r);
            if (!from_cache(r)) acc_.leases().start(r);
            return;
        case Route::To::NoModule:
            complete(r, Outcome::error(ErrorType::Server, 1, "No such module '" + std::string(pk.module) + "'"));
            return;
        case Route::To::NoFunction:
            complete(r, Outcome::error(ErrorType::Server, 2,
                                       "No such function '" + std::string(pk.module) + ":" +
                                           std::string(pk.function) + "'"));
            return;
    }
}

// An info changes the request after it (a malformed one makes that request fail, as the
// specification says), and is not answered itself. Infos are small: decoded whole, within
// decode_info()'s bounds.
void RequestPath::info(Request& r, const bert::Peek& pk) {
    (void)pk;
    take_info(r);
}

void RequestPath::take_info(Request& r) {
    bert::Term info;
    Conn& c = *r.conn;
    r.kind = Request::Kind::Info;
    std::string error = decode_info(r.payload(), info);
    if (error.empty()) error = apply_info(c, info);
    if (!error.empty()) {
        PendingInfos& p = c.pending_infos();
        p.error = std::move(error);
        p.error_code = 2;
        acc_.seg().header().stats.protocol_errors.fetch_add(1, std::memory_order_relaxed);
        acc_.conns().say(c, true, "a malformed info: " + p.error);
    } else if (c.pending) {
        c.pending->error.clear();  // the last info decides: a good one clears a malformed one
    }
    complete(r, Outcome::nothing());
}

std::string RequestPath::apply_info(Conn& c, const bert::Term& info) {
    ClientInfo ci;
    read_client_info(info, ci);
    if (!ci.error.empty()) return ci.error;
    switch (ci.kind) {
        case ClientInfo::Kind::Priority: c.high_next = ci.high; break;
        case ClientInfo::Kind::Accept:
            c.accepts_stream = ci.accept_stream;
            c.accepts_cache = ci.accept_cache;
            break;
        case ClientInfo::Kind::Stream: c.stream_next = true; break;
        case ClientInfo::Kind::Validation: c.pending_infos().token = ci.token; break;
        case ClientInfo::Kind::Callback:
            c.pending_infos().callback = std::make_unique<Callback>(Callback{ci.service, ci.mfa});
            break;
        case ClientInfo::Kind::Ignored: break;
    }
    return {};
}

// The Ruby bertrpc client's [info, Command, Options]: known by its head (a list of three
// whose first element is the atom info), then read as any info is, so a big or costly one
// fails the request after it, as a tuple info would, and is not answered itself.
bool RequestPath::list_form_info(Request& r) {
    std::string_view p = r.payload();
    if (p.size() < 7 || uint8_t(p[0]) != bert::kVersion ||
        p.substr(1, 5) != std::string_view("\x6c\0\0\0\x03", 5))
        return false;
    if (!bert::is_atom_at(p, bert::Span{6, std::min<size_t>(p.size(), 6 + 3 + 4)}, "info") &&
        !bert::is_atom_at(p, bert::Span{6, std::min<size_t>(p.size(), 6 + 2 + 4)}, "info"))
        return false;
    take_info(r);
    return true;
}

// Drops the chunks of a streamed request that was refused; true once its end is read.
AnswerCache* RequestPath::cache_for(const Request& r) {
    if (r.route.to != Route::To::External || r.cast || r.stream_in || !r.token.empty() || r.callback) return nullptr;
    return acc_.seg().cache(r.route.module);
}

// A public answer that has not expired is served by bertd itself: the worker never sees it.
bool RequestPath::from_cache(Request& r) {
    AnswerCache* cache = cache_for(r);
    std::string value;
    if (!cache || !cache->find(r.payload(), monotonic_us(), value) || value.size() < 4) return false;
    uint32_t info_len = bert::scan_frame(value, ~0u).length;
    std::string_view info = std::string_view(value).substr(0, bert::kFrameHeader + info_len);  // a whole frame
    std::string frames = r.accepts_cache ? std::string(info) : std::string();
    frames.append(std::string_view(value).substr(4 + info_len));
    r.cached = true;
    complete(r, Outcome::frames(std::move(frames), -1));
    return true;
}

bool RequestPath::discard_stream(Conn& c) {
    for (;;) {
        if (c.discard_left > 0) {
            size_t n = size_t(std::min<uint64_t>(c.discard_left, c.in.size()));
            c.in.consume(n);
            c.discard_left -= n;
            if (c.discard_left > 0) break;
        }
        std::string_view buf = c.in.view();
        if (buf.size() < bert::kFrameHeader) break;
        uint32_t n = bert::scan_frame(buf, ~0u).length;
        c.in.consume(bert::kFrameHeader);
        if (n == 0) {
            c.discarding = false;
            return true;
        }
        c.discard_left = n;
    }
    if (c.eof) acc_.conns().close(c);
    else acc_.conns().set_reading(c, true);
    return false;
}

Outcome RequestPath::admin(Request& r, const bert::Peek& pk) {
    // A load balancer asks from wherever it is; the answer tells nothing more than that.
    if (pk.function == "health" && pk.arity == 0)
        return Outcome::answer(admin::health_frame(acc_.seg(), acc_.link().down()));
    if (!r.conn->admin_ok)
        return Outcome::error(ErrorType::Server, 0,
                              "__admin__ calls are allowed only from loopback or admin_allow addresses");
    return Outcome::answer(admin::call(acc_.seg(), pk, r.payload()));
}

void RequestPath::declined(Request& r, Declined why) {
    bert::Peek pk;
    bert::peek(r.payload(), pk);
    Route f = fallback(pk, acc_.rt(), why);
    if (f.to != Route::To::External) f.stats = r.route.stats;  // the native module's error
    r.route = f;
    r.stage = Request::Stage::New;
    go(r, pk);
}

// ---- the one exit -------------------------------------------------------------------

// A compressed request (term_to_binary(T, [compressed]) from an Erlang client) is served
// inflated, in a frame of its own charged to the memory budget; false (`refused` set)
// when it declares more than the limits allow or does not inflate.
bool RequestPath::inflate(Request& r, Outcome& refused) {
    std::string payload;
    if (bert::DecodeError err = bert::inflate_payload(r.payload(), payload, limits_)) {
        refused = Outcome::error(ErrorType::Protocol, 2, unreadable(err));
        return false;
    }
    replace_frame(r, payload);
    return true;
}

// The request goes on as `payload`, in a frame of its own.
void RequestPath::replace_frame(Request& r, std::string_view payload) {
    own_frame(r);
    acc_.conns().buffered() -= r.owned.size();
    r.owned.clear();
    bert::append_frame(r.owned, payload);
    acc_.conns().buffered() += r.owned.size();
    r.frame_len = uint32_t(r.owned.size());
}

bool RequestPath::ernie_floats(const Request& r) const {
    return r.route.to == Route::To::External && acc_.rt().modules[r.route.module].config->ernie_floats;
}

// The request leaves for an Ernie-era handler with its floats as FLOAT_EXT: in a frame of
// its own, charged to the memory budget like any kept frame.
void RequestPath::floats_to_ernie(Request& r) {
    std::string frame;
    if (ernie_floats_frame(r.payload(), frame)) replace_frame(r, std::string_view(frame).substr(bert::kFrameHeader));
}

void RequestPath::complete(Request& r, Outcome o) {
    r.finished_us = monotonic_us();
    if (!o.frame.empty() && ernie_floats(r)) ernie_floats_frames(o.frame);
    r.stage = Request::Stage::Done;
    bool rpc = r.kind == Request::Kind::Rpc && !r.orphaned;
    if (rpc) {
        count(r, o.error_type);  // stats never lag a client
        take_log_text(r);
    }
    if (r.conn && !o.frame.empty()) acc_.conns().send(*r.conn, std::move(o.frame));
    if (rpc) log(r, o.error_type);
    Conn* c = r.conn;
    if (c) {
        if (!r.popped) c->in.consume(r.frame_len);
        c->request = nullptr;
        // A streamed request that ended before its stream did: the rest of it is dropped.
        if (r.stream_in && r.in_stream != Request::InStream::Done) c->discarding = true;
    }
    if (r.callback && r.kind == Request::Kind::Rpc) acc_.callbacks().answered(*r.callback, o);
    recycle(r);
    if (c) acc_.conns().resume(*c);
}

std::vector<Request*> RequestPath::queued_for(uint32_t module) {
    std::vector<Request*> out;
    for (auto& [id, r] : live_)
        if (r->stage == Request::Stage::Queued && r->route.module == module) out.push_back(r.get());
    return out;
}

void RequestPath::answer_cast(Request& r) {
    Conn& c = *r.conn;
    take_log_text(r);
    if (r.stage != Request::Stage::OnSlot || r.written < r.frame_len) keep_frame(r);
    if (!r.popped) c.in.consume(r.frame_len);
    r.popped = true;
    c.request = nullptr;
    r.conn = nullptr;
    acc_.conns().send(c, std::string(noreply_frame()));
    acc_.conns().resume(c);
}

void RequestPath::orphan(Request& r) {
    if (r.stage == Request::Stage::Done || !r.conn) return;
    r.orphaned = true;
    if (r.stage == Request::Stage::OnSlot) {
        // The worker has it: it finishes unseen, and its answer is read and dropped.
        if (r.written < r.frame_len) keep_frame(r);
        r.conn->request = nullptr;
        r.conn = nullptr;
        // A stream it was still reading is cut short, or one it was sending has nobody to go
        // to: that worker cannot go on.
        acc_.leases().client_left(r);
        return;
    }
    // Not running yet (queued, parked) or at the link: dropped. A hand-off or an answer
    // that comes for it later finds nothing.
    r.conn->request = nullptr;
    r.conn = nullptr;
    recycle(r);
}

Request* RequestPath::find(uint64_t id) {
    auto it = live_.find(id);
    return it == live_.end() ? nullptr : it->second.get();
}

void RequestPath::keep_frame(Request& r) {
    if (!r.owned.empty() || r.popped) return;
    r.owned.assign(r.frame());
    acc_.conns().buffered() += r.owned.size();
}

void RequestPath::own_frame(Request& r) {
    if (r.popped) return;
    keep_frame(r);
    if (r.conn) r.conn->in.consume(r.frame_len);
    r.popped = true;
}

void RequestPath::as_call(Request& r) {
    own_frame(r);
    // `cast` and `call` are both four letters: the atom is rewritten where it stands.
    size_t at = r.owned.find("cast", bert::kFrameHeader);
    if (at != std::string::npos && at < bert::kFrameHeader + 8) r.owned.replace(at, 4, "call");
}

void RequestPath::drop_frame(Request& r) {
    acc_.conns().buffered() -= r.owned.size();
    std::string().swap(r.owned);
}

void RequestPath::recycle(Request& r) {
    drop_frame(r);
    auto node = live_.extract(r.id);
    if (node.empty()) return;
    std::unique_ptr<Request> p = std::move(node.mapped());
    if (spare_.size() >= kSpareRequests) return;
    std::string text = std::move(p->log_text);
    *p = Request{};
    // A small buffer is kept for the next request; a big one is not.
    if (text.capacity() <= 4096) p->log_text = std::move(text), p->log_text.clear();
    spare_.push_back(std::move(p));
}

// ---- stats and the access log ---------------------------------------------------------

void RequestPath::count(const Request& r, int error_type) {
    if (r.route.stats < 0) return;
    ModuleStats& st = acc_.seg().module(uint32_t(r.route.stats)).stats;
    int prio = r.high ? kHigh : kLow;
    st.requests[prio].fetch_add(1, std::memory_order_relaxed);
    if (error_type >= 0) st.errors[prio][error_type].fetch_add(1, std::memory_order_relaxed);
    st.latency.record(uint64_t(r.finished_us - r.arrived_us));
}

void RequestPath::take_log_text(Request& r) {
    if (!acc_.access_log().enabled()) return;
    if (r.conn && r.client.empty() && acc_.rt().config.access_log_extended) r.client = r.conn->client_text();
    if (!r.log_text.empty()) return;
    // The text of at most kLogRequestBytes, read from the bytes: a huge term costs no more.
    if (bert::print_encoded(r.payload(), r.log_text, kLogRequestBytes, limits_)) r.log_text = "<undecodable>";
}

void RequestPath::log(Request& r, int error_type) {
    AccessLog& al = acc_.access_log();
    if (!al.enabled()) return;
    AccessRecord rec;
    rec.ok = error_type < 0;
    rec.arrived_us = r.arrived_wall_us;
    rec.wait_us = r.started_us - r.arrived_us;
    rec.run_us = r.finished_us - r.started_us;
    rec.queued_high = r.queued_high;
    rec.queued_low = r.queued_low;
    rec.native = r.route.to == Route::To::Native;
    rec.cached = r.cached;
    rec.high = r.high;
    rec.request = r.log_text;
    rec.client = r.client;
    al.write(rec);
}

}  // namespace bertd
