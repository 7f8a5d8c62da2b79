// The model's whole block as one op, and that block with its MSE loss:
//
//   y    = group_norm(sigmoid((conv2d(x, weight, conv_bias) + bias) * scale), groups, gamma, beta)
//   loss = mean((y - target)^2)
//
// On CUDA, float32, stride 1, no padding and a (Cin, Cout, k) with compiled kernels (8->32 and
// 3->16 with k = 3; conv_block_fused_available() says), both run as a few fused kernels (see
// ops/conv_block.cu): the forward writes only z = conv(x) + conv_bias and per-(n, group) statistics;
// conv_block_mse_loss also computes, during the forward, the reductions that the backward needs, so
// the backward is one pass over x, z and target that produces dz on the fly and accumulates the weight
// gradient without ever writing dz. Saved: x, z, target, mean and rstd per (n, group), and a few
// per-channel and per-group sums. Everything else (CPU, float64, other shapes) is the composition of
// the unfused ops, which the tests compare against.
#pragma once

#include "../core/tensor.h"

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

/// True when the fused CUDA kernels handle this input and these parameters.
bool conv_block_fused_available(const Tensor& x, const ConvBlockParams& p);

/// True when the fused CPU path handles this input (x on the CPU, float32 or float64, non-empty, a
/// kernel no larger than the input); otherwise the CPU runs the composition.
bool conv_block_fused_cpu_available(const Tensor& x, const ConvBlockParams& p);

namespace detail {

struct ConvBlockShape {
  int N, H, W, Ho, Wo, G, tiles_y, tiles_x;
};

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
  const float *x, *z, *other, *mean, *rstd, *A, *B, *bias, *scale, *gamma, *beta;
  const float* gout;  ///< device scalar: the loss's output gradient (null: 1)
  float dy_scale;     ///< 2/numel for the loss; 1 for a given dy
  const float *dgamma_u, *dbeta_u;
  float* dz;          ///< optional: dz written out (for dx)
  float *dw_part, *dbias_part, *dscale_part;
  float *dweight, *dconv_bias, *dbias, *dscale, *dgamma, *dbeta;  ///< any may be null
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

bool conv_block_supported(int cin, int cout, int k);
ConvBlockShape conv_block_shape(int N, int H, int W, int k, int G);
int conv_block_backward_grid(const ConvBlockShape& sh, int cout);
int conv_block_reduce_chunks(const ConvBlockShape& sh);
void conv_block_forward_cuda(const ConvBlockForwardArgs& a);
void conv_block_normalize_cuda(const float* z, const float* mean, const float* rstd,
                               const float* bias, const float* scale, const float* gamma,
                               const float* beta, const ConvBlockShape& sh, int C, float* y);
void conv_block_reduce_cuda(const ConvBlockReduceArgs& a);
void conv_block_backward_cuda(const ConvBlockBackwardArgs& a);

}  // namespace detail
}  // namespace tg::ops
