// wire.h: the external term format's tags, limits and byte readers, shared by the
// codec's parts (decode, encode, peek, scan). Internal to src/bert: callers use
// codec.h. Nothing here reads a byte it was not given.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "bert/codec.h"

namespace bert::detail {

enum Tag : unsigned char {
    kNewFloat = 70,
    kBitBinary = 77,
    kCompressed = 80,
    kAtomCacheRef = 82,
    kNewPid = 88,
    kNewPort = 89,
    kNewerReference = 90,
    kSmallInteger = 97,
    kInteger = 98,
    kFloat = 99,
    kAtom = 100,
    kReference = 101,
    kPort = 102,
    kPid = 103,
    kSmallTuple = 104,
    kLargeTuple = 105,
    kNil = 106,
    kString = 107,
    kList = 108,
    kBinary = 109,
    kSmallBig = 110,
    kLargeBig = 111,
    kNewFun = 112,
    kExport = 113,
    kNewReference = 114,
    kSmallAtom = 115,
    kMap = 116,
    kFun = 117,
    kAtomUtf8 = 118,
    kSmallAtomUtf8 = 119,
    kV4Port = 120,
    kLocal = 121,
};

// Old-format pids, ports and refs carry a 2-bit creation; Erlang refuses more.
constexpr unsigned kMaxOldCreation = 3;
// Old-format refs keep 18 bits in their first id word.
constexpr uint32_t kMaxOldRefId = 0x3ffff;
// Erlang refs hold at most 5 id words, and so does ei's erlang_ref.
constexpr size_t kMaxRefIds = 5;
// OTP 25 writes NEW_PORT up to this id and V4_PORT above.
constexpr uint64_t kMaxNewPortId = 0x0fffffff;

inline uint32_t be16(const unsigned char* p) { return (uint32_t{p[0]} << 8) | p[1]; }
inline uint32_t be32(const unsigned char* p) {
    return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

// Strict UTF-8 as Erlang accepts it in atoms: no overlong forms, no surrogates,
// nothing above U+10FFFF. Counts characters and notes whether all fit latin-1.
bool scan_utf8(const unsigned char* s, size_t n, size_t& chars, bool& latin1);

// The text of an old FLOAT_EXT as Erlang reads it: [+-]digits(.|,)digits, an
// optional exponent, then NUL padding (or the end of the 31 bytes).
bool old_float_text_ok(const char* s);

// A FLOAT_EXT: its tag and 31 bytes of text.
constexpr size_t kFloatExtSize = 32;

// Writes the kFloatExtSize bytes of a FLOAT_EXT for d, as
// term_to_binary(T, [{minor_version, 0}]) does (encode.cc).
void put_ernie_float(char* out, double d);

// The bytes term_to_binary/1 writes for the fun `f` with free variables `env`
// (encode.cc; the decoder keeps funs in this form).
std::string fun_bytes(const FunInfo& f, const std::vector<Term>& env);

// --- the term order's parts, for terms and encoded bytes alike ---

// Erlang's order of two funs (fun.cc, for term.cc), and of their fields (the
// free variables aside: they compare next, in order).
int compare_funs(const Fun& a, const Fun& b, bool exact);
int compare_fun_infos(const FunInfo& a, const FunInfo& b);

// A number as the term order sees it: an int64_t, a bignum (its sign and
// magnitude, little-endian without high zero bytes, outside int64_t), or a float.
struct NumView {
    enum class Kind : uint8_t { Int, Big, Float } kind = Kind::Int;
    int64_t i = 0;
    double d = 0;
    bool negative = false;
    std::string_view magnitude;
};
int compare_numbers(const NumView& a, const NumView& b, bool exact);  // term.cc

// A binary or bit string: its bytes and how many bits of them count.
struct BitsView {
    std::string_view bytes;
    size_t bits;
};
int compare_bits(const BitsView& a, const BitsView& b);  // term.cc

// The term order's rank of a term: numbers 0, atoms 1, refs 2, funs 3, ports 4,
// pids 5, tuples 6, maps 7, nil 8, lists 9, bit strings 10 (term.cc).
int rank_of(const Term& t);

// While one is alive on this thread, compare() and compare_exact() take every
// map's pairs to be in key order already, as decode() leaves them, and neither
// sort nor check them (term.cc). The decoder holds one while it sorts a map's
// keys: the maps inside those keys were sorted when they were read.
class MapsInKeyOrder {
public:
    MapsInKeyOrder();
    ~MapsInKeyOrder();
    MapsInKeyOrder(const MapsInKeyOrder&) = delete;
    MapsInKeyOrder& operator=(const MapsInKeyOrder&) = delete;
    static bool held();

private:
    bool outer_;
};

}  // namespace bert::detail
