// inflate.cc: see inflate.h. Built on the decoder's own prologue check and inflater, so a
// request and a decoded term obey the same limits.
#include "bert/inflate.h"

#include "bert/decoder.h"
#include "bert/wire.h"

namespace bert {

bool is_compressed(std::string_view payload) {
    return payload.size() >= 2 && uint8_t(payload[0]) == kVersion && uint8_t(payload[1]) == detail::kCompressed;
}

DecodeError inflate_payload(std::string_view payload, std::string& out, const Limits& limits) {
    size_t declared = 0;
    if (DecodeError e = detail::check_prologue(payload, limits, declared)) return e;
    if (declared == 0) return DecodeError{"not a compressed term", 1};
    std::string error;
    std::string plain =
        detail::inflate_term(reinterpret_cast<const unsigned char*>(payload.data()) + 6, payload.size() - 6, declared, error);
    if (!error.empty()) return DecodeError{error, 6};
    out.push_back(char(kVersion));
    out += plain;
    return {};
}

}  // namespace bert
