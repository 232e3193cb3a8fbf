// router.h: where a request goes. The one place that knows `__admin__`, that a
// native module shadows the external module of the same name, and what serves a
// request the native side declines. Pure functions of the request's peek and the
// generation's runtime: no I/O, no state.
#pragma once

#include <cstdint>

#include "bert/codec.h"
#include "core/runtime.h"

namespace bertd {

struct Route {
    enum class To : uint8_t { Admin, Native, External, NoModule, NoFunction } to = To::NoModule;
    uint32_t module = 0;  // External: the module's index in Runtime::modules
    int32_t stats = -1;   // the segment's module entry its stats go to (-1: none)
};

// Why the native side did not take a request (the link's Declined message).
enum class Declined : uint8_t {
    NoModule = 1,    // the node has no such module loaded
    NoFunction = 2,  // it does not export Function/Arity, or Function_pred said external
};

// Connections the Erlang link opened (rpc:call from Erlang nodes) reach external modules only.
Route decide(const bert::Peek& pk, const Runtime& rt, bool from_link);

// A native module declined: the external module of the same name serves it, if there is one.
Route fallback(const bert::Peek& pk, const Runtime& rt, Declined why);

}  // namespace bertd
