// fuzz_print.cc: libFuzzer target for bert::print_encoded, the printer that reads
// encoded bytes without building the term. On any bytes it must stay within its
// budget and fail cleanly; on bytes that decode, it must write exactly what
// print() writes for the decoded term, at every cut. An input starting with 'Z'
// is the rest compressed (tag 80). The smoke run caps RSS and mallocs, so a
// printer that built the term (or inflated without bound) is a failure too.
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "bert/codec.h"
#include "bert/printer.h"
#include "bert/term.h"

namespace {

std::string compressed(std::string_view inner) {
    uLongf n = compressBound(inner.size());
    std::string z(n, '\0');
    compress(reinterpret_cast<Bytef*>(z.data()), &n, reinterpret_cast<const Bytef*>(inner.data()),
             inner.size());
    z.resize(n);
    std::string out = {char(131), char(80)};
    for (int k = 3; k >= 0; --k) out.push_back(static_cast<char>(inner.size() >> (8 * k)));
    return out + z;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view in(reinterpret_cast<const char*>(data), size);
    std::string zipped;
    if (!in.empty() && in[0] == 'Z') {
        zipped = compressed(in.substr(1));
        in = zipped;
    }
    bert::Limits limits;
    limits.max_size = 1u << 20;
    limits.max_inflated = 1u << 20;
    limits.memory_floor = 16u << 20;
    bert::Term t;
    bool decoded = !bert::decode(in, t, limits);
    size_t cuts[] = {1 + size % 97, 4096, size < 2048 ? size_t(0) : 2048};
    for (size_t max : cuts) {
        std::string text = "prefix:";
        bert::DecodeError e = bert::print_encoded(in, text, max, limits);
        if (e && text != "prefix:") abort();  // unchanged on error
        if (!e && max > 0 && text.size() > 7 + max) abort();
        if (decoded && (e || text.substr(7) != bert::to_string(t, max))) abort();
    }
    return 0;
}
