// infos.cc: reading infos' options (the shapes doc/info-packets.md names) and
// building bertd's own info frames.
#include "net/infos.h"

#include "bert/codec.h"
#include "bert/frame.h"

namespace bertd {

namespace {
using bert::Term;

// The external term format's tags that the head of an info uses.
constexpr uint8_t kSmallTuple = 104, kAtom = 100, kSmallAtom = 115, kAtomUtf8 = 118, kSmallAtomUtf8 = 119;

// [Opt] or a bare option (Ernie's README writes {info, priority, low}).
const Term* single_option(const Term& opts) {
    if (opts.is_list() && opts.size() == 1) return &opts[0];
    if (opts.is_atom()) return &opts;
    return nullptr;
}

// {Key, Value} or the list form [Key, Value]: the option Key's value, if `o` is it.
const Term* pair_value(const Term& o, std::string_view key) {
    bool pair = (o.is_tuple(2) || (o.is_proper_list() && o.size() == 2)) && o[0].is_atom(key);
    return pair ? &o[1] : nullptr;
}

void read_accept(const Term& opts, ClientInfo& out) {
    if (!opts.is_nil() && !opts.is_proper_list()) {
        out.error = "{info, accept, Kinds}: Kinds must be a list of atoms (stream, cache)";
        return;
    }
    if (opts.is_nil()) return;
    for (const Term& k : opts.items()) {
        if (k.is_atom("stream")) out.accept_stream = true;
        else if (k.is_atom("cache")) out.accept_cache = true;
        else if (!k.is_atom()) out.error = "{info, accept, Kinds}: Kinds must be a list of atoms (stream, cache)";
    }
}

void read_validation(const Term& opts, ClientInfo& out) {
    // [{validation, Token}], or the Ruby client's [validation, Token].
    const Term* token = nullptr;
    if (opts.is_proper_list() && opts.size() == 1) token = pair_value(opts[0], "validation");
    if (!token) token = pair_value(opts, "validation");
    if (!token || !token->is_binary()) {
        out.error = "{info, cache, [{validation, Token}]}: Token must be a binary";
        return;
    }
    out.token = token->bytes();
}

void read_callback(const Term& opts, ClientInfo& out) {
    const Term* service = nullptr;
    const Term* mfa = nullptr;
    if (opts.is_proper_list())
        for (const Term& o : opts.items()) {
            if (const Term* v = pair_value(o, "service")) service = v;
            if (o.is_tuple(4) && o[0].is_atom("mfa")) mfa = &o;
        }
    if (!service || !service->is_binary() || service->bytes().empty() || !mfa || !(*mfa)[1].is_atom() ||
        !(*mfa)[2].is_atom() || !(*mfa)[3].is_proper_list()) {
        out.error = "{info, callback, Options}: Options must be [{service, <<\"host:port\">>}, {mfa, M, F, Args}]";
        return;
    }
    out.service = service->bytes();
    out.mfa = Term::tuple({(*mfa)[1], (*mfa)[2], (*mfa)[3]});
}

// Does the payload start {info, <command>, ...}? (version, SMALL_TUPLE 3, atom info, atom command)
bool info_head(std::string_view p, std::string_view command) {
    auto atom_at = [&](size_t& at, std::string_view want) {
        if (at + 2 > p.size()) return false;
        auto tag = uint8_t(p[at]);
        size_t len, head;
        if (tag == kSmallAtomUtf8 || tag == kSmallAtom) {
            len = uint8_t(p[at + 1]);
            head = 2;
        } else if (tag == kAtomUtf8 || tag == kAtom) {
            if (at + 3 > p.size()) return false;
            len = size_t(uint8_t(p[at + 1])) << 8 | uint8_t(p[at + 2]);
            head = 3;
        } else {
            return false;
        }
        if (at + head + len > p.size() || (!want.empty() && p.substr(at + head, len) != want)) return false;
        at += head + len;
        return true;
    };
    if (p.size() < 3 || uint8_t(p[0]) != bert::kVersion || uint8_t(p[1]) != kSmallTuple ||
        uint8_t(p[2]) != 3)
        return false;
    size_t at = 3;
    return atom_at(at, "info") && atom_at(at, command);
}

std::string frame_of(const Term& t) {
    std::string out(bert::kFrameHeader, '\0');
    bert::encode_append(t, out);
    bert::put_frame_header(out.data(), uint32_t(out.size() - bert::kFrameHeader));
    return out;
}
}  // namespace

bool read_client_info(const Term& t, ClientInfo& out) {
    out = ClientInfo{};
    bool tuple = t.is_tuple(3), list = t.is_proper_list() && t.size() == 3;
    if (!(tuple || list) || !t[0].is_atom("info")) return false;
    if (!t[1].is_atom()) {
        out.error = "{info, Command, Options}: Command must be an atom";
        return true;
    }
    const std::string& cmd = t[1].atom_name();
    const Term& opts = t[2];
    if (cmd == "priority") {
        const Term* v = single_option(opts);
        out.kind = ClientInfo::Kind::Priority;
        if (v && v->is_atom("low")) out.high = false;
        else if (!v || !v->is_atom("high")) out.error = "{info, priority, [high | low]}: unknown priority";
    } else if (cmd == "accept") {
        out.kind = ClientInfo::Kind::Accept;
        read_accept(opts, out);
    } else if (cmd == "stream") {
        out.kind = ClientInfo::Kind::Stream;
        if (!opts.is_nil()) out.error = "{info, stream, []}: Options must be []";
    } else if (cmd == "cache") {
        out.kind = ClientInfo::Kind::Validation;
        read_validation(opts, out);
    } else if (cmd == "callback") {
        out.kind = ClientInfo::Kind::Callback;
        read_callback(opts, out);
    }
    return true;  // other commands are ignored, as the specification says
}

WorkerFrame classify_worker_frame(std::string_view payload) {
    if (!info_head(payload, "")) return WorkerFrame::Answer;
    if (info_head(payload, "cache")) return WorkerFrame::CacheInfo;
    if (info_head(payload, "stream")) return WorkerFrame::StreamInfo;
    if (info_head(payload, "valid")) return WorkerFrame::ValidInfo;
    return WorkerFrame::OtherInfo;
}

const std::string& stream_info_frame() {
    static const std::string f = frame_of(Term::tuple({Term::atom("info"), Term::atom("stream"), Term::nil()}));
    return f;
}

const std::string& valid_info_frame() {
    static const std::string f = frame_of(Term::tuple({Term::atom("info"), Term::atom("valid"), Term::nil()}));
    return f;
}

std::string validation_frame(std::string_view token) {
    return frame_of(Term::tuple({Term::atom("info"), Term::atom("cache"),
                                 Term::list({Term::tuple({Term::atom("validation"), Term::binary(token)})})}));
}

std::string reply_binary_frame(std::string_view bytes) {
    return frame_of(Term::tuple({Term::atom("reply"), Term::binary(bytes)}));
}

std::string decode_info(std::string_view payload, Term& out) {
    if (payload.size() > kMaxInfo)
        return "an info of " + std::to_string(payload.size()) + " bytes (at most " +
               std::to_string(kMaxInfo) + ")";
    bert::Limits limits;
    limits.max_size = kMaxInfo;
    limits.max_inflated = kMaxInfo;
    limits.memory_floor = kInfoMemory;
    limits.memory_ratio = 4;
    bert::DecodeError err = bert::decode(payload, out, limits);
    if (!err) return {};
    if (err.message.find("bytes of memory") != std::string::npos)
        return "an info that takes more than " + std::to_string(kInfoMemory) + " bytes of memory to read";
    return "unable to read data: an info: " + err.message;
}

bool native_infos(std::string_view payload, bool cache, std::string& frames, std::string& error) {
    if (payload.substr(0, 40).find("bert_rpc_info") == std::string_view::npos) return false;
    // {reply, {bert_rpc_info, Infos, Result}}, taken apart in place: Result may be large.
    std::vector<bert::Span> reply, parts;
    if (bert::tuple_elements(payload, 1, reply) || reply.size() != 2 ||
        !bert::is_atom_at(payload, reply[0], "reply") || bert::tuple_elements(payload, reply[1].at, parts) ||
        parts.size() != 3 || !bert::is_atom_at(payload, parts[0], "bert_rpc_info"))
        return false;
    std::string infos(1, char(bert::kVersion));
    infos.append(payload.substr(parts[1].at, parts[1].size()));
    Term w;
    frames.clear();
    error = decode_info(infos, w);
    if (error.empty() && !(w.is_nil() || w.is_proper_list()))
        error = "{bert_rpc_info, Infos, Result}: Infos must be a list";
    if (!error.empty()) {
        error = "a native function's infos: " + error;
        return true;
    }
    if (!w.is_nil())
        for (const Term& i : w.items()) {
            if (!i.is_tuple(2) || !i[0].is_atom()) continue;
            bool cache_kind = i[0].is_atom("cache") || i[0].is_atom("valid");
            if (cache_kind && !cache) continue;
            frames += frame_of(Term::tuple({Term::atom("info"), i[0], i[1]}));
        }
    // {reply, Result}: the payload's own head and Result's bytes.
    std::string body(payload.substr(0, reply[1].at));
    body.append(payload.substr(parts[2].at, parts[2].size()));
    bert::append_frame(frames, body);
    return true;
}

bool public_expiration(std::string_view payload, int64_t& seconds) {
    Term t;
    if (!decode_info(payload, t).empty() || !t.is_tuple(3) || !t[2].is_proper_list()) return false;
    bool is_public = false, has_expiration = false;
    for (const Term& o : t[2].items()) {
        if (const Term* v = pair_value(o, "access")) is_public = v->is_atom("public");
        if (const Term* v = pair_value(o, "expiration"); v && v->is_int() && v->as_int() >= 0) {
            has_expiration = true;
            seconds = v->as_int();
        }
    }
    return is_public && has_expiration;
}

}  // namespace bertd
