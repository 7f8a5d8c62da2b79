// L1 and smooth L1 losses (mean reduction), beside mse_loss (ops/mse_loss.h).
//
// With d = input - target over all n elements (same shape, dtype and device; no broadcasting):
//   l1_loss        = mean |d|;                      d input = g sign(d) / n
//   smooth_l1_loss = mean (|d| < beta ? 0.5 d^2 / beta : |d| - 0.5 beta);
//                    d input = g (|d| < beta ? d / beta : sign(d)) / n; beta = 0 is l1_loss.
// d target = -d input. Saved: d. Sums accumulate in double. One pointwise pass and one reduction
// forward, one pointwise pass backward (per operand that needs a gradient).
#pragma once

#include "../core/tensor.h"

namespace tg::ops {

/// mean(|input - target|) as a 0-dim tensor.
Tensor l1_loss(const Tensor& input, const Tensor& target);
/// PyTorch's smooth_l1_loss (Huber scaled by 1 / beta), mean reduction; beta >= 0.
Tensor smooth_l1_loss(const Tensor& input, const Tensor& target, double beta = 1.0);

}  // namespace tg::ops
