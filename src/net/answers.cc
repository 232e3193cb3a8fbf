// answers.cc: encoding bertd's own answers and classifying workers' answers.
#include "net/answers.h"

#include "bert/codec.h"
#include "bert/frame.h"

namespace bertd {

std::string_view error_type_name(ErrorType t) {
    switch (t) {
        case ErrorType::Protocol: return "protocol";
        case ErrorType::Server: return "server";
        case ErrorType::User: return "user";
        case ErrorType::Proxy: return "proxy";
    }
    return "server";
}

std::string error_frame(ErrorType type, int code, std::string_view detail) {
    using bert::Term;
    std::string_view cls = type == ErrorType::Protocol ? "ProtocolError" : "ServerError";
    Term t = Term::tuple({Term::atom("error"),
                          Term::tuple({Term::atom(error_type_name(type)), Term(code), Term::binary(cls),
                                       Term::binary(detail), Term::nil()})});
    std::string out(bert::kFrameHeader, '\0');
    bert::encode_append(t, out);
    bert::put_frame_header(out.data(), uint32_t(out.size() - bert::kFrameHeader));
    return out;
}

const std::string& noreply_frame() {
    static const std::string f = [] {
        std::string out(bert::kFrameHeader, '\0');
        bert::encode_append(bert::Term::tuple({bert::Term::atom("noreply")}), out);
        bert::put_frame_header(out.data(), uint32_t(out.size() - bert::kFrameHeader));
        return out;
    }();
    return f;
}

namespace {
// Reads an atom at p (ATOM_EXT, SMALL_ATOM_EXT or their UTF-8 forms); advances p.
bool read_atom(const unsigned char*& p, const unsigned char* end, std::string_view& out) {
    if (p >= end) return false;
    size_t len, hdr;
    if (*p == 100 || *p == 118) {
        if (end - p < 3) return false;
        len = size_t(p[1]) << 8 | p[2];
        hdr = 3;
    } else if (*p == 115 || *p == 119) {
        if (end - p < 2) return false;
        len = p[1];
        hdr = 2;
    } else {
        return false;
    }
    if (size_t(end - p) < hdr + len) return false;
    out = std::string_view(reinterpret_cast<const char*>(p + hdr), len);
    p += hdr + len;
    return true;
}
}  // namespace

int answer_error_type(std::string_view payload) {
    auto* p = reinterpret_cast<const unsigned char*>(payload.data());
    auto* end = p + payload.size();
    if (end - p < 3 || p[0] != bert::kVersion || p[1] != 104) return int(ErrorType::Server);
    p += 3;
    std::string_view tag;
    if (!read_atom(p, end, tag)) return int(ErrorType::Server);
    if (tag == "reply" || tag == "noreply") return -1;
    if (tag != "error") return int(ErrorType::Server);
    if (end - p < 2 || p[0] != 104) return int(ErrorType::Server);
    p += 2;
    std::string_view type;
    if (!read_atom(p, end, type)) return int(ErrorType::Server);
    if (type == "protocol") return int(ErrorType::Protocol);
    if (type == "user") return int(ErrorType::User);
    if (type == "proxy") return int(ErrorType::Proxy);
    return int(ErrorType::Server);
}

}  // namespace bertd
