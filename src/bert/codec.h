// codec.h: BERT bytes <-> Term, built on erl_interface's ei, plus the request-path
// peek and walks over encoded bytes that build no Term (check, rewrite_floats).
// Decoding never trusts its input: every read is bounds-checked before ei sees
// it, limits cap depth, size, atom length, inflating and memory, and errors are values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bert/term.h"

namespace bert {

constexpr unsigned char kVersion = 131;

struct Limits {
    // Nesting of tuples, lists, maps and funs' environments. Decode, encode,
    // compare and destruction recurse once per level: about 0.3 KB of stack a
    // level, 1.3 KB under ASan, so 1000 levels fit well within a default 8 MB stack.
    size_t max_depth = 1000;
    size_t max_size = 256u << 20;  // bytes of one encoded term (after decompression)
    size_t max_atom_chars = 255;   // Erlang's own atom limit; larger values act as 255
    // A compressed term (tag 80) may declare at most max_inflated bytes, and at most
    // max_expansion times its own size once that is above expansion_floor. Both are
    // checked against the declared size before anything is inflated.
    size_t max_inflated = 8u << 20;
    size_t max_expansion = 64;
    size_t expansion_floor = 256u << 10;
    // decode() charges every allocation of the Term it builds (72 bytes an element,
    // plus the bytes of binaries, bignums, long atoms and funs) and refuses a term
    // that needs more than max(memory_floor, memory_ratio x its encoded size, after
    // inflating). A list of a million one-byte elements ([] or small integers)
    // needs 72 MB: raise the limits to decode such terms. memory_ratio 0: no limit.
    size_t memory_floor = 64u << 20;
    size_t memory_ratio = 4;
};

struct DecodeError {
    std::string message;  // empty when decoding succeeded
    size_t offset = 0;    // byte offset in the input where the problem was found
    explicit operator bool() const { return !message.empty(); }
};

// Decodes one whole term (starting with the version byte 131; compressed terms,
// tag 80, are inflated). Trailing bytes are an error; on any error `out` is
// left unchanged. Accepts what OTP 25's binary_to_term/1 accepts of every tag it
// writes outside the distribution header (atom cache refs, old FUN_EXT and
// DIST_HEADER are errors that name the tag), within the limits. Maps come out
// with pairs in compare_exact key order; duplicate keys, invalid UTF-8 atoms and
// NaN/infinite floats are errors, as in Erlang, and so are refs without id words
// (OTP 25 refuses them as map keys). Funs keep the bytes term_to_binary/1 would
// write for them (see Fun in term.h); a bit string of whole bytes is a Binary.
// For a compressed term, a declared size over max_size, max_inflated or the
// expansion limit is refused before any inflating (offset 2), zlib errors report
// offset 6, and errors in the inflated term offset 1 (the message gives the
// offset within the inflated data).
DecodeError decode(std::string_view bytes, Term& out, const Limits& limits = {});

// What decode() would say of `bytes`, without building the term: the same error
// (message and offset) or none, except that the memory limits do not apply (check
// builds nothing). Costs O(bytes) time and O(depth) memory, plus the inflated
// bytes of a compressed term and, for a map whose keys are not in order on the
// wire, one offset per key; the search for duplicate map keys sorts them, comparing
// keys over their bytes, and a map inside keys has its pairs sorted once and kept
// (two offsets per pair) for every comparison after. With `unique_keys` false that
// search is left out (as rewrite_floats() does) and the cost is O(bytes) whatever
// the shape: for bytes bertd only passes on, whose reader refuses duplicate keys itself.
DecodeError check(std::string_view bytes, const Limits& limits = {}, bool unique_keys = true);

// How floats go out: NEW_FLOAT_EXT (tag 70, 8 bytes of IEEE 754, what
// term_to_binary/1 writes), or FLOAT_EXT (tag 99, 31 bytes of "%.20e" text, what
// term_to_binary(T, [{minor_version, 0}]) writes and all Ernie-era libraries such
// as the bert gem read).
enum class FloatForm : uint8_t { New, Ernie };

struct EncodeOptions {
    FloatForm floats = FloatForm::New;
};

// Encodes with the version byte, byte-identical to term_to_binary/1 of OTP 25
// (to term_to_binary(T, [{minor_version, 0}]) with FloatForm::Ernie) for every
// term Erlang can hold, with maps of up to 32 keys (Erlang writes larger maps in
// hash order; they are written here in key order, which Erlang reads back as the
// same map). Atom text that is not valid UTF-8 is taken as latin-1. Pids, refs
// and ports go out as NEW_PID, NEWER_REFERENCE and NEW_PORT (V4_PORT above
// 28-bit ids), as OTP 25 writes them; a fun as its bytes, whatever they hold.
std::string encode(const Term& t, const EncodeOptions& options = {});
void encode_append(const Term& t, std::string& out,
                   const EncodeOptions& options = {});                  // appends, with version byte
size_t encoded_size(const Term& t, const EncodeOptions& options = {});  // what encode() returns, in bytes

// Rewrites every float of the encoded term `payload` (version byte first, as
// decode() takes it) to the form `to`: NEW_FLOAT_EXT to FLOAT_EXT with
// FloatForm::Ernie, FLOAT_EXT to NEW_FLOAT_EXT with FloatForm::New; floats
// already in that form and every other byte are copied as they are. The request
// path's way to give Ernie-era clients and handlers the floats they read, without
// building a Term. Floats in funs' environments are rewritten too (the fun's size
// field follows).
//
// On success the new term (version byte first) is appended to `out` and
// `*rewritten` (when given) is set to the number of floats whose form changed. A
// compressed payload (tag 80) comes out inflated, whether or not it held a float.
//
// The payload gets check()'s checks under `limits` (depth, size, atoms, floats,
// decompression limits...), and a problem is returned with check()'s message and
// offset; then `out` and `*rewritten` are unchanged. One check is left out: the
// search for duplicate map keys, which costs O(keys log keys) when the keys are
// not in order on the wire. A map with duplicate keys is copied as it is, and
// whoever reads the output refuses it, as it would have refused the input.
//
// Cost: O(payload) time, whatever the term's shape (a compressed term: plus its
// inflated bytes); memory O(depth) beyond the output, which is less than 32/9 of
// the (inflated) payload with FloatForm::Ernie (each 9-byte NEW_FLOAT_EXT becomes
// a 32-byte FLOAT_EXT) and no longer than it with FloatForm::New. The result is
// built in a string reserved at that size once (the pages it does not fill are
// never touched: address space, not memory), and moved into an empty `out`.
// Pass the limits the payload came in under (a frame's max_frame as max_size),
// and check out's size against what may be sent on.
//
//     std::string rewritten;
//     size_t n = 0;
//     if (bert::DecodeError e = bert::rewrite_floats(payload, bert::FloatForm::Ernie, rewritten, limits, &n))
//         return protocol_error("unable to read data: " + e.message);  // e.offset: where
//     if (n > 0) payload = rewritten;  // else the original bytes (compressed or not) stand
DecodeError rewrite_floats(std::string_view payload, FloatForm to, std::string& out,
                           const Limits& limits = {}, size_t* rewritten = nullptr);

// Where one term lies in an encoded term's bytes: [at, end).
struct Span {
    size_t at = 0, end = 0;
    size_t size() const { return end - at; }
};

// The elements of the tuple at offset `at` of `payload` (an encoded term, version
// byte first, not compressed), which must end where `payload` ends: their spans,
// in order, each walked with check()'s checks under `limits` (nesting counted from
// the tuple, so up to `at`'s own depth deeper than decode() would allow), but for
// the search for duplicate map keys (see check()). Builds
// no Term: O(payload) time, O(depth) memory beyond `out`, whatever the shape, so
// the request path can take a handler's {reply, Result} or a native function's
// {bert_rpc_info, Infos, Result} apart without decoding Result. On error `out`
// may hold the spans read before it.
DecodeError tuple_elements(std::string_view payload, size_t at, std::vector<Span>& out,
                           const Limits& limits = {});

// Whether the bytes at `s` of `payload` are exactly the atom `name` (any of the four atom
// tags, its length field included). Never reads outside `payload`, whatever `s` says.
bool is_atom_at(std::string_view payload, Span s, std::string_view name);

// What the bytes of a fun say. Text is UTF-8.
struct FunInfo {
    bool exported = false;  // fun Module:Function/Arity (EXPORT_EXT); otherwise a closure
    std::string module;
    std::string function;  // exports only
    uint32_t arity = 0;
    // Closures only, as NEW_FUN_EXT holds them. Erlang shows a closure as
    // #Fun<Module.OldIndex.OldUniq> and orders closures by module, index,
    // old_uniq, then their free variables.
    std::string uniq;  // 16 bytes: the MD5 of the module's code
    uint32_t index = 0;
    int32_t old_index = 0, old_uniq = 0;
    uint32_t free_vars = 0;
    Pid pid;  // the process that made it
};

// The fields of `f`; nullopt unless its bytes hold exactly one fun that decode()
// would accept.
std::optional<FunInfo> fun_info(const Fun& f);

// fun Module:Function/Arity, as term_to_binary/1 writes it.
Term export_fun(std::string_view module, std::string_view function, uint8_t arity);

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
