// rpc10.cc: cache infos and stream framing shared by the C++ handler and client libraries
// (see bertd/rpc10.h). No I/O here.
#include "bertd/rpc10.h"

#include <stdexcept>
#include <vector>

#include "bert/codec.h"
#include "bert/frame.h"

namespace bertd::rpc10 {

namespace {
using bert::Term;

std::string frame_of(const Term& t) {
    std::string out;
    bert::append_frame(out, bert::encode(t));
    return out;
}
}  // namespace

std::string cache_info_frame(const CacheInfo& c) {
    if (!c.expiration && !c.validation)
        throw std::invalid_argument("a cache info needs an expiration, a validation token or both");
    if (c.expiration && *c.expiration < 0)
        throw std::invalid_argument("a cache expiration is seconds >= 0 (0: for ever), not " +
                                    std::to_string(*c.expiration));
    std::vector<Term> options;
    options.push_back(Term::tuple(
        {Term::atom("access"), Term::atom(c.access == CacheInfo::Access::Public ? "public" : "private")}));
    if (c.expiration) options.push_back(Term::tuple({Term::atom("expiration"), Term(*c.expiration)}));
    if (c.validation) options.push_back(Term::tuple({Term::atom("validation"), Term::binary(*c.validation)}));
    return frame_of(Term::tuple({Term::atom("info"), Term::atom("cache"), Term::list(std::move(options))}));
}

bool read_cache_info(const Term& options, CacheInfo& out, std::string& why) {
    out = CacheInfo{};
    if (!options.is_nil() && !options.is_proper_list()) {
        why = "{info, cache, Options}: Options must be a list";
        return false;
    }
    if (options.is_nil()) return true;
    for (const Term& o : options.items()) {
        if (!o.is_tuple(2) || !o[0].is_atom()) {
            why = "{info, cache, Options}: an option must be {Key, Value}";
            return false;
        }
        const Term& v = o[1];
        if (o[0].is_atom("access")) {
            if (!v.is_atom("public") && !v.is_atom("private")) {
                why = "{info, cache, Options}: access must be public or private";
                return false;
            }
            out.access = v.is_atom("public") ? CacheInfo::Access::Public : CacheInfo::Access::Private;
        } else if (o[0].is_atom("expiration")) {
            if (!v.is_int() || v.as_int() < 0) {
                why = "{info, cache, Options}: expiration must be an integer >= 0";
                return false;
            }
            out.expiration = v.as_int();
        } else if (o[0].is_atom("validation")) {
            if (!v.is_binary()) {
                why = "{info, cache, Options}: validation must be a binary";
                return false;
            }
            out.validation = v.bytes();
        }
    }
    return true;
}

const std::string& stream_info_frame() {
    static const std::string f =
        frame_of(Term::tuple({Term::atom("info"), Term::atom("stream"), Term::nil()}));
    return f;
}

const std::string& valid_info_frame() {
    static const std::string f =
        frame_of(Term::tuple({Term::atom("info"), Term::atom("valid"), Term::nil()}));
    return f;
}

void append_chunk_header(std::string& out, size_t n) {
    char h[bert::kFrameHeader];
    bert::put_frame_header(h, static_cast<uint32_t>(n));
    out.append(h, sizeof h);
}

}  // namespace bertd::rpc10
