// metrics.cc: writing the exposition (metrics.h). Histogram buckets are the segment's own
// log-linear ones summed up to powers of two microseconds, so that each bound is exact.
#include "admin/metrics.h"

#include <cstdio>

#include "admin/health.h"
#include "net/answers.h"
#include "shm/cache.h"

namespace bertd::admin {

namespace {
constexpr int kFirstBound = 4, kLastBound = 25;  // 2^4 us (16 us) .. 2^25 us (33.5 s)

std::string label(std::string_view v) {
    std::string out;
    for (char c : v) {
        if (c == '\\' || c == '"') out += '\\';
        if (c == '\n') {
            out += "\\n";
            continue;
        }
        out += c;
    }
    return out;
}

struct Out {
    std::string text;
    void family(const char* name, const char* type, const char* help) {
        text += "# HELP ";
        text += name;
        text += ' ';
        text += help;
        text += "\n# TYPE ";
        text += name;
        text += ' ';
        text += type;
        text += '\n';
    }
    void sample(const std::string& name, const std::string& labels, double v) {
        char buf[64];
        snprintf(buf, sizeof buf, "%.6f", v);  // seconds, to the microsecond the segment counts in
        text += name;
        if (!labels.empty()) text += "{" + labels + "}";
        text += ' ';
        text += buf;
        text += '\n';
    }
    void sample(const std::string& name, const std::string& labels, uint64_t v) {
        text += name;
        if (!labels.empty()) text += "{" + labels + "}";
        text += ' ';
        text += std::to_string(v);
        text += '\n';
    }
};

std::string mod(const ModuleShared& ms) { return "module=\"" + label(ms.name) + "\""; }

const char* const kPriorityLabel[2] = {",priority=\"high\"", ",priority=\"low\""};

void requests(Out& o, Segment& seg) {
    o.family("bertd_requests_total", "counter",
             "Requests finished (calls and casts), by module, kind and priority.");
    for (uint32_t m = 0; m < seg.nmodules(); ++m) {
        ModuleShared& ms = seg.module(m);
        if (ms.name[0] == 0) continue;
        std::string labels = mod(ms) + ",kind=\"" + (ms.nslots ? "external" : "native") + "\"";
        for (int p : {kHigh, kLow})
            o.sample("bertd_requests_total", labels + kPriorityLabel[p],
                     ms.stats.requests[p].load(std::memory_order_relaxed));
    }
    o.family("bertd_errors_total", "counter", "Error answers, by module, error type and priority.");
    for (uint32_t m = 0; m < seg.nmodules(); ++m) {
        ModuleShared& ms = seg.module(m);
        if (ms.name[0] == 0) continue;
        for (int t = 0; t < kErrorTypes; ++t)
            for (int p : {kHigh, kLow})
                o.sample("bertd_errors_total",
                         mod(ms) + ",type=\"" + std::string(error_type_name(ErrorType(t))) + "\"" +
                             kPriorityLabel[p],
                         ms.stats.errors[p][t].load(std::memory_order_relaxed));
    }
    o.family("bertd_requests_queued_total", "counter",
             "Requests that waited for a worker, by module and priority.");
    for (uint32_t m = 0; m < seg.nmodules(); ++m) {
        ModuleShared& ms = seg.module(m);
        if (ms.name[0] == 0 || ms.nslots == 0) continue;
        o.sample("bertd_requests_queued_total", mod(ms) + ",priority=\"high\"", ms.stats.queued_high.load());
        o.sample("bertd_requests_queued_total", mod(ms) + ",priority=\"low\"", ms.stats.queued_low.load());
    }
}

void latency(Out& o, Segment& seg) {
    o.family("bertd_request_duration_seconds", "histogram",
             "Time from a request's arrival to its answer, by module.");
    for (uint32_t m = 0; m < seg.nmodules(); ++m) {
        ModuleShared& ms = seg.module(m);
        if (ms.name[0] == 0) continue;
        const Histogram& h = ms.stats.latency;
        uint64_t seen = 0;
        int b = 0;
        for (int k = kFirstBound; k <= kLastBound; ++k) {
            uint64_t bound = uint64_t(1) << k;  // microseconds
            for (; b < kLatencyBuckets && latency_bucket_upper(b) < bound; ++b)
                seen += h.buckets[b].load(std::memory_order_relaxed);
            char le[32];
            snprintf(le, sizeof le, "%g", double(bound) / 1e6);
            o.sample("bertd_request_duration_seconds_bucket", mod(ms) + ",le=\"" + le + "\"", seen);
        }
        for (; b < kLatencyBuckets; ++b) seen += h.buckets[b].load(std::memory_order_relaxed);
        o.sample("bertd_request_duration_seconds_bucket", mod(ms) + ",le=\"+Inf\"", seen);
        o.sample("bertd_request_duration_seconds_sum", mod(ms), double(h.sum_us.load()) / 1e6);
        o.sample("bertd_request_duration_seconds_count", mod(ms), seen);
    }
}

void workers(Out& o, Segment& seg) {
    struct Row {
        std::string labels;
        uint64_t idle, total, restarts, failing, high, low;
    };
    std::vector<Row> rows;
    for (uint32_t m = 0; m < seg.nmodules(); ++m) {
        ModuleShared& ms = seg.module(m);
        if (ms.name[0] == 0 || ms.nslots == 0) continue;
        Row r{mod(ms),
              0,
              ms.nslots,
              0,
              seg.module_failure(m).empty() ? 0u : 1u,
              seg.queue_length(m, true),
              seg.queue_length(m, false)};
        for (uint32_t s = ms.first_slot; s < ms.first_slot + ms.nslots; ++s) {
            if (seg.slot(s).state.load() == uint32_t(SlotState::Idle)) ++r.idle;
            r.restarts += seg.slot(s).restarts.load();
        }
        rows.push_back(r);
    }
    o.family("bertd_queue_depth", "gauge", "Requests waiting for a worker now, by module and priority.");
    for (const Row& r : rows) {
        o.sample("bertd_queue_depth", r.labels + ",priority=\"high\"", r.high);
        o.sample("bertd_queue_depth", r.labels + ",priority=\"low\"", r.low);
    }
    o.family("bertd_workers", "gauge", "Worker slots of each external module.");
    for (const Row& r : rows) o.sample("bertd_workers", r.labels, r.total);
    o.family("bertd_workers_idle", "gauge", "Workers waiting for a request, by module.");
    for (const Row& r : rows) o.sample("bertd_workers_idle", r.labels, r.idle);
    o.family("bertd_worker_restarts_total", "counter", "Workers started again after one exited, by module.");
    for (const Row& r : rows) o.sample("bertd_worker_restarts_total", r.labels, r.restarts);
    o.family("bertd_module_failing", "gauge",
             "1 while a module's workers keep dying within their first second.");
    for (const Row& r : rows) o.sample("bertd_module_failing", r.labels, r.failing);
}

// Modules with `cache: {size: ...}`: their answer caches' counters.
void caches(Out& o, Segment& seg) {
    struct {
        const char* name;
        const char* help;
        std::atomic<uint64_t> CacheHeader::*counter;
    } const kinds[] = {
        {"bertd_cache_hits_total", "Requests answered from a module's answer cache.", &CacheHeader::hits},
        {"bertd_cache_misses_total", "Cacheable requests the cache did not hold.", &CacheHeader::misses},
        {"bertd_cache_stores_total", "Answers stored in a module's cache.", &CacheHeader::stores},
        {"bertd_cache_too_big_total", "Answers too big for a module's cache.", &CacheHeader::refused},
    };
    for (const auto& k : kinds) {
        bool any = false;
        for (uint32_t m = 0; m < seg.nmodules(); ++m) {
            AnswerCache* cache = seg.module(m).name[0] ? seg.cache(m) : nullptr;
            if (!cache) continue;
            if (!any) o.family(k.name, "counter", k.help);
            any = true;
            o.sample(k.name, mod(seg.module(m)),
                     (cache->header().*k.counter).load(std::memory_order_relaxed));
        }
    }
}

void server(Out& o, Segment& seg, bool link_down) {
    GlobalStats& g = seg.header().stats;
    auto counter = [&](const char* name, const char* help, uint64_t v) {
        o.family(name, "counter", help);
        o.sample(name, "", v);
    };
    counter("bertd_connections_total", "Client connections accepted.", g.connections_total.load());
    counter("bertd_connections_refused_total", "Connections refused at limits.max_connections.",
            g.connections_refused.load());
    o.family("bertd_connections_active", "gauge", "Client connections open now.");
    o.sample("bertd_connections_active", "", g.connections_active.load());
    counter("bertd_protocol_errors_total", "Protocol errors before any module was known (PROXY headers too).",
            g.protocol_errors.load());
    counter("bertd_unknown_module_total", "Calls to modules that do not exist.", g.unknown_module.load());
    counter("bertd_access_log_lost_total", "Access log lines not written whole.", g.access_log_lost.load());
    o.family("bertd_callbacks_total", "counter", "BERT-RPC 1.0 callback casts, delivered or given up.");
    o.sample("bertd_callbacks_total", "result=\"ok\"", g.callbacks_ok.load());
    o.sample("bertd_callbacks_total", "result=\"failed\"", g.callbacks_failed.load());
    o.family("bertd_streams_total", "counter", "Streamed requests (in) and answers (out) relayed.");
    o.sample("bertd_streams_total", "direction=\"in\"", g.streams_in.load());
    o.sample("bertd_streams_total", "direction=\"out\"", g.streams_out.load());
    counter("bertd_acceptor_restarts_total", "Acceptor processes started again after one died.",
            g.acceptor_restarts.load());
    o.family(
        "bertd_erlang_messages_total", "counter",
        "Messages Erlang nodes sent bertd's node: calls into bertd (rpc), to a name, to a worker's pid.");
    for (int k = 0; k < kErlangMessageKinds; ++k)
        o.sample("bertd_erlang_messages_total", std::string("to=\"") + kErlangMessageNames[k] + "\"",
                 g.erlang_messages[k].load());
    o.family("bertd_erlang_dropped_total", "counter",
             "Messages from Erlang nodes the link dropped, by reason.");
    for (int k = 0; k < kErlangDropKinds; ++k)
        o.sample("bertd_erlang_dropped_total", std::string("reason=\"") + kErlangDropNames[k] + "\"",
                 g.erlang_dropped[k].load());
    o.family("bertd_start_time_seconds", "gauge", "When the server started, in seconds since the epoch.");
    o.sample("bertd_start_time_seconds", "", double(g.started_us.load()) / 1e6);
    o.family("bertd_generation", "gauge", "Configurations loaded (1, then one more per reload).");
    o.sample("bertd_generation", "", g.generation.load());
    Health h = health(seg, link_down);
    o.family("bertd_health", "gauge", "1 for the state __admin__:health() answers now.");
    for (Health s : {Health::Ok, Health::Degraded, Health::Draining})
        o.sample("bertd_health", std::string("state=\"") + health_name(s) + "\"", uint64_t(s == h ? 1 : 0));
}
}  // namespace

std::string metrics_text(Segment& seg, bool link_down) {
    Out o;
    requests(o, seg);
    latency(o, seg);
    workers(o, seg);
    caches(o, seg);
    server(o, seg, link_down);
    return std::move(o.text);
}

}  // namespace bertd::admin
