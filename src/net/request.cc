// request.cc: framing a connection's input into requests, sending each where the
// router says, and the one completion point, after Redis's commandProcessed and
// resetClient: whatever happened to a request, it ends in complete().
#include "net/request.h"

#include "admin/admin.h"
#include "bert/printer.h"
#include "io/clock.h"
#include "net/acceptor.h"
#include "net/leases.h"
#include "net/link_client.h"

namespace bertd {

namespace {
// A client that does not read its answers gets no more requests served once this much
// waits to be sent: without the bound, pipelined requests grow the buffer without limit.
constexpr size_t kOutHighWater = 1u << 20;
constexpr size_t kLogRequestBytes = 4096;  // a huge request is cut short in the access log
constexpr size_t kSpareRequests = 64;

// The answer to a frame that is not {call|cast, M, F, Args} or {info, Command, Options}.
Outcome not_a_request(std::string_view payload) {
    bert::Term t;
    if (bert::DecodeError err = bert::decode(payload, t))
        return Outcome::error(ErrorType::Protocol, 2, "unable to read data: " + err.message);
    return Outcome::error(ErrorType::Protocol, 0,
                          "not a BERT-RPC request: expected {call, Module, Function, Arguments}, "
                          "{cast, ...} or {info, Command, Options}");
}
}  // namespace

Outcome Outcome::answer(std::string&& frame) {
    Outcome o;
    o.error_type = answer_error_type(std::string_view(frame).substr(bert::kFrameHeader));
    o.frame = std::move(frame);
    return o;
}

Outcome Outcome::error(ErrorType type, int code, std::string_view detail) {
    Outcome o;
    o.error_type = int(type);
    o.frame = error_frame(type, code, detail);
    return o;
}

RequestPath::RequestPath(Acceptor& a) : acc_(a), prefix_(a.id_prefix()) {}

RequestPath::~RequestPath() = default;

// ---- from frames to requests ---------------------------------------------------------

void RequestPath::serve(Conn& c) {
    c.serving = true;
    Connections& conns = acc_.conns();
    GlobalStats& gs = acc_.seg().header().stats;
    while (c.idle() && !c.closing && !c.dead) {
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
            conns.send(c, error_frame(ErrorType::Protocol, 1,
                                      "frame of " + std::to_string(fs.length) + " bytes is over the limit of " +
                                          std::to_string(acc_.max_frame()) + " bytes (limits.max_frame)"));
            break;
        }
        if (fs.state == bert::FrameScan::State::NeedMore) {
            if (!buf.empty() && !c.partial_since_us) c.partial_since_us = monotonic_us();
            if (c.eof && !buf.empty()) {
                gs.protocol_errors.fetch_add(1, std::memory_order_relaxed);
                size_t had = buf.size();
                c.in.consume(had);
                conns.send(c, error_frame(ErrorType::Protocol, had < bert::kFrameHeader ? 1 : 2,
                                          "connection closed inside a frame (" + std::to_string(had) +
                                              " bytes of an incomplete frame)"));
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
    if (!bert::peek(r.payload(), pk)) {
        r.kind = Request::Kind::Bad;
        acc_.seg().header().stats.protocol_errors.fetch_add(1, std::memory_order_relaxed);
        complete(r, not_a_request(r.payload()));
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
    if (r.route.to == Route::To::NoModule)
        acc_.seg().header().stats.unknown_module.fetch_add(1, std::memory_order_relaxed);
    go(r, pk);
}

void RequestPath::go(Request& r, const bert::Peek& pk) {
    switch (r.route.to) {
        case Route::To::Admin: complete(r, admin(r, pk)); return;
        case Route::To::Native: acc_.link().send(r); return;
        case Route::To::External: acc_.leases().start(r); return;
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

void RequestPath::info(Request& r, const bert::Peek& pk) {
    // Infos are small and rare: decode them whole, so a malformed one is answered.
    bert::Term info;
    if (bert::DecodeError err = bert::decode(r.payload(), info)) {
        acc_.seg().header().stats.protocol_errors.fetch_add(1, std::memory_order_relaxed);
        complete(r, Outcome::error(ErrorType::Protocol, 2, "unable to read data: " + err.message));
        return;
    }
    if (pk.module == "priority") {
        // {info, priority, [low]} (the spec) or {info, priority, low} (Ernie's README).
        const bert::Term& o = info[2];
        const bert::Term* v = o.is_list() && o.size() == 1 ? &o[0] : &o;
        if (v->is_atom("low")) r.conn->high_next = false;
        else if (v->is_atom("high")) r.conn->high_next = true;
    }
    complete(r, Outcome::nothing());  // other info commands are ignored, as the spec says
}

Outcome RequestPath::admin(Request& r, const bert::Peek& pk) {
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

void RequestPath::complete(Request& r, Outcome o) {
    r.finished_us = monotonic_us();
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
        c->in.consume(r.frame_len);
        c->request = nullptr;
    }
    recycle(r);
    if (c) acc_.conns().resume(*c);
}

void RequestPath::answer_cast(Request& r) {
    Conn& c = *r.conn;
    take_log_text(r);
    if (r.stage != Request::Stage::OnSlot || r.written < r.frame_len) keep_frame(r);
    c.in.consume(r.frame_len);
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
    if (!r.owned.empty()) return;
    r.owned.assign(r.frame());
    acc_.conns().buffered() += r.owned.size();
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
    st.requests.fetch_add(1, std::memory_order_relaxed);
    if (error_type >= 0) st.errors[error_type].fetch_add(1, std::memory_order_relaxed);
    st.latency.record(uint64_t(r.finished_us - r.arrived_us));
}

void RequestPath::take_log_text(Request& r) {
    if (!acc_.access_log().enabled() || !r.log_text.empty()) return;
    bert::Term t;
    if (bert::decode(r.payload(), t)) r.log_text = "<undecodable>";
    else bert::print(t, r.log_text, kLogRequestBytes);
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
    rec.high = r.high;
    rec.request = r.log_text;
    al.write(rec);
}

}  // namespace bertd
