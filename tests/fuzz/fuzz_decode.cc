// fuzz_decode.cc: libFuzzer target for bert::decode on arbitrary bytes. Whatever
// decodes must re-encode canonically: decoding the encoding gives the same term,
// and encoding again gives the same bytes. It aborts on any disagreement and
// never allocates beyond the limits it sets.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "bert/codec.h"
#include "bert/term.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view in(reinterpret_cast<const char*>(data), size);
    bert::Limits limits;
    limits.max_size = 1u << 20;  // compressed inputs may not inflate past this
    bert::Term t;
    bert::DecodeError e = bert::decode(in, t, limits);
    bert::Peek pk;
    if (bert::peek(in, pk) && pk.args_offset >= size) abort();
    if (e) {
        if (e.offset > size) abort();
        return 0;
    }
    std::string enc = bert::encode(t);
    if (enc.size() != bert::encoded_size(t)) abort();
    bert::Limits loose = limits;
    loose.max_size = SIZE_MAX;  // a canonical encoding may be longer than its input
    bert::Term back;
    if (bert::decode(enc, back, loose)) abort();
    if (!(back == t) || bert::compare(back, t) != 0 || bert::compare_exact(back, t) != 0) abort();
    if (bert::encode(back) != enc) abort();
    return 0;
}
