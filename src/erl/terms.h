// terms.h: small term helpers the link's files share: a call from the Erlang side
// as a BERP, how it is named in log lines, the server error it gets, names (nodes,
// modules, registered names) given as atoms, binaries or strings, and the limits under
// which the link decodes what others send it. Nothing here decodes without limits.
#pragma once

#include <algorithm>
#include <string>
#include <string_view>

#include "bert/codec.h"
#include "bert/frame.h"
#include "bert/term.h"

namespace bertd::erl {

// The limits of every term the link decodes from a party it does not trust (a handler's
// request, an external worker's answer, a result or answer from an Erlang node): the
// codec's nesting (1000 levels), at most max_frame bytes once inflated, inflating bounded
// by max_inflated and the codec's expansion ratio (64x), and the Term it builds by the
// codec's memory budget (max(64 MB, 4x the encoded size)). A term over them is refused
// before it holds the memory, whatever its shape: the bound of what one costs the link.
inline bert::Limits untrusted_limits(size_t max_frame, size_t max_inflated) {
    bert::Limits l;
    l.max_size = max_frame;
    l.max_inflated = std::min(max_inflated, max_frame);
    return l;
}

// A decode error in the words of bertd's config.
// A result as rpc's answers carry it (the term's bytes without the version byte), as a
// whole external term again.
inline std::string versioned(std::string_view result) {
    std::string bytes(1, char(bert::kVersion));
    bytes.append(result);
    return bytes;
}

inline std::string unreadable(const bert::DecodeError& e) {
    const std::string& m = e.message;
    if (m.find("bytes of memory") != std::string::npos)
        return m.substr(0, m.find(" (Limits::")) + " (a term of too many elements)";
    if (m.find("max_inflated") != std::string::npos) return m + " (limits.max_inflated)";
    if (m.find("exceed max_size") != std::string::npos || m.find("above max_size") != std::string::npos)
        return m + " (limits.max_frame)";
    return m;
}

// "ext:add/2" for log lines.
inline std::string describe(const bert::Term& m, const bert::Term& f, const bert::Term& a) {
    return (m.is_atom() ? m.atom_name() : "?") + ":" + (f.is_atom() ? f.atom_name() : "?") + "/" +
           std::to_string(a.is_proper_list() ? a.size() : 0);
}

// The framed BERP {call|cast, M, F, A}.
inline std::string request_frame(bool cast, const bert::Term& m, const bert::Term& f, const bert::Term& a) {
    std::string frame;
    bert::append_frame(frame,
                       bert::encode(bert::Term::tuple({bert::Term::atom(cast ? "cast" : "call"), m, f, a})));
    return frame;
}

inline bert::Term server_error(const std::string& detail) {
    return bert::Term::tuple({bert::Term::atom("server"), bert::Term(0), bert::Term::binary("ServerError"),
                              bert::Term::binary(detail), bert::Term::nil()});
}

inline bert::Term badrpc(bert::Term reason) {
    return bert::Term::tuple({bert::Term::atom("badrpc"), reason});
}

// A node, module, function or registered name given as an atom, a binary or a
// string; "" for nil (and the atoms nil and undefined). False for anything else.
inline bool name_of(const bert::Term& t, std::string& out) {
    out.clear();
    if (t.is_atom()) {
        out = t.atom_name();
        if (out == "nil" || out == "undefined") out.clear();
        return true;
    }
    if (t.is_binary()) {
        out = t.bytes();
        return true;
    }
    if (t.is_nil() || bert::complex::is_nil(t)) return true;
    if (t.is_proper_list()) {
        for (const auto& c : t.items()) {
            if (!c.is_int() || c.as_int() <= 0 || c.as_int() > 255) return false;
            out.push_back(char(c.as_int()));
        }
        return true;
    }
    return false;
}

// The function a message to a name a worker registered is cast to, with [Name, Msg]:
// the handler libraries run the function the worker registered for Name.
constexpr const char* kProcessFunction = "$bertd_message";

}  // namespace bertd::erl
