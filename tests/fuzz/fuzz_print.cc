// fuzz_print.cc: libFuzzer target for bert::print_encoded, the printer that reads
// encoded bytes without building the term. On any bytes it must stay within its
// budget and fail cleanly; on bytes that decode, it must write exactly what
// print() writes for the decoded term, at every cut. An input starting with 'Z'
// is the rest compressed (tag 80). The smoke run caps RSS and mallocs, so a
// printer that built the term (or inflated without bound) is a failure too.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "bert/codec.h"
#include "bert/printer.h"
#include "bert/term.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    fuzz::Input input(data, size);
    std::string_view in = input.bytes();
    bert::Limits limits = fuzz::limits();
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
