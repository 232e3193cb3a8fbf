// floats.cc: float_format: ernie, NEW_FLOAT_EXT (70) rewritten to FLOAT_EXT (99) in a module's
// requests and answers (see floats.h). A payload without the byte 70 cannot hold a NEW_FLOAT
// and is passed at no cost; one that holds it elsewhere (in an integer, or as the letter F
// in a binary or an atom) costs one walk.
#include "net/floats.h"

#include "bert/codec.h"
#include "bert/frame.h"

#include <cstdint>

namespace bertd {

namespace {
constexpr char kNewFloatTag = 70;
}

bool ernie_floats_frame(std::string_view payload, std::string& frame_out) {
    if (payload.find(kNewFloatTag) == std::string_view::npos) return false;
    std::string rewritten;
    size_t changed = 0;
    // Nothing changed (a 70 that was no float): the bytes go on as they came, not re-framed.
    if (bert::rewrite_floats(payload, bert::FloatForm::Ernie, rewritten, {}, &changed) || changed == 0) return false;
    frame_out.clear();
    bert::append_frame(frame_out, rewritten);
    return true;
}

void ernie_floats_frames(std::string& frames) {
    if (frames.find(kNewFloatTag) == std::string::npos) return;
    std::string out, one;
    bool changed = false;
    size_t at = 0;
    while (at < frames.size()) {
        bert::FrameScan fs = bert::scan_frame(std::string_view(frames).substr(at), UINT32_MAX);
        if (fs.state != bert::FrameScan::State::Complete) return;  // not frames: left as they are
        std::string_view payload = std::string_view(frames).substr(at + bert::kFrameHeader, fs.length);
        if (ernie_floats_frame(payload, one)) out += one, changed = true;
        else out.append(frames, at, bert::kFrameHeader + fs.length);
        at += bert::kFrameHeader + fs.length;
    }
    if (changed) frames.swap(out);  // else the frames stay, with their buffer
}

}  // namespace bertd
