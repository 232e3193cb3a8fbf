// infos.h: BERT-RPC 1.0 info packets ({info, Command, Options}) as bertd reads and
// writes them (doc/info-packets.md): what a client's info asks of its next request,
// what a worker's frame before its answer means, and the frames bertd builds itself.
// Pure functions over terms and bytes; no I/O, no state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "bert/term.h"

namespace bertd {

// Where a callback cast goes once its work is done: {cast, M, F, A ++ [Result]} to `service`.
struct Callback {
    std::string service;  // "host:port"
    bert::Term mfa;       // {M, F, A}
};

// What one info from a client changes. Malformed infos set `error`.
struct ClientInfo {
    enum class Kind : uint8_t { Ignored, Priority, Accept, Stream, Validation, Callback } kind = Kind::Ignored;
    bool high = true;                           // Priority
    bool accept_stream = false, accept_cache = false;  // Accept
    std::string token;                          // Validation
    std::string service;                        // Callback: "host:port"
    bert::Term mfa;                             // Callback: {mfa, M, F, A}'s M, F and A, as a 3-tuple
    std::string error;                          // non-empty: answered in place of the next request
};

// `t` is the whole decoded info: {info, Command, Options}, or the Ruby bertrpc list form
// [info, Command, Options]. Returns false when `t` is not an info at all.
bool read_client_info(const bert::Term& t, ClientInfo& out);

// The kinds of frame a worker may send before (or instead of) its answer.
enum class WorkerFrame : uint8_t { Answer, CacheInfo, StreamInfo, ValidInfo, OtherInfo };
// Looks only at the head of the payload ({info, cache|stream|valid, ...}); never allocates.
WorkerFrame classify_worker_frame(std::string_view payload);

// Frames bertd writes (whole BERPs).
const std::string& stream_info_frame();  // {info, stream, []}
const std::string& valid_info_frame();   // {info, valid, []}
std::string validation_frame(std::string_view token);  // {info, cache, [{validation, Token}]}
std::string reply_binary_frame(std::string_view bytes);  // {reply, <<bytes>>}
constexpr char kStreamEnd[4] = {0, 0, 0, 0};  // the zero-length header that ends a stream

// Infos are small: one whose payload (once inflated) is over this many bytes is refused
// unread, and decoding one may take at most kInfoMemory bytes, so that an info built to
// cost far more than its size (a list of a million NILs) costs little.
constexpr size_t kMaxInfo = 64 * 1024;
constexpr size_t kInfoMemory = 1u << 20;

// Decodes an info's payload (a client's, a worker's, a native function's Infos) whole,
// within kMaxInfo and kInfoMemory. Empty, or why not, worded for an error answer.
std::string decode_info(std::string_view payload, bert::Term& out);

// A native function's {bert_rpc_info, [{Command, Options}, ...], Result}, in the answer
// payload {reply, ...} the link relays: true, and `frames` gets an {info, Command, Options}
// frame for each (cache and valid infos only when `cache` is true) and {reply, Result}.
// Infos that do not read as an info does (decode_info) make it true with `frames` empty
// and `error` saying why. False (and nothing done) for any other answer. Only Infos is
// decoded; Result's bytes are walked (check()'s checks) and copied, never decoded.
bool native_infos(std::string_view payload, bool cache, std::string& frames, std::string& error);

// Does an info frame to the client say `public` with an expiration? (For bertd's own cache.)
// `seconds` gets the expiration, 0 meaning for ever. An info that decode_info() refuses
// says neither.
bool public_expiration(std::string_view cache_info_payload, int64_t& seconds);

}  // namespace bertd
