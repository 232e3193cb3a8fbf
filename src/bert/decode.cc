// decode.cc: BERT bytes -> Term (decode()), compressed terms included. It never
// reads past its input (every header and payload length is checked before ei,
// memcpy or zlib sees the bytes) and never aborts on bad input: every problem
// becomes a DecodeError.
#include <zlib.h>

#include <climits>
#include <new>

#include "bert/codec.h"
#include "bert/decoder.h"

namespace bert {
namespace detail {

bool scan_utf8(const unsigned char* s, size_t n, size_t& chars, bool& latin1) {
    chars = 0;
    latin1 = true;
    for (size_t i = 0; i < n; ++chars) {
        unsigned c = s[i];
        uint32_t cp;
        size_t len;
        if (c < 0x80) {
            cp = c;
            len = 1;
        } else if (c >= 0xc2 && c <= 0xdf) {
            cp = c & 0x1f;
            len = 2;
        } else if (c >= 0xe0 && c <= 0xef) {
            cp = c & 0x0f;
            len = 3;
        } else if (c >= 0xf0 && c <= 0xf4) {
            cp = c & 0x07;
            len = 4;
        } else {
            return false;
        }
        if (n - i < len) return false;
        for (size_t k = 1; k < len; ++k) {
            if ((s[i + k] & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        if (cp > 0xff) latin1 = false;
        i += len;
    }
    return true;
}

bool old_float_text_ok(const char* s) {
    auto digits = [&s] {
        const char* b = s;
        while (*s >= '0' && *s <= '9') ++s;
        return s != b;
    };
    if (*s == '+' || *s == '-') ++s;
    if (!digits()) return false;
    if (*s != '.' && *s != ',') return false;
    ++s;
    if (!digits()) return false;
    if (*s == 'e' || *s == 'E') {
        ++s;
        if (*s == '+' || *s == '-') ++s;
        if (!digits()) return false;
    }
    return *s == '\0';
}

std::string inflate_term(const unsigned char* data, size_t n, size_t declared, std::string& error) {
    std::string out;
    if (n > UINT_MAX) {
        error = "compressed data too large";
        return out;
    }
    z_stream zs{};
    if (inflateInit(&zs) != Z_OK) {
        error = "zlib initialisation failed";
        return out;
    }
    struct Guard {
        z_stream* z;
        ~Guard() { inflateEnd(z); }
    } guard{&zs};
    zs.next_in = const_cast<Bytef*>(data);
    zs.avail_in = static_cast<uInt>(n);
    size_t cap = std::min(declared, std::max<size_t>(n * 4, 4096));
    out.resize(cap);
    for (;;) {
        zs.next_out = reinterpret_cast<Bytef*>(out.data()) + zs.total_out;
        zs.avail_out = static_cast<uInt>(std::min<size_t>(cap - zs.total_out, UINT_MAX));
        int r = inflate(&zs, Z_NO_FLUSH);
        if (r == Z_STREAM_END) break;
        if (r != Z_OK && r != Z_BUF_ERROR) {
            error = std::string("zlib: ") + (zs.msg ? zs.msg : "corrupt data");
            return out;
        }
        if (zs.total_out == cap) {
            if (cap == declared) {
                error = "compressed data inflates beyond its declared size " + std::to_string(declared);
                return out;
            }
            cap = std::min(declared, cap * 2);
            out.resize(cap);
        } else if (zs.avail_in == 0 || r == Z_BUF_ERROR) {
            error = "compressed data is truncated";
            return out;
        }
    }
    if (zs.total_out != declared) {
        error = "compressed data inflates to " + std::to_string(zs.total_out) + " bytes, declared " +
                std::to_string(declared);
    } else if (zs.avail_in != 0) {
        error = "trailing bytes after the compressed data";
    }
    out.resize(zs.total_out);
    return out;
}

DecodeError check_prologue(std::string_view bytes, const Limits& limits, size_t& declared) {
    declared = 0;
    if (bytes.empty()) return DecodeError{"empty input", 0};
    if (bytes.size() > limits.max_size)
        return DecodeError{std::to_string(bytes.size()) + " bytes exceed max_size", 0};
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
    if (p[0] != kVersion)
        return DecodeError{"bad version byte " + std::to_string(p[0]) + " (expected 131)", 0};
    if (bytes.size() < 2 || p[1] != kCompressed) return {};
    if (bytes.size() < 6) return DecodeError{"truncated compressed term header", bytes.size()};
    declared = be32(p + 2);
    auto refuse = [&](const std::string& why) {
        return DecodeError{"compressed term declares " + std::to_string(declared) + " bytes, " + why, 2};
    };
    if (declared > limits.max_size) return refuse("above max_size");
    if (declared == 0) return DecodeError{"compressed term declares 0 bytes", 2};
    if (declared > limits.max_inflated)
        return refuse("above max_inflated (" + std::to_string(limits.max_inflated) + ")");
    size_t ratio = bytes.size() > SIZE_MAX / std::max<size_t>(limits.max_expansion, 1)
                       ? SIZE_MAX
                       : bytes.size() * limits.max_expansion;
    if (declared > std::max(limits.expansion_floor, ratio))
        return refuse("more than max_expansion (" + std::to_string(limits.max_expansion) + ") times its " +
                      std::to_string(bytes.size()) + " bytes");
    return {};
}

DecodeError inflated_error(const DecodeError& e) {
    return DecodeError{e.message + " (at offset " + std::to_string(e.offset) + " of the inflated data)", 1};
}

}  // namespace detail

using namespace detail;

DecodeError decode(std::string_view bytes, Term& out, const Limits& limits) {
    try {
        size_t declared;
        if (DecodeError e = check_prologue(bytes, limits, declared)) return e;
        const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
        Term t;
        if (declared > 0) {
            std::string error;
            std::string inner = inflate_term(p + 6, bytes.size() - 6, declared, error);
            if (!error.empty()) return DecodeError{error, 6};
            Decoder d(reinterpret_cast<const unsigned char*>(inner.data()), inner.size(), 0, limits,
                      memory_budget(limits, inner.size()));
            if (!d.run(t)) return inflated_error(d.error);
        } else {
            Decoder d(p, bytes.size(), 1, limits, memory_budget(limits, bytes.size()));
            if (!d.run(t)) return d.error;
        }
        out = std::move(t);
        return {};
    } catch (const std::bad_alloc&) {
        return DecodeError{"out of memory", 0};
    }
}

}  // namespace bert
