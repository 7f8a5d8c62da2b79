// The seed's model (KernelBench level 2, problem 21):
//   y = GroupNorm(sigmoid((conv(x) + bias) * scale))
// Parameters, in PyTorch's named_parameters() order: bias (C,1,1), scale (C,1,1), conv.weight,
// conv.bias, group_norm.weight, group_norm.bias.
#pragma once

#include <memory>

#include "../core/rng.h"
#include "layers.h"
#include "../ops/conv_block.h"

namespace tg::nn {

class Model : public Module {
 public:
  /// bias_shape and scale_shape are (out_channels, 1, 1) as in the reference. Parameters are drawn
  /// from gen in PyTorch's order (conv.weight, conv.bias, bias, scale).
  Model(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t num_groups,
        const Shape& bias_shape, const Shape& scale_shape, Generator& gen,
        DType dtype = DType::Float32);
  /// Same, with a Generator seeded by seed.
  Model(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t num_groups,
        uint64_t seed = 0, DType dtype = DType::Float32);

  /// The forward as one fused op (ops::conv_block; on CUDA float32 a few fused kernels).
  Tensor forward(const Tensor& x) const;
  /// mean((forward(x) - target)^2) as one fused op (ops::conv_block_mse_loss): the training step's
  /// forward. Its backward never materialises dy or dz on CUDA.
  Tensor loss(const Tensor& x, const Tensor& target) const;
  /// The parameters as the fused ops take them.
  ops::ConvBlockParams block_params() const;
  /// The op-by-op reference: conv2d -> add -> mul -> sigmoid -> group_norm.
  Tensor forward_reference(const Tensor& x) const;

  int64_t in_channels() const { return conv->weight.size(1); }
  int64_t out_channels() const { return conv->weight.size(0); }
  int64_t kernel_size() const { return conv->weight.size(2); }
  int64_t num_groups() const { return group_norm->num_groups(); }

  std::shared_ptr<Conv2d> conv;
  Tensor bias, scale;
  std::shared_ptr<GroupNorm> group_norm;
};

}  // namespace tg::nn
