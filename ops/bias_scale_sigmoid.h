// bias_scale_sigmoid: the fused per-channel affine + sigmoid of the seed model.
//
//   s[n, c, h, w] = sigmoid((z[n, c, h, w] + bias[c]) * scale[c]),  sigmoid(u) = 1 / (1 + exp(-u))
//
// Layout: z and s are NCHW, contiguous; bias and scale hold C values, shaped (C, 1, 1) or (C).
// Saved for the backward: z, bias and scale only; s is recomputed from z (no copy of s, u, z + b).
// Backward, from ds:
//   du = ds * s * (1 - s);  dz = du * scale_c;  dbias_c = sum_{n,h,w} dz = scale_c * sum du;
//   dscale_c = sum_{n,h,w} du * (z + bias_c).  Only the requested gradients are computed.
// CUDA thread mapping: blocks of 256 threads walk (plane, chunk) pairs, plane = n * C + c, chunk =
// a contiguous run of at most 4096 (forward) or 8192 (backward) elements of the plane. The backward
// writes one partial pair per (c, n, chunk); a second kernel, one block per channel, sums them in a
// fixed order, so the parameter gradients are the same bits on every run (no atomics).
#pragma once

#include <cstdint>

#include "../core/tensor.h"

namespace tg::ops {

/// s = sigmoid((z + bias) * scale), with bias and scale broadcast over (N, H, W).
/// z (N, C, H, W); bias and scale (C, 1, 1) or (C); one dtype (float32 or float64) and one device.
/// Returns s (N, C, H, W). Autograd: saves z, bias and scale; gradients for z, bias and scale are
/// computed only when needed (dbias and dscale keep the shape of bias and scale).
/// Throws tg::Error naming bias_scale_sigmoid on a z that is not 4-D or is empty, on bias or scale
/// shapes other than (C, 1, 1) / (C), or on mixed dtypes or devices.
Tensor bias_scale_sigmoid(const Tensor& z, const Tensor& bias, const Tensor& scale);

/// The gradients of bias_scale_sigmoid from ds (same shape as z), computed without the tape (for
/// fused ops and tools). Each requested gradient is a fresh tensor; the others stay undefined.
struct BiasScaleSigmoidGrads {
  Tensor dz;
  Tensor dbias;
  Tensor dscale;
};
BiasScaleSigmoidGrads bias_scale_sigmoid_backward(const Tensor& ds, const Tensor& z,
                                                  const Tensor& bias, const Tensor& scale,
                                                  bool need_dz, bool need_dbias, bool need_dscale);

namespace detail {

/// Sizes of one call: z is (N, C, HxW) with HxW = H * W; all > 0.
struct BiasScaleSigmoidParams {
  int64_t N = 0, C = 0, HxW = 0;
};

/// Elements of one backward chunk on the GPU.
constexpr int64_t kBiasScaleSigmoidChunk = 8192;

/// Number of T values of scratch memory that bias_scale_sigmoid_backward_cuda needs when it reduces
/// dbias or dscale (2 partial sums per (n, c, chunk)); depends on the sizes only.
inline int64_t bias_scale_sigmoid_workspace_size(const BiasScaleSigmoidParams& p) {
  const int64_t chunks = (p.HxW + kBiasScaleSigmoidChunk - 1) / kBiasScaleSigmoidChunk;
  return 2 * p.N * p.C * chunks;
}

/// CPU forward (OpenMP over planes). T is float or double.
template <typename T>
void bias_scale_sigmoid_forward_cpu(const BiasScaleSigmoidParams& p, const T* z, const T* bias,
                                    const T* scale, T* s);

/// CPU backward: writes (does not accumulate) each gradient whose pointer is non-null. Sums are
/// accumulated in double, per plane and then over n in order (deterministic).
template <typename T>
void bias_scale_sigmoid_backward_cpu(const BiasScaleSigmoidParams& p, const T* ds, const T* z,
                                     const T* bias, const T* scale, T* dz, T* dbias, T* dscale);

}  // namespace detail
}  // namespace tg::ops

#ifdef TG_WITH_CUDA
typedef struct CUstream_st* cudaStream_t;  // as in the CUDA runtime's driver_types.h

namespace tg::ops::detail {

/// CUDA forward on stream; all pointers are device pointers.
template <typename T>
void bias_scale_sigmoid_forward_cuda(const BiasScaleSigmoidParams& p, const T* z, const T* bias,
                                     const T* scale, T* s, cudaStream_t stream);

/// CUDA backward: one pass over (ds, z) writes dz (if non-null) and per-(n, c, chunk) partial sums
/// into workspace (bias_scale_sigmoid_workspace_size values; only used when dbias or dscale is
/// non-null), then one block per channel reduces them into dbias and dscale (each if non-null).
template <typename T>
void bias_scale_sigmoid_backward_cuda(const BiasScaleSigmoidParams& p, const T* ds, const T* z,
                                      const T* bias, const T* scale, T* dz, T* dbias, T* dscale,
                                      T* workspace, cudaStream_t stream);

}  // namespace tg::ops::detail
#endif
