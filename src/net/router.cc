// router.cc: admin, native, external, or nothing, by module name.
#include "net/router.h"

namespace bertd {

namespace {
Route external_or(const bert::Peek& pk, const Runtime& rt, Route::To otherwise) {
    Route r;
    auto it = rt.module_index.find(pk.module);
    if (it == rt.module_index.end()) {
        r.to = otherwise;
        return r;
    }
    r.to = Route::To::External;
    r.module = it->second;
    r.stats = int32_t(rt.modules[it->second].index);
    return r;
}
}  // namespace

Route decide(const bert::Peek& pk, const Runtime& rt, bool from_link) {
    if (pk.module == "__admin__") return Route{Route::To::Admin, 0, -1};
    if (!from_link && !rt.native_index.empty()) {
        auto nat = rt.native_index.find(pk.module);
        if (nat != rt.native_index.end()) return Route{Route::To::Native, 0, int32_t(nat->second)};
    }
    return external_or(pk, rt, Route::To::NoModule);
}

Route fallback(const bert::Peek& pk, const Runtime& rt, Declined why) {
    return external_or(pk, rt, why == Declined::NoModule ? Route::To::NoModule : Route::To::NoFunction);
}

}  // namespace bertd
