// codec.h: BERT bytes <-> Term, built on erl_interface's ei, plus the request-path
// peek. Decoding never trusts its input: every read is bounds-checked before ei
// sees it, limits cap depth, size and atom length, and errors are values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "bert/term.h"

namespace bert {

constexpr unsigned char kVersion = 131;

struct Limits {
    size_t max_depth = 1000;              // nesting of tuples, lists and maps
    size_t max_size = 256u << 20;         // bytes of one encoded term (after decompression)
    size_t max_atom_chars = 255;          // Erlang's own atom limit
};

struct DecodeError {
    std::string message;  // empty when decoding succeeded
    size_t offset = 0;    // byte offset in the input where the problem was found
    explicit operator bool() const { return !message.empty(); }
};

// Decodes one whole term (starting with the version byte 131; compressed terms,
// tag 80, are inflated). Trailing bytes are an error.
DecodeError decode(std::string_view bytes, Term& out, const Limits& limits = {});

// Encodes with the version byte, byte-identical to term_to_binary/1 of OTP 25.
std::string encode(const Term& t);
void encode_append(const Term& t, std::string& out);  // appends, with version byte

// What the request path needs from a BERP payload, read without decoding the
// arguments. Views point into the payload.
struct Peek {
    enum class Kind : uint8_t { Call, Cast, Info, Other } kind = Kind::Other;
    std::string_view module;    // for Info: the command (priority, cache, ...)
    std::string_view function;  // empty for Info
    uint32_t arity = 0;         // length of the argument list
    size_t args_offset = 0;     // offset of the arguments term (Info: the options term)
};

// Fills `out` from a payload `{call|cast, M, F, Args}` or `{info, Cmd, Opts}`.
// Returns false (out.kind = Other) when the payload is not one of those shapes,
// including when Args is not a proper list. Atoms are returned as their raw
// bytes; non-ASCII latin-1 module names are converted by the caller if needed.
bool peek(std::string_view payload, Peek& out);

}  // namespace bert
