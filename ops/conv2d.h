// conv2d: 2-D cross-correlation of an NCHW batch with a (Cout, Cin, kH, kW) filter, plus an
// optional per-channel bias; one group, no dilation, symmetric zero padding, one stride for both
// directions:
//
//   y[n, co, oh, ow] = b[co] + sum_{ci,i,j} w[co, ci, i, j] * x[n, ci, oh*s - p + i, ow*s - p + j]
//
// x outside [0, H) x [0, W) reads as 0; Hout = (H + 2p - kH) / s + 1, Wout = (W + 2p - kW) / s + 1.
// CUDA runs through cuDNN (algorithm chosen per shape and cached); the CPU runs im2col + Eigen
// GEMM, parallel over the batch with OpenMP.
#pragma once

#include <cstdint>

#include "../core/tensor.h"

namespace tg::ops {

struct Conv2dOptions {
  int64_t stride = 1;   ///< the same in both directions, >= 1
  int64_t padding = 0;  ///< zeros added on every side, >= 0
};

/// y = conv2d(x, weight) + bias.
/// x (N, Cin, H, W), weight (Cout, Cin, kH, kW), bias (Cout) or an undefined Tensor for none; all
/// of the same dtype (float32 or float64) and device. Returns y (N, Cout, Hout, Wout), see the file
/// comment.
/// Autograd: saves x when weight requires grad and weight when x requires grad. The backward
/// computes dweight = sum_n dy_n im2col(x_n)^T, dbias = sum over (n, oh, ow) of dy, and
/// dx = col2im(W^T dy) only when x needs a gradient.
/// Throws tg::Error naming conv2d on bad ranks, channel mismatch, a kernel larger than the padded
/// input, stride < 1, padding < 0, a bias that is not (Cout), or mixed dtypes/devices.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias,
              const Conv2dOptions& opt = {});

/// The gradients of conv2d, computed without the tape (for fused ops that call the convolution
/// directly). dy (N, Cout, Hout, Wout); x and weight as given to conv2d (both must be defined: x
/// also gives the input shape). Each requested gradient is a fresh tensor; the others stay
/// undefined.
struct Conv2dGrads {
  Tensor dx;
  Tensor dweight;
  Tensor dbias;
};
Conv2dGrads conv2d_backward(const Tensor& dy, const Tensor& x, const Tensor& weight,
                            const Conv2dOptions& opt, bool need_dx, bool need_dweight,
                            bool need_dbias);

/// Global switches for the CUDA path (process-wide; read at each call).
namespace conv {
/// Allow TF32 tensor cores for float32 convolutions (default true, like PyTorch); off means strict
/// float32 (FMA math).
void set_allow_tf32(bool value);
bool allow_tf32();
/// Restrict cuDNN to deterministic algorithms (default false).
void set_deterministic(bool value);
bool deterministic();
/// Pick algorithms by timing them (cudnnFind*AlgorithmEx) instead of cuDNN's heuristics (default
/// false). The choice is cached per (shape, dtype, tf32, deterministic, benchmark).
void set_benchmark(bool value);
bool benchmark();
/// Number of cached algorithm choices (all kinds); for tests and tools.
size_t algorithm_cache_size();
/// Forgets every cached algorithm choice.
void clear_algorithm_cache();
}  // namespace conv

namespace detail {

/// Sizes of one convolution, all validated (> 0, output non-empty).
struct Conv2dParams {
  int64_t N = 0, Cin = 0, H = 0, W = 0;
  int64_t Cout = 0, kH = 0, kW = 0;
  int64_t stride = 1, padding = 0;
  int64_t Hout = 0, Wout = 0;
};

/// The sizes of conv(x, weight) with opt (no checks: conv2d() validates before using them).
Conv2dParams conv2d_params(const Tensor& x, const Tensor& weight, const Conv2dOptions& opt);

/// CPU forward: y = conv(x, w) + b (b may be null). T is float or double.
template <typename T>
void conv2d_forward_cpu(const Conv2dParams& p, const T* x, const T* w, const T* b, T* y);

/// CPU backward: writes (not accumulates) each gradient whose pointer is non-null. x is needed for
/// dw, w for dx.
template <typename T>
void conv2d_backward_cpu(const Conv2dParams& p, const T* x, const T* w, const T* dy, T* dx, T* dw,
                         T* db);

#ifdef TG_WITH_CUDA
/// cuDNN forward on the current device's stream; pointers are device pointers of dtype.
void conv2d_forward_cuda(const Conv2dParams& p, DType dtype, const void* x, const void* w,
                         const void* b, void* y);
/// cuDNN backward (filter, data) and our deterministic bias reduction; null pointers are skipped.
void conv2d_backward_cuda(const Conv2dParams& p, DType dtype, const void* x, const void* w,
                          const void* dy, void* dx, void* dw, void* db);

/// Number of partial sums per channel that the bias-gradient reduction uses for M = N * HW elements
/// per channel (depends on M only, so results are the same bits on every GPU).
inline int64_t conv2d_bias_grad_partials(int64_t M) {
  int64_t p = (M + 8191) / 8192;
  return p < 1 ? 1 : (p > 256 ? 256 : p);
}
#endif

}  // namespace detail
}  // namespace tg::ops

#ifdef TG_WITH_CUDA
typedef struct CUstream_st* cudaStream_t;  // as in the CUDA runtime's driver_types.h

namespace tg::ops::detail {
/// db[c] = sum over (n, s) of dy[(n * C + c) * HW + s], in two fixed-order stages (no atomics):
/// blocks (p, c) sum chunk p of channel c into partials[c * P + p] (P from
/// conv2d_bias_grad_partials, partials holds C * P values), then one block per channel sums its P
/// partials.
template <typename T>
void conv2d_bias_grad_cuda(const T* dy, T* db, T* partials, int64_t N, int64_t C, int64_t HW,
                           cudaStream_t stream);
}  // namespace tg::ops::detail
#endif
