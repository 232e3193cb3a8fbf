// floats.h: float_format: ernie, the request path's side. Floats cross between an Ernie-era
// peer (ruby-bert reads and writes FLOAT_EXT only) and bertd's libraries (NEW_FLOAT_EXT) as
// FLOAT_EXT. Bytes are rewritten where they stand, no Term is built; what cannot be read is
// left as it is, for the usual checks to answer.
#pragma once

#include <string>
#include <string_view>

namespace bertd {

// The frame for `payload` with its floats as FLOAT_EXT, in `frame_out`. False (and nothing
// written) when there is nothing to rewrite or the payload does not read.
bool ernie_floats_frame(std::string_view payload, std::string& frame_out);

// Every frame of `frames` (whole frames, one after another) with its floats as FLOAT_EXT.
void ernie_floats_frames(std::string& frames);

}  // namespace bertd
