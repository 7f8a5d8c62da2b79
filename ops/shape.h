// Shape ops: reshape, permute, cat and narrow. Tensors stay contiguous: reshape is a view of the same
// storage; permute, cat and narrow write a new tensor (one strided pointwise copy per operand, see
// ops/pointwise.h). Nothing is saved; the backward of each is the adjoint copy:
//   reshape: dy reshaped back;  permute: dy permuted by the inverse order;
//   cat: dy narrowed to each input's slice;  narrow: dy written into zeros at the slice.
#pragma once

#include <vector>

#include "../core/tensor.h"

namespace tg::ops {

/// x.reshape(shape): the same elements in a new shape; one dimension may be -1 (inferred).
Tensor reshape(const Tensor& x, const Shape& shape);
/// Dimensions reordered: out.size(i) == x.size(dims[i]); dims is a permutation (negative allowed).
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);
/// Concatenation along dim of tensors that agree in every other dimension, dtype and device.
Tensor cat(const std::vector<Tensor>& tensors, int64_t dim);
/// The elements start .. start + length - 1 along dim (a copy).
Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length);

}  // namespace tg::ops
