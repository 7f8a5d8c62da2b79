// The researcher's own error counter. Were tapegrad's headers to include this file in place of
// their own core/error.h, TG_CHECK and tg::Error would not be declared.
#pragma once

namespace research {
inline int error_count = 0;
}  // namespace research
