// The researcher's own checkpoint code.
#pragma once

#include <string>

namespace research {
inline std::string checkpoint_name(int step) { return "step-" + std::to_string(step) + ".bin"; }
}  // namespace research
