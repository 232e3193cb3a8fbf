// terms.h: small term helpers the link's files share: a call from the Erlang side
// as a BERP, how it is named in log lines, the server error it gets, and names
// (nodes, modules, registered names) given as atoms, binaries or strings.
#pragma once

#include <string>

#include "bert/codec.h"
#include "bert/frame.h"
#include "bert/term.h"

namespace bertd::erl {

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
