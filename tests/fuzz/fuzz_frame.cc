// fuzz_frame.cc: libFuzzer target for the request path as a connection runs it:
// bytes arrive in fuzzer-chosen chunks, frames are cut with scan_frame under a
// fuzzer-chosen payload limit, and each payload goes through peek() and decode().
// For canonical payloads (what encode() writes) peek must agree with decode.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "bert/codec.h"
#include "bert/frame.h"
#include "bert/term.h"

namespace {

bool within(std::string_view part, std::string_view whole) {
    return part.empty() ||
           (part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size());
}

std::string latin1_to_utf8(std::string_view s) {
    std::string out;
    for (unsigned char c : s) {
        if (c < 0x80) {
            out.push_back(static_cast<char>(c));
        } else {
            out.push_back(static_cast<char>(0xc0 | (c >> 6)));
            out.push_back(static_cast<char>(0x80 | (c & 0x3f)));
        }
    }
    return out;
}

bool same_atom(const bert::Term& t, std::string_view raw, bool latin1) {
    return t.is_atom() && t.atom_name() == (latin1 ? latin1_to_utf8(raw) : std::string(raw));
}

// What decode() says the payload is, in peek()'s terms: peek reads only the
// argument list's header, so an improper list passes too.
bool is_request(const bert::Term& t) {
    if (t.is_tuple(4))
        return (t[0].is_atom("call") || t[0].is_atom("cast")) && t[1].is_atom() && t[2].is_atom() &&
               t[3].is_list();
    // An info's options may be any term ({info, priority, low} is Ernie's form).
    return t.is_tuple(3) && t[0].is_atom("info") && t[1].is_atom();
}

size_t heads(const bert::Term& list) { return list.size() - (list.is_proper_list() ? 0 : 1); }

void handle(std::string_view payload) {
    bert::Peek pk;
    bool peeked = bert::peek(payload, pk);
    if (peeked) {
        if (pk.kind == bert::Peek::Kind::Other || pk.args_offset >= payload.size()) abort();
        if (!within(pk.module, payload) || !within(pk.function, payload)) abort();
    } else if (pk.kind != bert::Peek::Kind::Other || pk.arity != 0) {
        abort();
    }
    bert::Limits limits;
    limits.max_size = 1u << 20;
    bert::Term t;
    if (bert::decode(payload, t, limits)) return;
    if (bert::encode(t) != payload) return;  // only canonical payloads must agree
    if (peeked != is_request(t)) abort();
    if (!peeked) return;
    bool info = pk.kind == bert::Peek::Kind::Info;
    if (info != t[0].is_atom("info")) abort();
    if (!info && (pk.kind == bert::Peek::Kind::Call) != t[0].is_atom("call")) abort();
    if (!same_atom(t[1], pk.module, pk.module_latin1)) abort();
    if (!info && !same_atom(t[2], pk.function, pk.function_latin1)) abort();
    const bert::Term& args = info ? t[2] : t[3];
    if (pk.arity != (args.is_list() ? heads(args) : 0)) abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    FuzzedDataProvider fdp(data, size);
    size_t max_payload = fdp.ConsumeIntegralInRange<size_t>(0, 1u << 16);
    std::string buf;
    while (fdp.remaining_bytes() > 0) {
        buf += fdp.ConsumeBytesAsString(fdp.ConsumeIntegralInRange<size_t>(1, 256));
        for (;;) {
            bert::FrameScan scan = bert::scan_frame(buf, max_payload);
            if (scan.state == bert::FrameScan::State::TooLarge) return 0;  // the connection closes
            if (scan.state == bert::FrameScan::State::NeedMore) break;
            if (scan.length > max_payload || buf.size() < bert::kFrameHeader + scan.length) abort();
            handle(std::string_view(buf).substr(bert::kFrameHeader, scan.length));
            buf.erase(0, bert::kFrameHeader + scan.length);
        }
    }
    return 0;
}
