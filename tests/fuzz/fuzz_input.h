// fuzz_input.h: what fuzz_decode and fuzz_print share: the fuzzer's bytes as an
// encoded term (an input starting with 'Z' is the rest compressed, tag 80, so the
// fuzzer reaches inside compressed terms) and the decode limits both run under,
// which keep any input from inflating or allocating past 1 MiB of term.
#pragma once

#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "bert/codec.h"

namespace fuzz {

inline std::string compressed(std::string_view inner) {
    uLongf n = compressBound(inner.size());
    std::string z(n, '\0');
    compress(reinterpret_cast<Bytef*>(z.data()), &n, reinterpret_cast<const Bytef*>(inner.data()),
             inner.size());
    z.resize(n);
    std::string out = {char(131), char(80)};
    for (int k = 3; k >= 0; --k) out.push_back(static_cast<char>(inner.size() >> (8 * k)));
    return out + z;
}

// The bytes to decode, owning the compressed form when the input asked for one.
class Input {
public:
    Input(const uint8_t* data, size_t size) : bytes_(reinterpret_cast<const char*>(data), size) {
        if (!bytes_.empty() && bytes_[0] == 'Z') {
            zipped_ = compressed(bytes_.substr(1));
            bytes_ = zipped_;
        }
    }
    Input(const Input&) = delete;
    Input& operator=(const Input&) = delete;
    std::string_view bytes() const { return bytes_; }

private:
    std::string zipped_;
    std::string_view bytes_;
};

inline bert::Limits limits() {
    bert::Limits l;
    l.max_size = 1u << 20;  // compressed inputs may not inflate past this
    l.max_inflated = 1u << 20;
    l.memory_floor = 16u << 20;
    return l;
}

}  // namespace fuzz
