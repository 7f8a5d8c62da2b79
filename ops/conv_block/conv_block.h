// The model's whole block as one op, and that block with its MSE loss:
//
//   y    = group_norm(sigmoid((conv2d(x, weight, conv_bias) + bias) * scale), groups, gamma, beta)
//   loss = mean((y - target)^2)
//
// On CUDA, float32, stride 1, no padding and a (Cin, Cout, k) with compiled kernels (8->32 and
// 3->16 with k = 3; conv_block_fused_available() says), both run as a few fused kernels (see
// ops/conv_block/direct.cu): the forward writes only z = conv(x) + conv_bias and per-(n, group) statistics;
// conv_block_mse_loss also computes, during the forward, the reductions that the backward needs, so
// the backward is one pass over x, z and target that produces dz on the fly and accumulates the weight
// gradient without ever writing dz. Saved: x, z, target, mean and rstd per (n, group), and a few
// per-channel and per-group sums. Everything else (CPU, float64, other shapes) is the composition of
// the unfused ops, which the tests compare against.
#pragma once

#include "../../core/tensor.h"

namespace tg::ops {

struct ConvBlockParams {
  Tensor weight;     ///< (Cout, Cin, k, k)
  Tensor conv_bias;  ///< (Cout)
  Tensor bias;       ///< (Cout, 1, 1)
  Tensor scale;      ///< (Cout, 1, 1)
  Tensor gn_weight;  ///< (Cout)
  Tensor gn_bias;    ///< (Cout)
  int64_t groups = 1;
  double eps = 1e-5;
};

Tensor conv_block(const Tensor& x, const ConvBlockParams& p);
Tensor conv_block_mse_loss(const Tensor& x, const ConvBlockParams& p, const Tensor& target);

/// True when the fused CUDA kernels handle this input and these parameters.
bool conv_block_fused_available(const Tensor& x, const ConvBlockParams& p);

/// True when the fused CPU path handles this input (x on the CPU, float32 or float64, non-empty, a
/// kernel no larger than the input); otherwise the CPU runs the composition.
bool conv_block_fused_cpu_available(const Tensor& x, const ConvBlockParams& p);

}  // namespace tg::ops
