// fun.cc: what a fun's bytes say (fun_info) and Erlang's order of funs. Funs are
// kept as bytes (term.h); this reads them with the decoder's checks and never
// trusts them: bytes that hold no fun give nullopt, never a crash.
#include <vector>

#include "bert/codec.h"
#include "bert/decoder.h"

namespace bert {
namespace detail {
namespace {

// The fields of a fun and, when `env` is given, its free variables.
bool read_fun(const Fun& f, FunInfo& info, std::vector<Term>* env) {
    const auto* p = reinterpret_cast<const unsigned char*>(f.bytes.data());
    size_t n = f.bytes.size();
    if (n == 0 || (p[0] != kExport && p[0] != kNewFun)) return false;
    Limits limits;
    Decoder d(p, n, 0, limits);
    if (!d.read_fun_head(0, info)) return false;
    size_t pos = d.pos();
    for (uint32_t i = 0; i < info.free_vars; ++i) {
        Term t;
        Decoder e(p, n, pos, limits);
        if (!e.read_term(pos, t)) return false;
        pos = e.pos();
        if (env) env->push_back(std::move(t));
    }
    return pos == n;
}

int three_way_int(int64_t a, int64_t b) { return a < b ? -1 : (a > b ? 1 : 0); }

// Erlang compares a closure's index and old uniq by the sign of their 32-bit
// difference, which wraps (measured on OTP 25: 2147483647 sorts before
// -2147483648). That is no order across the whole range: three closures can
// form a cycle, and std::sort given a cycle may read past its range, so a
// hostile map of closure keys could crash the decoder. Both are compared as
// signed 32-bit numbers instead: a total order that agrees with Erlang whenever
// the difference does not overflow, as for every closure a compiler makes
// (small indexes, 27-bit uniqs).
int three_way_int32(uint32_t a, uint32_t b) { return three_way_int(int32_t(a), int32_t(b)); }

}  // namespace

// Closures by module, index, old uniq (both signed), free variable count, then the variables;
// exports by module, function and arity; every closure before every export.
int compare_fun_infos(const FunInfo& a, const FunInfo& b) {
    if (a.exported != b.exported) return a.exported ? 1 : -1;
    if (int c = a.module.compare(b.module)) return c < 0 ? -1 : 1;
    if (a.exported) {
        if (int c = a.function.compare(b.function)) return c < 0 ? -1 : 1;
        return three_way_int(a.arity, b.arity);
    }
    if (int c = three_way_int32(a.index, b.index)) return c;
    if (int c = three_way_int(a.old_uniq, b.old_uniq)) return c;
    return three_way_int(a.free_vars, b.free_vars);
}

int compare_funs(const Fun& a, const Fun& b, bool exact) {
    FunInfo fa, fb;
    std::vector<Term> ea, eb;
    bool ok_a = read_fun(a, fa, &ea), ok_b = read_fun(b, fb, &eb);
    // Bytes made by hand that hold no fun still get a total order.
    if (!ok_a || !ok_b) {
        if (ok_a != ok_b) return ok_a ? -1 : 1;
        int c = a.bytes.compare(b.bytes);
        return c < 0 ? -1 : (c > 0 ? 1 : 0);
    }
    if (int c = compare_fun_infos(fa, fb)) return c;
    for (size_t i = 0; i < ea.size(); ++i)
        if (int c = exact ? compare_exact(ea[i], eb[i]) : compare(ea[i], eb[i])) return c;
    return 0;
}

}  // namespace detail

std::optional<FunInfo> fun_info(const Fun& f) {
    FunInfo info;
    if (!detail::read_fun(f, info, nullptr)) return std::nullopt;
    return info;
}

}  // namespace bert
