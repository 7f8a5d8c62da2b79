// group_norm: GroupNorm over G groups of D = C / G channels (torch.nn.functional.group_norm).
//
//   M = D * HxW elements per (n, g);  mean, var = their mean and biased variance;
//   rstd = 1 / sqrt(var + eps);  y = (x - mean) * rstd * gamma_c + beta_c
// Backward (g = dy * gamma_c, xhat = (x - mean) * rstd, means over the group's M elements):
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat));  dgamma_c = sum dy * xhat;  dbeta_c = sum dy
//
// Layout: x and y (N, C, *) contiguous (NCHW for images; HxW = product of the trailing sizes), so
// the M elements of one (n, g) are contiguous. gamma, beta: (C) or undefined (no affine).
// mean, rstd: (N, G) in the dtype of x.
// Saved for the backward: x, mean, rstd (and gamma); no normalized copy.
// Statistics: on the CPU two-pass in double. On CUDA Welford per thread on x - K, K = the group's
// first element (the shift keeps offset data small), merged with Chan's formula within a block and
// then across the group's chunks; accumulated in float for float32, double for float64.
// CUDA thread mapping:
//   forward: one block per (n, g, chunk of 8192 elements) for the statistics, one block per (n, g)
//     merging the chunks, then y by blocks over (plane n * C + c, chunk of the plane);
//   backward: blocks over (plane, chunk) for the sums of dy and dy * (x - mean); one block per
//     (n, g) turning them into per-(n, c) sums and the two group means; dx by blocks over
//     (plane, chunk); one block per channel for dgamma and dbeta.
// Every reduction has a fixed order: same inputs, same bits; no atomics.
#pragma once

#include <cstdint>
#include <vector>

#include "../core/tensor.h"

namespace tg::ops {

struct GroupNormOptions {
  double eps = 1e-5;  ///< added to the variance, >= 0
};

/// y = group_norm(x) (see the file comment). x (N, C, *) with at least 2 dimensions, C divisible
/// by num_groups; weight and bias (C) or undefined (each on its own: no weight = 1, no bias = 0);
/// one dtype (float32 or float64) and one device. Returns y with the shape of x.
/// Autograd: saves x, mean, rstd and weight; dx, dweight, dbias only when needed.
/// Throws tg::Error naming group_norm on num_groups < 1 or not dividing C, bad weight/bias
/// shapes, an empty x, a negative eps, or mixed dtypes or devices.
Tensor group_norm(const Tensor& x, int64_t num_groups, const Tensor& weight, const Tensor& bias,
                  const GroupNormOptions& opt = {});

/// As group_norm, and also returns the statistics: {y, mean, rstd}, mean and rstd of shape (N, G).
/// mean and rstd are the tensors saved for the backward: do not modify them in place.
std::vector<Tensor> group_norm_with_stats(const Tensor& x, int64_t num_groups, const Tensor& weight,
                                          const Tensor& bias, const GroupNormOptions& opt = {});

/// The gradients of group_norm from dy (shape of x), computed without the tape (for fused ops and
/// tools). mean and rstd (N, G) as returned by group_norm_with_stats; weight (C) or undefined.
/// Each requested gradient is a fresh tensor (dweight, dbias: (C)); the others stay undefined.
struct GroupNormGrads {
  Tensor dx;
  Tensor dweight;
  Tensor dbias;
};
GroupNormGrads group_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& mean,
                                   const Tensor& rstd, const Tensor& weight, int64_t num_groups,
                                   bool need_dx, bool need_dweight, bool need_dbias);

namespace detail {

/// Sizes of one call, all > 0, G divides C.
struct GroupNormParams {
  int64_t N = 0, C = 0, HxW = 0, G = 0;
  double eps = 1e-5;
  int64_t D() const { return C / G; }      ///< channels per group
  int64_t M() const { return D() * HxW; }  ///< elements per (n, g)
};

/// Elements per chunk of the CUDA reductions (a group's M elements in the forward, a plane's HxW
/// elements in the backward).
constexpr int64_t kGroupNormChunk = 8192;

inline int64_t group_norm_chunks(int64_t len) {
  return (len + kGroupNormChunk - 1) / kGroupNormChunk;
}
/// T values of scratch memory for group_norm_forward_cuda: per-chunk (mean, M2) and per-group
/// shifted mean. Depends on the sizes only.
inline int64_t group_norm_forward_workspace_size(const GroupNormParams& p) {
  return 2 * p.N * p.G * group_norm_chunks(p.M()) + p.N * p.G;
}
/// T values of scratch memory for group_norm_backward_cuda: per-(n, c, chunk) partial sums,
/// per-(n, c) sums and per-(n, g) coefficients.
inline int64_t group_norm_backward_workspace_size(const GroupNormParams& p) {
  return 2 * p.N * p.C * group_norm_chunks(p.HxW) + 2 * p.N * p.C + 2 * p.N * p.G;
}

/// CPU forward: y, mean, rstd (all written). gamma and beta may be null. T is float or double.
template <typename T>
void group_norm_forward_cpu(const GroupNormParams& p, const T* x, const T* gamma, const T* beta,
                            T* y, T* mean, T* rstd);

/// CPU backward: writes (does not accumulate) each gradient whose pointer is non-null. gamma may be
/// null (= 1). Sums in double, in a fixed order.
template <typename T>
void group_norm_backward_cpu(const GroupNormParams& p, const T* dy, const T* x, const T* mean,
                             const T* rstd, const T* gamma, T* dx, T* dgamma, T* dbeta);

}  // namespace detail
}  // namespace tg::ops

#ifdef TG_WITH_CUDA
typedef struct CUstream_st* cudaStream_t;  // as in the CUDA runtime's driver_types.h

namespace tg::ops::detail {

/// CUDA forward on stream (device pointers): y, mean, rstd. gamma, beta may be null. workspace
/// holds group_norm_forward_workspace_size(p) values.
template <typename T>
void group_norm_forward_cuda(const GroupNormParams& p, const T* x, const T* gamma, const T* beta,
                             T* y, T* mean, T* rstd, T* workspace, cudaStream_t stream);

/// CUDA backward on stream: each non-null gradient is written. gamma may be null. workspace holds
/// group_norm_backward_workspace_size(p) values.
template <typename T>
void group_norm_backward_cuda(const GroupNormParams& p, const T* dy, const T* x, const T* mean,
                              const T* rstd, const T* gamma, T* dx, T* dgamma, T* dbeta,
                              T* workspace, cudaStream_t stream);

}  // namespace tg::ops::detail
#endif
