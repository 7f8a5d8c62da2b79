// The researcher's own tensor type. Were tapegrad's headers to include this file in place of their
// own core/tensor.h, tg::Tensor would not be declared and they would not compile.
#pragma once

#include <vector>

namespace research {
struct Tensor {
  std::vector<float> values;
};
}  // namespace research
