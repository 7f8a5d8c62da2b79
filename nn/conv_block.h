// nn::ConvBlock: the seed's block, conv -> + bias -> * scale -> sigmoid -> GroupNorm, as a layer to
// stack (for example in a Sequential). It is nn::Model under the name a layer wants: the same
// parameters (conv.weight, conv.bias, bias, scale, group_norm.weight, group_norm.bias; bias and scale
// (C, 1, 1)), the same initialisation and the fused forward (ops::conv_block).
#pragma once

#include "model.h"

namespace tg::nn {

class ConvBlock : public Model {
 public:
  ConvBlock(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t num_groups,
            Generator& gen, DType dtype = DType::Float32)
      : Model(in_channels, out_channels, kernel_size, num_groups, {out_channels, 1, 1},
              {out_channels, 1, 1}, gen, dtype) {}
};

}  // namespace tg::nn
