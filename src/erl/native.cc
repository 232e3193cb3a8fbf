// native.cc: native requests from acceptors. Decides native or external from the
// export lists cached per node (refreshed when a node (re)connects and on reload),
// sends the call to bertd_native on the node through rex without decoding the
// client's arguments, and relays the answer bytes the node encoded. It never blocks.
// A request for a node that is down waits (bounded) only where the node is expected
// back: the companion VM, which the master restarts, or a node this link has not
// failed to reach yet; elsewhere it is answered at once with a server error.
#include <cstring>

#include "bert/codec.h"
#include "bert/printer.h"
#include "erl/link.h"
#include "erl/proto.h"
#include "erl/terms.h"
#include "log/log.h"
#include "net/answers.h"
#include "shm/segment.h"

namespace bertd::erl {

namespace {
constexpr double kSetupTimeout = 10;
// The longest a request waits for its node to connect and load, when its module has
// no shorter timeout: a companion VM boots in one to three seconds.
constexpr int64_t kNodeWaitUs = 10'000'000;

// A setup call's result (code:ensure_loaded, code:load_binary, bertd_native:exports),
// decoded under `limits`; the atom undecodable when it cannot be.
bert::Term decode_result(std::string_view result, const bert::Limits& limits) {
    std::string bytes = versioned(result);
    bert::Term t;
    if (bert::decode(bytes, t, limits)) return bert::Term::atom("undecodable");
    return t;
}

// What a native call's result that is no answer says, as ~p prints it, cut at
// kShownResult bytes and read from the bytes only that far: an {badrpc, {'EXIT', R}} of
// millions of elements costs what its first kShownResult bytes of text cost.
constexpr size_t kShownResult = 1000;
std::string shown_result(std::string_view result, const bert::Limits& limits) {
    std::string bytes = versioned(result);
    std::string text;
    if (bert::DecodeError e = bert::print_encoded(bytes, text, kShownResult, limits))
        return "an unreadable result (" + unreadable(e) + ")";
    return text;
}

// Atom bytes as UTF-8 (the peek returns a latin-1 atom's raw bytes).
std::string utf8_name(std::string_view raw, bool latin1) {
    if (!latin1) return std::string(raw);
    std::string out;
    for (unsigned char c : raw) {
        if (c < 0x80)
            out.push_back(char(c));
        else {
            out.push_back(char(0xC0 | (c >> 6)));
            out.push_back(char(0x80 | (c & 0x3F)));
        }
    }
    return out;
}

std::string text_of(const bert::Term& t) {
    if (t.is_binary()) return t.bytes();
    if (t.is_atom()) return t.atom_name();
    std::string s;
    if (t.is_proper_list()) {
        for (const auto& c : t.items()) {
            if (!c.is_int() || c.as_int() < 0 || c.as_int() > 0x10FFFF) return bert::to_string(t, 300);
            s.push_back(char(c.as_int()));
        }
        return s;
    }
    return bert::to_string(t, 300);
}
}  // namespace

void Link::acceptor_message(AccConn& a, uint8_t type, uint64_t tag, std::string_view body) {
    switch (type) {
        case linkproto::Hello:
            if (body.size() < 12) break;
            a.hello = true;
            a.generation = linkproto::get_u64(body.data());
            a.index = linkproto::get_u32(body.data() + 8);
            log::debug("acceptor %u of generation %llu joined the link", a.index,
                       (unsigned long long)a.generation);
            open_segment(a.generation);
            if (a.generation > newest_generation_) {
                newest_generation_ = a.generation;
                retire_loops(newest_generation_);
            }
            pump_ext();  // calls from Erlang may wait for an acceptor
            return;
        case linkproto::Request:
            if (body.empty()) break;
            native_request(a, tag, uint8_t(body[0]), body.substr(1));
            return;
        default: break;
    }
    close_stream(a, "an unknown message");
}

void Link::answer_acceptor(uint64_t acceptor, uint64_t tag, uint8_t type, std::string_view payload) {
    auto* a = static_cast<AccConn*>(find(acceptor, Stream::Kind::Acceptor));
    if (!a) return;  // the acceptor is gone, and its client with it
    linkproto::append(a->out, linkproto::Type(type), tag, payload);
    queue_out(*a);
}

// The acceptor's router decides who serves a request the native module does not take.
void Link::decline(uint64_t acceptor, uint64_t tag, linkproto::DeclineReason why) {
    char body = char(why);
    answer_acceptor(acceptor, tag, linkproto::Declined, std::string_view(&body, 1));
}

void Link::answer_error(uint64_t acceptor, uint64_t tag, int code, const std::string& detail) {
    std::string frame = error_frame(ErrorType::Server, code, detail);
    answer_acceptor(acceptor, tag, linkproto::Answer, std::string_view(frame).substr(4));
}

void Link::native_request(AccConn& a, uint64_t tag, uint8_t flags, std::string_view payload) {
    bert::Peek pk;
    if (!bert::peek(payload, pk) ||
        (pk.kind != bert::Peek::Kind::Call && pk.kind != bert::Peek::Kind::Cast)) {
        answer_error(a.id, tag, 0, "the link got a request that is not a call or cast");
        return;
    }
    std::string module = utf8_name(pk.module, pk.module_latin1);
    auto it = native_modules_.find(module);
    if (it == native_modules_.end()) {
        // The acceptor's configuration is newer or older than ours (a reload in progress).
        decline(a.id, tag, linkproto::NoModule);
        return;
    }
    if (it->second.empty()) {
        answer_error(
            a.id, tag, 0,
            "native module '" + module + "' has no node to run on (restart bertd to start its companion VM)");
        return;
    }
    Node& n = node(it->second);
    if (!conn_of(n)) {
        ensure_connected(n);
        if (holds_requests(n))
            hold_native(n, a.id, tag, flags, payload, module);
        else
            answer_error(
                a.id, tag, 0,
                "native module '" + module + "': " + not_connected(n) + "; bertd keeps reconnecting");
        return;
    }
    switch (n.setup) {
        case Node::Setup::None: start_setup(n); [[fallthrough]];
        case Node::Setup::Loading: hold_native(n, a.id, tag, flags, payload, module); return;
        case Node::Setup::Failed:
            answer_error(a.id, tag, 0, "native module '" + module + "': " + n.setup_error);
            return;
        case Node::Setup::Ready: decide_native(n, a.id, tag, flags, payload); return;
    }
}

// Ernie's rule: native if the module exports Function/Arity, unless it also exports
// Function_pred/Arity, which then decides (bertd_native calls it on the node).
void Link::decide_native(Node& n, uint64_t acceptor, uint64_t tag, uint8_t flags, std::string_view payload) {
    bert::Peek pk;
    bert::peek(payload, pk);
    std::string module = utf8_name(pk.module, pk.module_latin1);
    std::string fn = utf8_name(pk.function, pk.function_latin1);
    auto ex = n.exports.find(module);
    if (ex == n.exports.end()) {
        decline(acceptor, tag, linkproto::NoModule);
        return;
    }
    int arity = int(pk.arity);
    bool exported = ex->second.count({fn, arity}) || ex->second.count({fn + "_pred", arity});
    if (!exported) {
        decline(acceptor, tag, linkproto::NoFunction);
        return;
    }
    DistConn* d = conn_of(n);
    if (!d) {
        answer_error(acceptor, tag, 0, "native module '" + module + "': " + not_connected(n));
        return;
    }
    bool cast = flags & linkproto::Cast;
    bool trust = config_.erlang.trust_clients;
    std::string_view args = payload.substr(pk.args_offset);
    uint64_t call_tag = new_tag();
    rex_call(*d, call_tag, "bertd_native", cast ? "cast" : "call", 4, [&](Ext& e) {
        e.binary(module).binary(fn);
        // By default the arguments stay a binary until binary_to_term(Bin, [safe]) on
        // the node, so a client can never create atoms there.
        if (trust)
            e.raw(args);
        else
            e.binary(std::string_view("\x83", 1), args);
        e.atom(trust ? "false" : "true");
    });
    Call c;
    c.kind = Call::Kind::Native;
    c.node = n.name;
    c.conn = d->id;
    c.acceptor = acceptor;
    c.acc_tag = tag;
    c.cast = cast;
    c.mf = module + ":" + fn;
    auto t = native_timeouts_.find(module);
    add_call(call_tag, std::move(c), t == native_timeouts_.end() ? 0 : t->second);
}

void Link::native_reply(Call& c, std::string_view result) {
    std::string_view bytes;
    if (binary_bytes(result, bytes) && !bytes.empty() && uint8_t(bytes[0]) == bert::kVersion) {
        answer_acceptor(c.acceptor, c.acc_tag, linkproto::Answer, bytes);
        return;
    }
    // Anything else is fallback or a failure, told apart and shown without decoding it.
    if (bert::is_atom_at(result, bert::Span{0, result.size()}, "fallback")) {
        decline(c.acceptor, c.acc_tag, linkproto::NoFunction);  // the predicate said external
        return;
    }
    answer_error(
        c.acceptor, c.acc_tag, 0,
        "native call '" + c.mf + "' failed on " + c.node + ": " + shown_result(result, term_limits()));
}

// ---- the export lists ------------------------------------------------------------------------

// Makes sure bertd_native is loaded on the node (loading bertd's own beam when the
// node's code path lacks it), then asks for the export lists.
void Link::start_setup(Node& n) {
    DistConn* d = conn_of(n);
    if (!d) return;
    n.setup = Node::Setup::Loading;
    uint64_t tag = new_tag();
    rex_call(*d, tag, "code", "ensure_loaded", 1, [](Ext& e) { e.atom("bertd_native"); });
    Call c;
    c.kind = Call::Kind::EnsureLoaded;
    c.node = n.name;
    c.conn = d->id;
    add_call(tag, std::move(c), kSetupTimeout);
}

void Link::send_exports_query(Node& n) {
    DistConn* d = conn_of(n);
    if (!d) return;
    std::vector<std::string> mods;
    for (const auto& m : config_.modules)
        if (m.type == ModuleConfig::Type::Native && native_modules_.count(m.name) &&
            native_modules_[m.name] == n.name)
            mods.push_back(m.name);
    uint64_t tag = new_tag();
    rex_call(*d, tag, "bertd_native", "exports", 1, [&](Ext& e) {
        if (mods.empty()) {
            e.nil();
            return;
        }
        e.list(mods.size());
        for (const auto& m : mods) e.binary(m);
        e.nil();
    });
    Call c;
    c.kind = Call::Kind::Exports;
    c.node = n.name;
    c.conn = d->id;
    add_call(tag, std::move(c), kSetupTimeout);
}

void Link::setup_reply(Call& c, std::string_view result) {
    Node& n = node(c.node);
    bert::Term t = decode_result(result, term_limits());
    bool loaded = t.is_tuple(2) && t[0].is_atom("module") && t[1].is_atom("bertd_native");
    switch (c.kind) {
        case Call::Kind::EnsureLoaded:
            if (loaded)
                send_exports_query(n);
            else
                load_helper(n);
            return;
        case Call::Kind::LoadBeam:
            if (!loaded) {
                setup_failed(n, "cannot load bertd_native on " + n.name + ": " + bert::to_string(t, 500));
                return;
            }
            log::info("loaded bertd_native on %s", n.name.c_str());
            send_exports_query(n);
            return;
        case Call::Kind::Exports: exports_reply(n, t); return;
        default: return;
    }
}

// bertd_native is not on the node's code path: send it bertd's copy of the beam.
void Link::load_helper(Node& n) {
    DistConn* d = conn_of(n);
    if (helper_beam_.empty() || !d) {
        setup_failed(n, "bertd_native is not on the code path of " + n.name +
                            " and bertd has no bertd_native.beam to load (set erlang.ebin)");
        return;
    }
    uint64_t tag = new_tag();
    std::string path = id_.ebin + "/bertd_native.beam";
    rex_call(*d, tag, "code", "load_binary", 3,
             [&](Ext& e) { e.atom("bertd_native").term(bert::Term::string(path)).binary(helper_beam_); });
    Call l;
    l.kind = Call::Kind::LoadBeam;
    l.node = n.name;
    l.conn = d->id;
    add_call(tag, std::move(l), kSetupTimeout);
}

// bertd_native:exports answered [{Module, [{F, A}] | Why}]: the node is ready.
void Link::exports_reply(Node& n, const bert::Term& t) {
    if (!t.is_proper_list()) {
        setup_failed(n, "bertd_native:exports on " + n.name + " answered " + bert::to_string(t, 500));
        return;
    }
    n.exports.clear();
    n.missing.clear();
    std::string summary;
    for (const auto& e : t.items()) {
        if (!e.is_tuple(2) || !e[0].is_binary()) continue;
        const std::string& mod = e[0].bytes();
        if (!e[1].is_proper_list()) {
            n.missing[mod] = text_of(e[1]);
            log::error("native module '%s' cannot be loaded on %s: %s", mod.c_str(), n.name.c_str(),
                       text_of(e[1]).c_str());
            continue;
        }
        auto& set = n.exports[mod];
        for (const auto& f : e[1].items())
            if (f.is_tuple(2) && f[0].is_binary() && f[1].is_int())
                set.insert({f[0].bytes(), int(f[1].as_int())});
        summary += (summary.empty() ? "" : ", ") + mod + " (" + std::to_string(set.size()) + ")";
    }
    n.setup = Node::Setup::Ready;
    n.setup_error.clear();
    log::info("native modules on %s: %s", n.name.c_str(), summary.empty() ? "none" : summary.c_str());
    drain_waiting(n);
}

void Link::setup_failed(Node& n, const std::string& why) {
    n.setup = Node::Setup::Failed;
    n.setup_error = why;
    n.setup_retry_us = monotonic_us() + 2'000'000;
    log::error("Erlang node %s: %s", n.name.c_str(), why.c_str());
    fail_waiting(n, why);
}

// Whether requests for an unconnected node wait for it: bertd restarts its companion
// VM, and a node this link has not yet failed to reach may just be connecting.
bool Link::holds_requests(const Node& n) const { return n.name == id_.companion || n.fails == 0; }

void Link::hold_native(Node& n, uint64_t acceptor, uint64_t tag, uint8_t flags, std::string_view payload,
                       const std::string& module) {
    int64_t wait = kNodeWaitUs;
    if (auto t = native_timeouts_.find(module); t != native_timeouts_.end() && t->second > 0)
        wait = std::min(wait, int64_t(t->second * 1e6));
    n.waiting.push_back({acceptor, tag, flags, std::string(payload), monotonic_us() + wait});
}

void Link::fail_waiting(Node& n, const std::string& why) {
    auto waiting = std::exchange(n.waiting, {});
    for (auto& w : waiting) {
        bert::Peek pk;
        bert::peek(w.payload, pk);
        answer_error(w.acceptor, w.tag, 0, "native module '" + std::string(pk.module) + "': " + why);
    }
}

void Link::expire_waiting(int64_t now) {
    for (auto& [name, n] : nodes_) {
        if (n.waiting.empty()) continue;
        std::vector<NativeReq> keep;
        for (auto& w : n.waiting) {
            if (now < w.deadline_us) {
                keep.push_back(std::move(w));
                continue;
            }
            bert::Peek pk;
            bert::peek(w.payload, pk);
            std::string why = conn_of(n)
                                  ? "the Erlang node " + n.name + " is still loading the native modules"
                                  : not_connected(n);
            answer_error(w.acceptor, w.tag, 0, "native module '" + std::string(pk.module) + "': " + why);
        }
        n.waiting = std::move(keep);
    }
}

std::string Link::not_connected(const Node& n) const {
    std::string s = "the Erlang node " + n.name + " is not connected";
    if (!n.last_error.empty()) s += " (" + n.last_error + ")";
    return s;
}

void Link::drain_waiting(Node& n) {
    auto waiting = std::exchange(n.waiting, {});
    for (auto& w : waiting) decide_native(n, w.acceptor, w.tag, w.flags, w.payload);
}

}  // namespace bertd::erl
