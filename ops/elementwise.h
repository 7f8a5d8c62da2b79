// Elementwise arithmetic, sigmoid, square and the full reductions sum and mean; forward, backward.
//
// add/sub/mul/div/maximum/minimum(a, b): NumPy broadcasting (ops/pointwise.h does the general
//   case: gradients at the output's shape, summed down to each operand's). Two fast paths for
//   add/sub/mul: a and b of the same shape, or one of them (C,1,1) against a 4-D NCHW tensor
//   with size(1) == C (either order). Element i of the NCHW tensor meets channel (i / HxW) % C.
//   Saved: nothing for add/sub; for mul, the operand(s) that the other one's gradient needs.
//   Backward: full-size gradients elementwise (da = dy * b for mul); the (C,1,1) operand gets the
//   per-channel sum over (n, h, w), computed in two deterministic stages (no atomics) in double.
// add/sub/mul(x, s): one affine map y = alpha x + beta; nothing saved; dx = alpha dy.
// sigmoid: y = 1 / (1 + exp(-x)), saves y, dx = dy y (1 - y).
// square: y = x^2, saves x, dx = 2 x dy.
// sum, mean: all elements -> a 0-dim tensor (shape {}), accumulated in double; nothing saved;
//   dx = dy (sum) or dy / numel (mean) everywhere.
// All ops take float32 or float64 tensors on the CPU or on CUDA; both operands of a binary op must
// agree in dtype and device. Undefined or empty tensors are rejected with a tg::Error.
//
// CUDA thread mapping: elementwise kernels are grid-stride loops, one thread per element.
// Full reductions: stage 1, reduce_blocks(n) blocks of 256 threads each write one double partial;
// stage 2, one block sums them in a fixed order. Per-channel reductions: stage 1, C * chunks blocks
// (block c * chunks + k sums a strided slice of channel c's N * HxW elements); stage 2, one block
// per channel.
#pragma once

#include <algorithm>
#include <cstdint>

#include "../core/tensor.h"

// cudaStream_t is CUstream_st*; declared here so that this header needs no CUDA headers.
struct CUstream_st;

namespace tg::ops {

/// a + b with NumPy broadcasting (0-dim tensors included). Equal shapes and a (C,1,1) operand
/// against NCHW take the fast paths described above; gradients are summed over broadcast dimensions.
Tensor add(const Tensor& a, const Tensor& b);
/// a - b, broadcasting as add.
Tensor sub(const Tensor& a, const Tensor& b);
/// a * b (elementwise), broadcasting as add.
Tensor mul(const Tensor& a, const Tensor& b);
/// a / b (elementwise), broadcasting as add. Saves a and b; db = -dy a / b^2.
Tensor div(const Tensor& a, const Tensor& b);
/// max(a, b) elementwise, broadcasting; a tie sends half of dy to each operand (as PyTorch).
Tensor maximum(const Tensor& a, const Tensor& b);
/// min(a, b) elementwise, broadcasting; ties as maximum.
Tensor minimum(const Tensor& a, const Tensor& b);

/// x + s
Tensor add(const Tensor& x, double s);
/// x - s
Tensor sub(const Tensor& x, double s);
/// x * s
Tensor mul(const Tensor& x, double s);
/// x / s (s != 0)
Tensor div(const Tensor& x, double s);

/// 1 / (1 + exp(-x)), computed without overflow for large |x|. Saves its output for the backward.
Tensor sigmoid(const Tensor& x);
/// x * x. Saves x for the backward.
Tensor square(const Tensor& x);

/// Sum of all elements as a 0-dim tensor (shape {}), accumulated in double.
Tensor sum(const Tensor& x);
/// Mean of all elements as a 0-dim tensor (shape {}), accumulated in double.
Tensor mean(const Tensor& x);

namespace detail {

enum class BinaryOp { Add, Sub, Mul };

/// Layout of a binary op over n output elements. An operand flagged per_channel is a (C,1,1) tensor
/// read at channel (i / HxW) % C; the other one is read at i. At most one of the flags is set.
struct BinaryParams {
  int64_t n = 0;
  int64_t C = 1;
  int64_t HxW = 1;
  bool a_per_channel = false;
  bool b_per_channel = false;
};

/// Blocks of the first stage of a CUDA full reduction over n elements (device independent, so a
/// given n always reduces in the same order).
inline int64_t reduce_blocks(int64_t n) { return std::clamp<int64_t>((n + 4095) / 4096, 1, 1024); }
/// Chunks per channel of the first stage of a CUDA per-channel reduction over C channels of
/// per_channel = N * HxW elements each.
inline int64_t channel_reduce_chunks(int64_t C, int64_t per_channel) {
  return std::clamp<int64_t>((per_channel + 4095) / 4096, 1, std::max<int64_t>(1, 8192 / C));
}

// CPU kernels (plain loops). Pointers are host pointers to contiguous buffers.

/// out[i] = a[.] op b[.] as laid out by p.
template <typename T>
void binary_cpu(BinaryOp op, const T* a, const T* b, T* out, const BinaryParams& p);
/// out[i] = alpha * x[i] + beta
template <typename T>
void affine_cpu(const T* x, T* out, int64_t n, double alpha, double beta);
/// out[i] = sigmoid(x[i])
template <typename T>
void sigmoid_forward_cpu(const T* x, T* out, int64_t n);
/// dx[i] = dy[i] * y[i] * (1 - y[i])
template <typename T>
void sigmoid_backward_cpu(const T* y, const T* dy, T* dx, int64_t n);
/// dx[i] = 2 * x[i] * dy[i]
template <typename T>
void square_backward_cpu(const T* x, const T* dy, T* dx, int64_t n);
/// out[0] = scale * sum_i x[i]
template <typename T>
void sum_cpu(const T* x, T* out, int64_t n, double scale);
/// out[i] = scale * g[0]
template <typename T>
void fill_scaled_cpu(const T* g, T* out, int64_t n, double scale);
/// out[c] = scale * sum over (n, hw) of g[n, c, hw] * (other ? other[n, c, hw] : 1)
template <typename T>
void channel_sum_cpu(const T* g, const T* other, T* out, int64_t N, int64_t C, int64_t HxW,
                     double scale);

// CUDA launchers (defined only in a build with CUDA). Pointers are device pointers; work is queued
// on stream. partials is device scratch: reduce_blocks(n) doubles for sum_cuda,
// C * channel_reduce_chunks(C, N * HxW) doubles for channel_sum_cuda.

template <typename T>
void binary_cuda(BinaryOp op, const T* a, const T* b, T* out, const BinaryParams& p,
                 CUstream_st* stream);
template <typename T>
void affine_cuda(const T* x, T* out, int64_t n, double alpha, double beta, CUstream_st* stream);
template <typename T>
void sigmoid_forward_cuda(const T* x, T* out, int64_t n, CUstream_st* stream);
template <typename T>
void sigmoid_backward_cuda(const T* y, const T* dy, T* dx, int64_t n, CUstream_st* stream);
template <typename T>
void square_backward_cuda(const T* x, const T* dy, T* dx, int64_t n, CUstream_st* stream);
template <typename T>
void sum_cuda(const T* x, T* out, int64_t n, double scale, double* partials, CUstream_st* stream);
template <typename T>
void fill_scaled_cuda(const T* g, T* out, int64_t n, double scale, CUstream_st* stream);
template <typename T>
void channel_sum_cuda(const T* g, const T* other, T* out, int64_t N, int64_t C, int64_t HxW,
                      double scale, double* partials, CUstream_st* stream);

}  // namespace detail
}  // namespace tg::ops

namespace tg {

/// ops::add(a, b)
Tensor operator+(const Tensor& a, const Tensor& b);
/// ops::sub(a, b)
Tensor operator-(const Tensor& a, const Tensor& b);
/// ops::mul(a, b)
Tensor operator*(const Tensor& a, const Tensor& b);
/// ops::add(x, s)
Tensor operator+(const Tensor& x, double s);
/// ops::sub(x, s)
Tensor operator-(const Tensor& x, double s);
/// ops::mul(x, s)
Tensor operator*(const Tensor& x, double s);
/// ops::add(x, s)
Tensor operator+(double s, const Tensor& x);
/// ops::mul(x, s)
Tensor operator*(double s, const Tensor& x);
/// s - x (one affine op, differentiable)
Tensor operator-(double s, const Tensor& x);
/// -x (one affine op, differentiable)
Tensor operator-(const Tensor& x);
/// ops::div(a, b)
Tensor operator/(const Tensor& a, const Tensor& b);
/// ops::div(x, s)
Tensor operator/(const Tensor& x, double s);
/// s / x: a 0-dim tensor s broadcast against x
Tensor operator/(double s, const Tensor& x);

}  // namespace tg
