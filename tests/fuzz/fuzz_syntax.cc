// fuzz_syntax.cc: libFuzzer target for the Erlang-syntax parser and printer. Any input
// must parse or fail cleanly, and whatever parses must print to text that parses back
// to the same term and prints the same again. It checks; it never writes files.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "bert/parser.h"
#include "bert/printer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    std::vector<bert::Term> terms;
    (void)bert::parse_dotted(text, terms);
    bert::Term t;
    if (bert::parse(text, t)) return 0;
    std::string printed = bert::to_string(t);
    bert::Term back;
    if (bert::parse(printed, back) || !(back == t)) abort();
    if (bert::to_string(back) != printed) abort();
    size_t max = 1 + size % 64;
    if (bert::to_string(t, max).size() > max) abort();
    return 0;
}
