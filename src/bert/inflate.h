// inflate.h: a compressed term (tag 80) made plain, for the request path, which reads
// requests by peeking at their bytes. Its declared size is checked against the limits
// before anything is inflated; it never inflates past that size.
#pragma once

#include <string>
#include <string_view>

#include "bert/codec.h"

namespace bert {

// True when `payload` (version byte first) is a compressed term.
bool is_compressed(std::string_view payload);

// The plain payload (version byte, then the term) of the compressed `payload`, appended
// to `out`, under decode()'s checks of max_size, max_inflated and max_expansion. The
// inflated term itself is not checked (peek and check do that).
DecodeError inflate_payload(std::string_view payload, std::string& out, const Limits& limits = {});

}  // namespace bert
