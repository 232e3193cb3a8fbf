// matrix_values.h: what the C++ matrix handler and client share: the value table (each value decoded
// on its own) and an exact equality (the codec's bytes, which are canonical: -0.0 is not 0.0, 1 is
// not 1.0). Test code only; never lenient.
#pragma once

#include <fstream>
#include <iterator>
#include <map>
#include <string>

#include "bert/codec.h"
#include "bert/printer.h"
#include "bert/term.h"

namespace matrix {

struct Table {
    std::map<std::string, bert::Term> values;   // by name
    std::map<std::string, std::string> errors;  // names this codec could not decode, and why
    std::string error;                          // the file itself could not be read
};

// Decodes the one term in the file at `path`; false when it cannot be read or decoded.
inline bool read_term(const std::string& path, bert::Term& out, std::string& error) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        error = "cannot read " + path;
        return false;
    }
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (bert::DecodeError err = bert::decode(bytes, out)) {
        error = path + ": " + err.message;
        return false;
    }
    return true;
}

inline Table load_table(const std::string& path) {
    Table t;
    bert::Term entries;
    if (!read_term(path, entries, t.error)) return t;
    if (!entries.is_proper_list()) {
        t.error = path + ": not a list";
        return t;
    }
    for (const bert::Term& e : entries.items()) {
        bert::Term v;
        if (bert::DecodeError err = bert::decode(e[1].bytes(), v))
            t.errors[e[0].bytes()] = err.message;
        else
            t.values.emplace(e[0].bytes(), std::move(v));
    }
    return t;
}

inline bool same(const bert::Term& a, const bert::Term& b) { return bert::encode(a) == bert::encode(b); }

inline std::string short_text(const bert::Term& t) { return bert::to_string(t, 200); }

}  // namespace matrix
