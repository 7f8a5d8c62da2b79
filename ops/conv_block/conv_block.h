// The model's whole block as one op, and that block with its MSE loss:
//
//   y    = group_norm(sigmoid((conv2d(x, weight, conv_bias) + bias) * scale), groups, gamma, beta)
//   loss = mean((y - target)^2)
//
// Paths, fastest first (conv_block_can_implement() says which one runs and why not a faster one):
//   direct       CUDA float32, the (Cin, Cout, k) that the convolving fused kernels handle
//                (ops/conv_block/direct_kernels.cuh, compiled at run time): the forward writes
//                only z = conv(x) + conv_bias and per-(n, group) statistics; the backward is one pass over x, z and target that
//                forms dz on the fly and accumulates the weight gradient without writing dz.
//   epilogue     every other CUDA float32 block (ops/conv_block/epilogue.cu): cuDNN writes z, one
//                pass over z (and the target) gives the statistics (and, for the loss, everything
//                the backward reduces); the backward is one dz pass, then cuDNN's weight gradient
//                (and dx only when x needs one). Neither s nor y is ever written for the loss.
//   fused-cpu    x on the CPU, float32 or float64 (ops/conv_block/cpu.cpp).
//   composition  the unfused ops, for everything else: float64 on CUDA, a target that requires
//                grad, sizes beyond the kernels' 32-bit indexing. The reason goes to stderr once
//                per shape.
// Saved for the backward: x, z, target, mean and rstd per (n, group), and a few per-channel and
// per-group sums. Both fused CUDA paths are deterministic (fixed reduction orders, no float
// atomics; the epilogue path's cuDNN calls too when ops::conv::set_deterministic(true)).
#pragma once

#include <string>

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

enum class ConvBlockPath { DirectCuda, EpilogueCuda, FusedCpu, Composition };

struct ConvBlockPlan {
  ConvBlockPath path = ConvBlockPath::Composition;
  std::string reason;  ///< why not a faster path (empty for direct, and for fused-cpu)
};

/// The path conv_block takes for x and p (and conv_block_mse_loss with this target, when given: a
/// target that requires grad takes the composition). Throws what conv_block throws for invalid
/// arguments.
ConvBlockPlan conv_block_can_implement(const Tensor& x, const ConvBlockParams& p);
ConvBlockPlan conv_block_can_implement(const Tensor& x, const ConvBlockParams& p,
                                       const Tensor& target);

/// "direct", "epilogue", "fused-cpu" or "composition".
const char* conv_block_path_name(ConvBlockPath path);

/// Process-wide: with false, blocks that the direct kernels handle take the epilogue path (for
/// tests and benchmarks that compare the two). Default true, or false when the environment
/// variable TG_DIRECT_KERNELS is 0 / off / false at the first use (where the runtime compilation
/// of the direct kernels cannot work).
void conv_block_set_direct_enabled(bool value);
bool conv_block_direct_enabled();

/// True when the direct fused CUDA kernels handle this input and these parameters.
bool conv_block_fused_available(const Tensor& x, const ConvBlockParams& p);

/// True when the fused CPU path handles this input (x on the CPU, float32 or float64, non-empty, a
/// kernel no larger than the input); otherwise the CPU runs the composition.
bool conv_block_fused_cpu_available(const Tensor& x, const ConvBlockParams& p);

}  // namespace tg::ops
