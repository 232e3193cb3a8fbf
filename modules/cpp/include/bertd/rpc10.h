// rpc10.h: BERT-RPC 1.0's info packets as bertd's C++ handler and client libraries write and
// read them (doc/info-packets.md): stream chunks (<u32 N><N bytes>, ended by <u32 0>) and cache
// infos. Pure functions; it never builds an empty chunk (four zero bytes end a stream).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "bert/term.h"

namespace bertd {

// A streamed answer's or request's chunks are at most this long by default (bertd refuses
// chunks over its limits.max_frame).
constexpr size_t kDefaultChunk = 256u << 10;

// The options of {info, cache, [{access, A}, {expiration, S}, {validation, Token}]}.
struct CacheInfo {
    enum class Access : uint8_t { Private, Public } access = Access::Private;
    std::optional<int64_t> expiration;      // seconds, 0: valid for ever
    std::optional<std::string> validation;  // the token
};

namespace rpc10 {

// The whole BERP {info, cache, Options}; throws std::invalid_argument when `c` has neither an
// expiration nor a token, or a negative expiration.
std::string cache_info_frame(const CacheInfo& c);
// Reads a cache info's Options; false (with `why`) for a shape the contract does not allow.
// Options this library does not know are skipped.
bool read_cache_info(const bert::Term& options, CacheInfo& out, std::string& why);

const std::string& stream_info_frame();  // {info, stream, []}
const std::string& valid_info_frame();   // {info, valid, []}
constexpr char kStreamEnd[4] = {0, 0, 0, 0};

// Appends the chunk header of a chunk of n bytes (n > 0).
void append_chunk_header(std::string& out, size_t n);

}  // namespace rpc10
}  // namespace bertd
