// frame.h: BERP framing, a 4-byte big-endian length and that many bytes of BERT.
// Pure functions over a buffer; the caller owns the bytes and the I/O.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace bert {

constexpr size_t kFrameHeader = 4;

struct FrameScan {
    enum class State : uint8_t { NeedMore, Complete, TooLarge } state = State::NeedMore;
    uint32_t length = 0;  // payload length, once the header is in
};

// Looks at the start of `buf`: is a whole frame there, is more needed, or does
// the header announce a payload above `max_payload`?
inline FrameScan scan_frame(std::string_view buf, size_t max_payload) {
    FrameScan s;
    if (buf.size() < kFrameHeader) return s;
    const auto* p = reinterpret_cast<const unsigned char*>(buf.data());
    s.length = (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
    if (s.length > max_payload)
        s.state = FrameScan::State::TooLarge;
    else if (buf.size() - kFrameHeader >= s.length)
        s.state = FrameScan::State::Complete;
    return s;
}

inline void put_frame_header(char* dst, uint32_t length) {
    dst[0] = static_cast<char>(length >> 24);
    dst[1] = static_cast<char>(length >> 16);
    dst[2] = static_cast<char>(length >> 8);
    dst[3] = static_cast<char>(length);
}

// Appends a whole frame holding `payload` to `out`.
inline void append_frame(std::string& out, std::string_view payload) {
    char h[kFrameHeader];
    put_frame_header(h, static_cast<uint32_t>(payload.size()));
    out.append(h, kFrameHeader);
    out.append(payload);
}

}  // namespace bert
