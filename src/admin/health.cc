// health.cc: the health answer (health.h). A module is live while one of its slots has a
// running worker (idle or busy); one whose workers all died, or that the master marked
// failing, makes the server degraded.
#include "admin/health.h"

#include "bert/codec.h"
#include "bert/frame.h"

namespace bertd::admin {

namespace {
bool module_live(Segment& seg, uint32_t m) {
    ModuleShared& ms = seg.module(m);
    for (uint32_t s = ms.first_slot; s < ms.first_slot + ms.nslots; ++s) {
        uint32_t st = seg.slot(s).state.load(std::memory_order_relaxed);
        if ((st == uint32_t(SlotState::Idle) || st == uint32_t(SlotState::Leased)) &&
            seg.slot(s).pid.load() > 0)
            return true;
    }
    return false;
}
}  // namespace

Health health(Segment& seg, bool link_down, std::string* why) {
    auto say = [&](Health h, std::string text) {
        if (why) *why = std::move(text);
        return h;
    };
    if (seg.header().draining.load()) return say(Health::Draining, "a graceful stop is under way");
    for (uint32_t m = 0; m < seg.nmodules(); ++m) {
        ModuleShared& ms = seg.module(m);
        if (ms.name[0] == 0 || ms.nslots == 0) continue;  // natives: the link says for them
        if (!module_live(seg, m))
            return say(Health::Degraded, std::string("module '") + ms.name + "' has no live worker");
        if (!seg.module_failure(m).empty())
            return say(Health::Degraded, std::string("module '") + ms.name + "' is failing");
    }
    if (link_down) return say(Health::Degraded, "the Erlang link is down");
    return say(Health::Ok, "");
}

const char* health_name(Health h) {
    switch (h) {
        case Health::Ok: return "ok";
        case Health::Degraded: return "degraded";
        case Health::Draining: return "draining";
    }
    return "?";
}

std::string health_frame(Segment& seg, bool link_down) {
    std::string out(bert::kFrameHeader, '\0');
    bert::Term answer = bert::Term::atom(health_name(health(seg, link_down)));
    bert::encode_append(bert::Term::tuple({bert::Term::atom("reply"), answer}), out);
    bert::put_frame_header(out.data(), uint32_t(out.size() - bert::kFrameHeader));
    return out;
}

}  // namespace bertd::admin
