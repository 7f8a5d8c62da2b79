// Reductions over chosen dimensions: sum, mean and amax (x, dims, keepdim), beside the full sum and
// mean of ops/elementwise.h.
//
// dims may be negative (counted from the end) and must be distinct; an empty list reduces every
// dimension. keepdim keeps the reduced dimensions with size 1. Sums accumulate in double.
// Backward: sum and mean broadcast dy back over the reduced dimensions (scaled by 1 / count for
// mean); nothing saved. amax saves x and its output and splits dy evenly among the elements equal
// to the maximum (as PyTorch's amax).
//
// Kernel: each pass reduces one run of adjacent dimensions, viewed as (outer, reduced, inner):
// out[o, i] = scale * op over r of x[o, r, i]; several runs take several passes. CUDA thread mapping:
// one block of 256 threads per output when inner == 1 and the reduced run is long (a fixed-order
// block tree), one thread per output otherwise (consecutive threads read consecutive i). Both orders
// depend on the sizes only, so results are deterministic.
#pragma once

#include <cstdint>
#include <vector>

#include "../core/tensor.h"

struct CUstream_st;

namespace tg::ops {

/// Sum over dims (all when empty).
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
/// Mean over dims (all when empty).
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
/// Maximum over dims (all when empty); the gradient is shared evenly among tied maxima.
Tensor amax(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);

namespace detail {

enum class ReduceOp { Sum, Max };

/// out[o * inner + i] = scale * op_r x[(o * reduced + r) * inner + i] (scale applies to Sum only).
template <typename T>
void reduce_cpu(ReduceOp op, const T* x, T* out, int64_t outer, int64_t reduced, int64_t inner,
                double scale);
template <typename T>
void reduce_cuda(ReduceOp op, const T* x, T* out, int64_t outer, int64_t reduced, int64_t inner,
                 double scale, CUstream_st* stream);

/// Normalises dims against a tensor of rank `rank` (negative counted from the end; empty means
/// all); sorted, distinct. Throws naming op and the shape on a bad or repeated dimension.
std::vector<int64_t> normalize_dims(const char* op, const std::vector<int64_t>& dims,
                                    const Shape& shape);
/// x reduced over dims (normalised) with keepdim = true; no autograd.
Tensor reduce_raw(ReduceOp op, const Tensor& x, const std::vector<int64_t>& dims, double scale);

}  // namespace detail
}  // namespace tg::ops
