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
    // Nesting of tuples, lists and maps. Decode, encode, compare and destruction
    // recurse once per level: about 0.3 KB of stack a level, 1.3 KB under
    // ASan, so 1000 levels fit well within a default 8 MB stack.
    size_t max_depth = 1000;
    size_t max_size = 256u << 20;         // bytes of one encoded term (after decompression)
    size_t max_atom_chars = 255;          // Erlang's own atom limit; larger values act as 255
};

struct DecodeError {
    std::string message;  // empty when decoding succeeded
    size_t offset = 0;    // byte offset in the input where the problem was found
    explicit operator bool() const { return !message.empty(); }
};

// Decodes one whole term (starting with the version byte 131; compressed terms,
// tag 80, are inflated). Trailing bytes are an error; on any error `out` is
// left unchanged. Accepts what OTP 25's
// binary_to_term/1 accepts, except funs, exports and bit binaries, whose tag the
// error names. Maps come out with pairs in compare_exact key order; duplicate
// keys, invalid UTF-8 atoms and NaN/infinite floats are errors, as in Erlang,
// and so are refs without id words (OTP 25 refuses them as map keys).
// For a compressed term, a declared size over max_size is refused before any
// inflating (offset 2), zlib errors report offset 6, and errors in the inflated
// term offset 1 (the message gives the offset within the inflated data).
DecodeError decode(std::string_view bytes, Term& out, const Limits& limits = {});

// Encodes with the version byte, byte-identical to term_to_binary/1 of OTP 25
// for every term Erlang can hold, with maps of up to 32 keys (Erlang writes
// larger maps in hash order; they are written here in key order, which Erlang
// reads back as the same map). Atom text that is not valid UTF-8 is taken as
// latin-1. Pids, refs and ports go out as NEW_PID, NEWER_REFERENCE and NEW_PORT
// (V4_PORT above 28-bit ids), as OTP 25 writes them.
std::string encode(const Term& t);
void encode_append(const Term& t, std::string& out);  // appends, with version byte
size_t encoded_size(const Term& t);                   // what encode() returns, in bytes

// What the request path needs from a BERP payload, read without decoding the
// arguments. Views point into the payload.
struct Peek {
    enum class Kind : uint8_t { Call, Cast, Info, Other } kind = Kind::Other;
    std::string_view module;    // for Info: the command (priority, cache, ...)
    std::string_view function;  // empty for Info
    uint32_t arity = 0;         // length of the argument list
    size_t args_offset = 0;     // offset of the arguments term (Info: the options term)
    // Set when that atom came as latin-1 (ATOM_EXT/SMALL_ATOM_EXT) with bytes
    // above 127, so its raw bytes are not UTF-8.
    bool module_latin1 = false;
    bool function_latin1 = false;
};

// Fills `out` from a payload `{call|cast, M, F, Args}` or `{info, Cmd, Opts}`
// (version byte, then SMALL_TUPLE). Returns false (out.kind = Other) when the
// payload is not one of those shapes. It checks the version byte, the tuple
// header, the atom tags and that each atom's bytes are present, and for Args
// (and Opts) a list header only: NIL, STRING_EXT with all its bytes present, or
// LIST_EXT whose count leaves at least one byte per element plus the tail. The
// elements and the tail are not read, so a later decode() may still fail.
// Atoms are returned as their raw bytes; never allocates.
bool peek(std::string_view payload, Peek& out);

}  // namespace bert
