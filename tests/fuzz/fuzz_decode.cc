// fuzz_decode.cc: libFuzzer target for bert::decode on arbitrary bytes, and for the
// walks that must agree with it: check() gives decode's very error or none,
// rewrite_floats() keeps the term (and gives decode's error, duplicate map keys
// aside), and whatever decodes must re-encode canonically (decoding the encoding
// gives the same term, encoding again the same bytes). An input starting with 'Z'
// is the rest compressed (tag 80), so that the fuzzer reaches inside compressed
// terms. It aborts on any disagreement and never allocates beyond the limits it
// sets (the smoke run caps RSS and mallocs).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "bert/codec.h"
#include "bert/term.h"
#include "fuzz_input.h"

namespace {

bool same(const bert::DecodeError& a, const bert::DecodeError& b) {
    return a.message == b.message && a.offset == b.offset;
}

// rewrite_floats to each form keeps the term, and turns canonical bytes into
// what encode() writes in that form.
void check_rewrites(std::string_view in, const bert::Term& t, const bert::Limits& limits, bool canonical) {
    for (bert::FloatForm form : {bert::FloatForm::Ernie, bert::FloatForm::New}) {
        std::string out;
        if (bert::rewrite_floats(in, form, out, limits)) abort();
        bert::Limits loose = limits;
        loose.max_size = SIZE_MAX;
        bert::Term back;
        if (bert::decode(out, back, loose) || !(back == t)) abort();
        if (canonical && out != bert::encode(t, {form})) abort();
    }
}

// On bytes decode() refuses, rewrite_floats() gives the same error, except that
// it does not look for duplicate map keys: it copies them (and decoding its
// output finds them), or finds another problem past them.
void check_failed_rewrite(std::string_view in, const bert::DecodeError& full, const bert::Limits& limits) {
    std::string out;
    bert::DecodeError r = bert::rewrite_floats(in, bert::FloatForm::Ernie, out, limits);
    if (full.message.find("duplicate map key") == std::string::npos) {
        if (!same(r, full)) abort();
        return;
    }
    if (r) return;
    bert::Limits loose = limits;
    loose.max_size = SIZE_MAX;
    bert::Term t;
    if (bert::decode(out, t, loose).message.find("duplicate map key") == std::string::npos) abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    fuzz::Input input(data, size);
    std::string_view in = input.bytes();
    bert::Limits limits = fuzz::limits();
    bert::Term t;
    bert::DecodeError e = bert::decode(in, t, limits);
    bert::Peek pk;
    if (bert::peek(in, pk) && pk.args_offset >= in.size()) abort();
    // check() and rewrite_floats() see what decode() sees, memory limits aside.
    bert::Limits unbounded = limits;
    unbounded.memory_ratio = 0;
    bert::Term whole;
    bert::DecodeError full =
        e && e.message.find("bytes of memory") != std::string::npos ? bert::decode(in, whole, unbounded) : e;
    if (!same(bert::check(in, unbounded), full)) abort();
    if (full) check_failed_rewrite(in, full, unbounded);
    if (e) {
        if (e.offset > in.size()) abort();
        return 0;
    }
    std::string enc = bert::encode(t);
    if (enc.size() != bert::encoded_size(t)) abort();
    if (bert::encoded_size(t, {bert::FloatForm::Ernie}) != bert::encode(t, {bert::FloatForm::Ernie}).size())
        abort();
    check_rewrites(in, t, limits, enc == in);
    bert::Limits loose = limits;
    loose.max_size = SIZE_MAX;  // a canonical encoding may be longer than its input
    loose.memory_ratio = 0;
    bert::Term back;
    if (bert::decode(enc, back, loose)) abort();
    if (!(back == t) || bert::compare(back, t) != 0 || bert::compare_exact(back, t) != 0) abort();
    if (bert::encode(back) != enc) abort();
    return 0;
}
