// Unary elementwise ops: neg exp log sqrt abs pow relu tanh clamp (sigmoid is in ops/elementwise.h).
//
// Forward and backward are one pointwise pass each (ops/pointwise.h). Saved: the output for exp
// (dx = dy y), sqrt (dx = dy / (2 y)), relu (dx = dy [y > 0]) and tanh (dx = dy (1 - y^2)); the input
// for log (dx = dy / x), abs (dx = dy sign(x)), pow (dx = dy p x^(p-1)) and clamp
// (dx = dy [lo <= x <= hi]); nothing for neg. float32/float64, CPU and CUDA; undefined or empty
// tensors are a tg::Error.
#pragma once

#include "../core/tensor.h"

namespace tg::ops {

/// -x
Tensor neg(const Tensor& x);
/// exp(x)
Tensor exp(const Tensor& x);
/// Natural logarithm (NaN below 0, -inf at 0, as std::log).
Tensor log(const Tensor& x);
/// Square root (NaN below 0).
Tensor sqrt(const Tensor& x);
/// |x|; the gradient at 0 is 0.
Tensor abs(const Tensor& x);
/// x^p for a scalar exponent p.
Tensor pow(const Tensor& x, double p);
/// max(x, 0); the gradient at 0 is 0.
Tensor relu(const Tensor& x);
/// tanh(x)
Tensor tanh(const Tensor& x);
/// min(max(x, lo), hi); needs lo <= hi. The gradient passes where lo <= x <= hi.
Tensor clamp(const Tensor& x, double lo, double hi);

}  // namespace tg::ops
