// The fused block's internals: the shapes and argument structs of its CPU passes and CUDA kernels.
#pragma once

#include <string>

#include "conv_block.h"
#include "direct_config.h"

namespace tg::ops {
namespace detail {

struct ConvBlockForwardArgs {
  int cin, cout, k;
  ConvBlockShape shape;
  double eps;
  bool tf32;  ///< the convolution on TF32 tensor cores (else FP32 FMAs)
  const float *x, *weight, *conv_bias, *bias, *scale;
  float* z;           ///< (N, Cout, Ho, Wo)
  float* tile_stats;  ///< 4 floats per (n, g, tile)
  float *mean, *rstd; ///< (N*G)
};

struct ConvBlockReduceArgs {
  int cout;
  ConvBlockShape shape;
  bool loss_target;   ///< other is the MSE target (else it is dy)
  const float *z, *other, *mean, *rstd, *bias, *scale, *gamma, *beta;
  float* part;        ///< 3 floats per (n, c, chunk)
  float* loss;        ///< may be null
  float *A, *B;       ///< (N*G): sum of dy*gamma and of dy*gamma*xhat
  float *dgamma_u, *dbeta_u;  ///< (C): for an output gradient of 1
};

struct ConvBlockBackwardArgs {
  int cin, cout, k;
  ConvBlockShape shape;
  bool loss_target;
  bool tf32;  ///< TF32 allowed (ops::conv::allow_tf32() when the backward runs): the direct
              ///< kernels' weight gradient on tensor cores where it fits
  const float *x, *z, *other, *mean, *rstd, *A, *B, *bias, *scale, *gamma, *beta;
  const float* gout;  ///< device scalar: the loss's output gradient (null: 1)
  float dy_scale;     ///< 2/numel for the loss; 1 for a given dy
  const float *dgamma_u, *dbeta_u;
  float* dz;          ///< optional: dz written out (for dx)
  float *dw_part, *dbias_part, *dscale_part;
  float *dweight, *dconv_bias, *dbias, *dscale, *dgamma, *dbeta;  ///< any may be null
};

/// The epilogue path's forward passes over z = conv(x) (cuDNN's, without conv_bias) and, for the
/// loss, the target (ops/conv_block/generic.cu).
struct ConvBlockMomentsArgs {
  int cout;
  ConvBlockShape shape;
  double eps;
  const float *z, *target;  ///< target null: the statistics only (conv_block)
  const float *conv_bias, *bias, *scale, *gamma, *beta;
  float* bias_eff;           ///< (C): b' = conv_bias + bias, for the later passes
  float *mean, *rstd;        ///< (N*G)
  float *loss, *A, *B;       ///< with a target: as ConvBlockReduceArgs, for an output gradient of 1
  float *dgamma_u, *dbeta_u; ///< with a target: (C)
};

/// Sizes of the CPU passes: z is (N, C, HxW) with G groups of C / G channels.
struct ConvBlockCpuSizes {
  int64_t N, C, HxW, G;
};

/// Per-(n, g) mean and rstd of s = sigmoid((z + bias_c) * scale_c): two-pass per (n, c) plane in
/// double, planes combined in fixed order (Chan). mean, rstd: (N*G).
template <typename T>
void conv_block_stats_cpu(const ConvBlockCpuSizes& sz, const T* z, const T* bias, const T* scale,
                          double eps, double* mean, double* rstd);

/// y = (s - mean) * rstd * gamma + beta; y may be z.
template <typename T>
void conv_block_normalize_cpu(const ConvBlockCpuSizes& sz, const T* z, const double* mean,
                              const double* rstd, const T* bias, const T* scale, const T* gamma,
                              const T* beta, T* y);

/// The backward's reductions. With loss_target, other is the target and d = y - t, dy = dy_scale *
/// d, loss = sum d^2 * loss_scale (written when loss is non-null); else other is dy (dy_scale 1).
/// A, B (N*G): sum of dy*gamma and dy*gamma*xhat; dgamma, dbeta (C).
template <typename T>
void conv_block_reduce_cpu(const ConvBlockCpuSizes& sz, bool loss_target, const T* z,
                           const T* other, const double* mean, const double* rstd, const T* bias,
                           const T* scale, const T* gamma, const T* beta, double dy_scale,
                           double loss_scale, double* loss, double* A, double* B, double* dgamma,
                           double* dbeta);

/// dz from z and other (dy = gs * (y - t) with loss_target, else gs * other), with A and B already
/// multiplied by the output gradient; dbias and dscale (C) summed per plane, then over n in order.
template <typename T>
void conv_block_dz_cpu(const ConvBlockCpuSizes& sz, bool loss_target, const T* z, const T* other,
                       const double* mean, const double* rstd, const double* A, const double* B,
                       double a_scale, const T* bias, const T* scale, const T* gamma,
                       const T* beta, double gs, T* dz, double* dbias, double* dscale);

/// "" when the direct kernels (ops/conv_block/direct_kernels.cuh, compiled at run time) handle
/// (Cin, Cout, k) with the forward on TF32 (else FP32 FMAs) on the current device; else the reason.
std::string conv_block_direct_check(int cin, int cout, int k, bool tf32);

/// An on/off environment variable `name` with this value: unset, empty, 1, on or true: on (the
/// default); 0, off or false: off; anything else throws, naming the variable. TG_DIRECT_KERNELS
/// off: blocks the direct kernels handle take the epilogue path (no runtime compilation).
/// TG_TF32_WGRAD off: the direct backward's weight gradient stays on FP32 FMAs with TF32 allowed.
bool env_switch_enabled(const char* name, const char* value);
/// Compiles (or loads from the disk cache) the direct kernels of (Cin, Cout, k) for the current
/// device now rather than at first use; thread-safe, so several shapes can be prepared at once.
void conv_block_direct_prepare(int cin, int cout, int k, bool tf32);
ConvBlockShape conv_block_shape(int N, int H, int W, int k, int G);
int conv_block_backward_grid(const ConvBlockShape& sh, int cout);
int conv_block_reduce_chunks(const ConvBlockShape& sh);
void conv_block_forward_cuda(const ConvBlockForwardArgs& a);
void conv_block_normalize_cuda(const float* z, const float* mean, const float* rstd,
                               const float* bias, const float* scale, const float* gamma,
                               const float* beta, const ConvBlockShape& sh, int C, float* y);
void conv_block_reduce_cuda(const ConvBlockReduceArgs& a);
void conv_block_backward_cuda(const ConvBlockBackwardArgs& a);
/// Per-(n, g) mean and rstd from 4 floats (count, mean, M2, -) per (n, g, tile).
void conv_block_stats_finalize_cuda(const float* tile_stats, int NG, int tiles, double eps,
                                    float* mean, float* rstd);
/// The backward's gradients from blocks per-CTA partials (WS weight values, Cout biases each).
void conv_block_backward_finalize_cuda(const ConvBlockBackwardArgs& a, int blocks, int WS);

/// The epilogue path (generic.cu): statistics (and, with a target, the loss and the backward's
/// reductions) in one pass over z and the target, then small fixed-order finalize kernels.
void conv_block_moments_cuda(const ConvBlockMomentsArgs& a);
/// The epilogue path's backward without the convolutions: a.dz (may be null) and the gradients of
/// conv_bias, bias, scale, gamma, beta (each may be null); a.bias is b', a.x, a.dweight and the
/// partial buffers are not used.
void conv_block_epilogue_dz_cuda(const ConvBlockBackwardArgs& a);

}  // namespace detail
}  // namespace tg::ops

