// peek.cc: what the request path needs from a BERP payload (kind, module,
// function, arity), read without decoding the arguments. It never allocates and
// never reads past the payload.
#include "bert/codec.h"
#include "bert/wire.h"

namespace bert {
namespace {

using namespace detail;

// --- peek ------------------------------------------------------------------

struct Cursor {
    const unsigned char* p;
    size_t n;
    size_t pos;
    size_t left() const { return n - pos; }
};

constexpr size_t kMaxAtomChars = 255;

bool peek_atom(Cursor& c, std::string_view& out, bool& latin1) {
    if (c.left() < 2) return false;
    unsigned tag = c.p[c.pos];
    size_t header, len;
    if (tag == kSmallAtom || tag == kSmallAtomUtf8) {
        header = 2;
        len = c.p[c.pos + 1];
    } else if (tag == kAtom || tag == kAtomUtf8) {
        if (c.left() < 3) return false;
        header = 3;
        len = be16(c.p + c.pos + 1);
    } else {
        return false;
    }
    if (c.left() - header < len) return false;
    const unsigned char* text = c.p + c.pos + header;
    // Erlang's limit of 255 characters, as decode's: a longer name is no term Erlang
    // could have written, and must not be echoed back in an error answer.
    if (len > kMaxAtomChars) {
        if (tag == kAtom) return false;
        size_t chars = 0;
        for (size_t i = 0; i < len; ++i) chars += (text[i] & 0xC0) != 0x80;
        if (chars > kMaxAtomChars) return false;
    }
    out = std::string_view(reinterpret_cast<const char*>(text), len);
    latin1 = false;
    if (tag == kAtom || tag == kSmallAtom)
        for (size_t i = 0; i < len; ++i) latin1 |= text[i] >= 0x80;
    c.pos += header + len;
    return true;
}

bool peek_list_header(Cursor& c, uint32_t& arity) {
    if (c.left() < 1) return false;
    switch (c.p[c.pos]) {
        case kNil: arity = 0; return true;
        case kString:
            if (c.left() < 3) return false;
            arity = be16(c.p + c.pos + 1);
            return c.left() - 3 >= arity;
        case kList:
            if (c.left() < 5) return false;
            arity = be32(c.p + c.pos + 1);
            return c.left() - 5 > arity;  // each element takes a byte, and so does the tail
    }
    return false;
}

}  // namespace

bool peek(std::string_view payload, Peek& out) {
    out = Peek{};
    Cursor c{reinterpret_cast<const unsigned char*>(payload.data()), payload.size(), 0};
    if (c.n < 3 || c.p[0] != kVersion || c.p[1] != kSmallTuple) return false;
    unsigned arity = c.p[2];
    if (arity != 3 && arity != 4) return false;
    c.pos = 3;
    std::string_view first;
    bool latin1;
    if (!peek_atom(c, first, latin1)) return false;
    Peek r;
    if (arity == 4 && first == "call")
        r.kind = Peek::Kind::Call;
    else if (arity == 4 && first == "cast")
        r.kind = Peek::Kind::Cast;
    else if (arity == 3 && first == "info")
        r.kind = Peek::Kind::Info;
    else
        return false;
    if (!peek_atom(c, r.module, r.module_latin1)) return false;
    if (r.kind != Peek::Kind::Info && !peek_atom(c, r.function, r.function_latin1)) return false;
    r.args_offset = c.pos;
    // An info's options may be any term ({info, priority, low} in Ernie's README,
    // [low] in the spec); a call's or cast's arguments must be a list.
    if (!peek_list_header(c, r.arity)) {
        // The caller decodes an info's options; they must at least be there.
        if (r.kind != Peek::Kind::Info || c.left() == 0) return false;
        r.arity = 0;
    }
    out = r;
    return true;
}

}  // namespace bert
