// admin.cc: the __admin__ calls. Reading stats takes each module's lock only to
// read its queue lengths; everything else is a relaxed read of shared counters.
#include "admin/admin.h"

#include <signal.h>
#include <unistd.h>

#include <cstdio>

#include "bert/frame.h"
#include "net/answers.h"
#include "shm/cache.h"

namespace bertd::admin {

namespace {
std::string reply_frame(const bert::Term& result) {
    std::string out(bert::kFrameHeader, '\0');
    bert::encode_append(bert::Term::tuple({bert::Term::atom("reply"), result}), out);
    bert::put_frame_header(out.data(), uint32_t(out.size() - bert::kFrameHeader));
    return out;
}

void line(std::string& out, const std::string& key, uint64_t v) {
    out += key;
    out += '=';
    out += std::to_string(v);
    out += '\n';
}
}  // namespace

namespace {
// A native module: calls run on an Erlang node, so there are no workers or queues.
void native_lines(std::string& out, const ModuleShared& ms) {
    std::string name = ms.name;
    line(out, "native.requests." + name, ms.stats.all_requests());
    for (int t = 0; t < kErrorTypes; ++t)
        line(out, "native.errors." + std::string(error_type_name(ErrorType(t))) + "." + name,
             ms.stats.all_errors(t));
    line(out, "native.latency.p50_us." + name, ms.stats.latency.percentile(50));
    line(out, "native.latency.p99_us." + name, ms.stats.latency.percentile(99));
}

void module_lines(std::string& out, Segment& seg, uint32_t m) {
    ModuleShared& ms = seg.module(m);
    const std::string name = ms.name;
    uint64_t idle = 0, restarts = 0;
    for (uint32_t s = ms.first_slot; s < ms.first_slot + ms.nslots; ++s) {
        if (seg.slot(s).state.load() == uint32_t(SlotState::Idle)) ++idle;
        restarts += seg.slot(s).restarts.load();
    }
    line(out, "workers.idle." + name, idle);
    line(out, "workers.total." + name, ms.nslots);
    line(out, "workers.restarts." + name, restarts);
    // Only while the module is failing: why, in the master's words.
    if (std::string why = seg.module_failure(m); !why.empty())
        out += "workers.failing." + name + "=" + why + "\n";
    line(out, "queue.high." + name, seg.queue_length(m, true));
    line(out, "queue.low." + name, seg.queue_length(m, false));
    line(out, "requests." + name, ms.stats.all_requests());
    line(out, "requests.high." + name, ms.stats.requests[kHigh].load());
    line(out, "requests.low." + name, ms.stats.requests[kLow].load());
    for (int t = 0; t < kErrorTypes; ++t)
        line(out, "errors." + std::string(error_type_name(ErrorType(t))) + "." + name,
             ms.stats.all_errors(t));
    line(out, "latency.p50_us." + name, ms.stats.latency.percentile(50));
    line(out, "latency.p99_us." + name, ms.stats.latency.percentile(99));
    if (AnswerCache* cache = seg.cache(m)) {
        CacheHeader& ch = cache->header();
        line(out, "cache.hits." + name, ch.hits.load());
        line(out, "cache.misses." + name, ch.misses.load());
        line(out, "cache.stores." + name, ch.stores.load());
        line(out, "cache.too_big." + name, ch.refused.load());
    }
}

void server_lines(std::string& out, Segment& seg) {
    GlobalStats& g = seg.header().stats;
    line(out, "errors.protocol", g.protocol_errors.load());
    line(out, "errors.unknown_module", g.unknown_module.load());
    line(out, "access_log.lost", g.access_log_lost.load());
    line(out, "callbacks.ok", g.callbacks_ok.load());
    line(out, "callbacks.failed", g.callbacks_failed.load());
    line(out, "streams.in", g.streams_in.load());
    line(out, "streams.out", g.streams_out.load());
    line(out, "acceptors.restarts", g.acceptor_restarts.load());
    line(out, "workers.restarts", g.worker_restarts.load());
    for (int k = 0; k < kErlangDropKinds; ++k)
        line(out, std::string("erlang.dropped.") + kErlangDropNames[k], g.erlang_dropped[k].load());
    for (int k = 0; k < kErlangMessageKinds; ++k)
        line(out, std::string("erlang.messages.") + kErlangMessageNames[k], g.erlang_messages[k].load());
    line(out, "uptime", uint64_t((now_us() - g.started_us.load()) / 1000000));
    line(out, "generation", g.generation.load());
}
}  // namespace

std::string stats_text(Segment& seg) {
    GlobalStats& g = seg.header().stats;
    std::string out;
    line(out, "connections.total", g.connections_total.load());
    line(out, "connections.completed", g.connections_completed.load());
    line(out, "connections.active", g.connections_active.load());
    line(out, "connections.refused", g.connections_refused.load());
    uint64_t qh = 0, ql = 0;
    for (uint32_t m = 0; m < seg.nmodules(); ++m) {
        qh += seg.queue_length(m, true);
        ql += seg.queue_length(m, false);
    }
    line(out, "queue.high", qh);
    line(out, "queue.low", ql);
    for (uint32_t m = 0; m < seg.nmodules(); ++m) {
        ModuleShared& ms = seg.module(m);
        if (ms.name[0] == 0) continue;
        if (ms.nslots == 0)
            native_lines(out, ms);
        else
            module_lines(out, seg, m);
    }
    server_lines(out, seg);
    return out;
}

std::string call(Segment& seg, const bert::Peek& pk, std::string_view) {
    if (pk.function == "stats" && pk.arity == 0) return reply_frame(bert::Term::binary(stats_text(seg)));
    if (pk.function == "halt" && pk.arity == 0) {
        // The master stops gracefully. (No master, as in tests: never kill(0), the process group.)
        if (seg.header().master_pid > 0) kill(seg.header().master_pid, SIGQUIT);
        return reply_frame(bert::Term::atom("ok"));
    }
    if (pk.function == "reload_handlers" && pk.arity == 0) {
        // The master replaces every worker after its current request.
        if (seg.header().master_pid > 0) kill(seg.header().master_pid, SIGUSR2);
        return reply_frame(bert::Term::atom("ok"));
    }
    return error_frame(ErrorType::Server, 2, "No such function '__admin__:" + std::string(pk.function) + "'");
}

}  // namespace bertd::admin
