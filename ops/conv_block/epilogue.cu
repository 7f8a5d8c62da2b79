// The fused block's kernels that do not convolve (the direct kernels' companions, see
// ops/conv_block/direct_kernels.cuh for the whole pipeline):
//   stats_finalize  one thread per (n, group): Chan's combination of per-tile statistics (double).
//   normalize       y = (s - mean) * rstd * gamma + beta, recomputing s from z.
//   reduce          one CTA per (chunk, c, n) of a channel plane: sum (y-t)^2, sum dy, sum dy * xhat
//                   (dy from the MSE loss, or given), float4 loads; partials, no atomics.
//   reduce_finalize the loss and, per (n, g), A = sum dy*gamma, B = sum dy*gamma*xhat; per channel
//                   dgamma, dbeta (fixed order, double; a warp per output for long sums).
//   backward_finalize  per-CTA weight-gradient and bias/scale partials summed in fixed order
//                   (32 outputs x 32 partial rows per block).
#include "../../core/cuda_reduce.cuh"
#include "../../core/cuda_utils.h"
#include "device.cuh"
#include "kernels.h"

namespace tg::ops::detail {
namespace {

using cuda::block_sum;
using cuda::warp_sum;

__global__ void stats_finalize_kernel(const float4* __restrict__ tile_stats, int NG, int tiles,
                                      double eps, float* __restrict__ mean, float* __restrict__ rstd) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= NG) return;
  double n = 0, m = 0, m2 = 0;
  for (int k = 0; k < tiles; ++k) {
    const float4 p = tile_stats[size_t(i) * tiles + k];
    const double nb = p.x;
    if (nb <= 0) continue;
    const double delta = double(p.y) - m;
    const double tot = n + nb;
    m += delta * nb / tot;
    m2 += double(p.z) + delta * delta * n * nb / tot;
    n = tot;
  }
  mean[i] = float(m);
  rstd[i] = float(1.0 / sqrt(m2 / n + eps));
}

// y = (sigmoid((z + b) * s) - mean) * rstd * gamma + beta; grid (chunks, C, N). y may alias z.
__global__ void normalize_kernel(const float* z, const float* __restrict__ mean,
                                 const float* __restrict__ rstd, const float* __restrict__ bias,
                                 const float* __restrict__ scale, const float* __restrict__ gamma,
                                 const float* __restrict__ beta, int C, int G, int64_t HW, int chunk,
                                 float* y) {
  const int c = blockIdx.y, n = blockIdx.z;
  const int ng = n * G + c / (C / G);
  const float m = mean[ng], r = rstd[ng], b = bias[c], s = scale[c];
  const float a = r * gamma[c], off = beta[c] - m * a;
  const size_t base = (size_t(n) * C + c) * HW;
  const int64_t lo = int64_t(blockIdx.x) * chunk, hi = min(HW, lo + chunk);
  if ((HW % 4) == 0 && (chunk % 4) == 0) {  // float4: aligned since base and lo are multiples of 4
    const float4* z4 = reinterpret_cast<const float4*>(z + base + lo);
    float4* y4 = reinterpret_cast<float4*>(y + base + lo);
    for (int64_t i = threadIdx.x; i < (hi - lo) / 4; i += blockDim.x) {
      float4 v = z4[i];
      v.x = sigmoidf((v.x + b) * s) * a + off;
      v.y = sigmoidf((v.y + b) * s) * a + off;
      v.z = sigmoidf((v.z + b) * s) * a + off;
      v.w = sigmoidf((v.w + b) * s) * a + off;
      y4[i] = v;
    }
  } else {
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x)
      y[base + i] = sigmoidf((z[base + i] + b) * s) * a + off;
  }
}

// ---- reductions for the backward ----------------------------------------------------------------

// part[(n*C + c)*S + s] = {sum d^2, sum d, sum d*xhat} with d = y - t (LOSS) or d = dy (given).
template <bool LOSS>
__global__ void reduce_kernel(const float* __restrict__ z, const float* __restrict__ other,
                              const float* __restrict__ mean, const float* __restrict__ rstd,
                              const float* __restrict__ bias, const float* __restrict__ scale,
                              const float* __restrict__ gamma, const float* __restrict__ beta, int C,
                              int G, int64_t HW, int chunk, float* __restrict__ part) {
  __shared__ float scratch[32 * 3];
  const int c = blockIdx.y, n = blockIdx.z;
  const int ng = n * G + c / (C / G);
  const float m = mean[ng], r = rstd[ng], b = bias[c], sc = scale[c], gm = gamma[c], bt = beta[c];
  const size_t base = (size_t(n) * C + c) * HW;
  const int64_t lo = int64_t(blockIdx.x) * chunk, hi = min(HW, lo + chunk);
  float v[3] = {0.f, 0.f, 0.f};
  auto one = [&](float zz, float o) {
    const float xh = (sigmoidf((zz + b) * sc) - m) * r;
    const float d = LOSS ? xh * gm + bt - o : o;
    v[0] = fmaf(d, d, v[0]);
    v[1] += d;
    v[2] = fmaf(d, xh, v[2]);
  };
  if ((HW % 4) == 0 && (chunk % 4) == 0) {
    const float4* z4 = reinterpret_cast<const float4*>(z + base + lo);
    const float4* o4 = reinterpret_cast<const float4*>(other + base + lo);
    const int64_t n4 = (hi - lo) / 4;
    for (int64_t i = threadIdx.x; i < n4; i += blockDim.x) {
      const float4 zz = __ldg(z4 + i), oo = __ldg(o4 + i);
      one(zz.x, oo.x);
      one(zz.y, oo.y);
      one(zz.z, oo.z);
      one(zz.w, oo.w);
    }
  } else {
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) one(z[base + i], other[base + i]);
  }
  block_sum<3>(v, scratch);
  if (threadIdx.x == 0) {
    float* p = part + ((size_t(n) * C + c) * gridDim.x + blockIdx.x) * 3;
    p[0] = v[0];
    p[1] = v[1];
    p[2] = v[2];
  }
}

// One block of 1024 threads. dscale multiplies sums of d into sums of dy (2/numel for the loss, 1
// for a given dy). Every sum is over a fixed assignment of partials to threads and a fixed
// reduction tree, so the results are the same bits on every run. Sums of more than
// kSerialTerms partials are spread over the 32 lanes of a warp (one warp per output), shorter ones
// run serially in one thread (one thread per output): a long serial chain of dependent loads is what
// made this kernel ~20 us at the small size.
constexpr int kSerialTerms = 48;

__global__ void reduce_finalize_kernel(const float* __restrict__ part, int N, int C, int G, int S,
                                       const float* __restrict__ gamma, double dscale,
                                       double loss_scale, float* __restrict__ loss,
                                       float* __restrict__ A, float* __restrict__ B,
                                       float* __restrict__ dgamma, float* __restrict__ dbeta) {
  __shared__ double scratch[32];
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5, nwarps = blockDim.x >> 5;
  if (loss) {
    double v = 0;
    for (int i = t; i < N * C * S; i += blockDim.x) v += part[size_t(i) * 3];
    v = block_sum(v, scratch);
    if (t == 0) *loss = float(v * loss_scale);
  }
  // Per (n, g): A = sum over the group's channels c and chunks s of gamma[c] * part[n, c, s][1],
  // B the same of part[..][2].
  const int D = C / G, terms = D * S;
  auto ab_term = [&](int n, int g, int j, double& a, double& b) {
    const int c = g * D + j / S, s = j % S;
    const float* p = part + ((size_t(n) * C + c) * S + s) * 3;
    a += double(gamma[c]) * p[1];
    b += double(gamma[c]) * p[2];
  };
  if (terms <= kSerialTerms) {
    for (int i = t; i < N * G; i += blockDim.x) {
      double a = 0, b = 0;
      for (int j = 0; j < terms; ++j) ab_term(i / G, i % G, j, a, b);
      A[i] = float(a * dscale);
      B[i] = float(b * dscale);
    }
  } else {
    for (int i = warp; i < N * G; i += nwarps) {
      double a = 0, b = 0;
      for (int j = lane; j < terms; j += 32) ab_term(i / G, i % G, j, a, b);
      a = warp_sum(a);
      b = warp_sum(b);
      if (lane == 0) {
        A[i] = float(a * dscale);
        B[i] = float(b * dscale);
      }
    }
  }
  // Per channel: dbeta = sum over n and s of part[n, c, s][1], dgamma of part[..][2].
  auto c_term = [&](int c, int j, double& db, double& dg) {
    const float* p = part + ((size_t(j / S) * C + c) * S + j % S) * 3;
    db += p[1];
    dg += p[2];
  };
  if (N * S <= kSerialTerms) {
    for (int c = t; c < C; c += blockDim.x) {
      double db = 0, dg = 0;
      for (int j = 0; j < N * S; ++j) c_term(c, j, db, dg);
      dbeta[c] = float(db * dscale);
      dgamma[c] = float(dg * dscale);
    }
  } else {
    for (int c = warp; c < C; c += nwarps) {
      double db = 0, dg = 0;
      for (int j = lane; j < N * S; j += 32) c_term(c, j, db, dg);
      db = warp_sum(db);
      dg = warp_sum(dg);
      if (lane == 0) {
        dbeta[c] = float(db * dscale);
        dgamma[c] = float(dg * dscale);
      }
    }
  }
}

// Sums per-CTA partials in fixed order: dW (WS values), d conv_bias = d bias, d scale; and scales the
// forward-time GroupNorm parameter gradients by the output gradient. A block of 32 x 32 threads
// takes 32 consecutive outputs (threadIdx.x: coalesced loads); its 32 rows (threadIdx.y) sum the
// partials b = y, y + 32, ... and row 0 adds the 32 row sums in order: deterministic, and chains of
// blocks / 32 loads instead of `blocks` (one serial thread per output took ~46 us at the small size).
constexpr int kFinalizeRows = 32;

__global__ void backward_finalize_kernel(const float* __restrict__ dw_part,
                                         const float* __restrict__ dbias_part,
                                         const float* __restrict__ dscale_part, int blocks, int WS,
                                         int C, const float* __restrict__ dgamma_u,
                                         const float* __restrict__ dbeta_u,
                                         const float* __restrict__ gout_ptr, float* dw, float* dcb,
                                         float* dbias, float* dscale, float* dgamma, float* dbeta) {
  __shared__ double rows[2][kFinalizeRows][33];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int i = blockIdx.x * 32 + tx;
  double v0 = 0, v1 = 0;
  if (i < WS) {
    for (int b = ty; b < blocks; b += kFinalizeRows) v0 += dw_part[size_t(b) * WS + i];
  } else if (i < WS + C) {
    const int c = i - WS;
    for (int b = ty; b < blocks; b += kFinalizeRows) {
      v0 += dbias_part[size_t(b) * C + c];
      v1 += dscale_part[size_t(b) * C + c];
    }
  }
  rows[0][ty][tx] = v0;
  rows[1][ty][tx] = v1;
  __syncthreads();
  if (ty != 0 || i >= WS + C) return;
  double s0 = 0, s1 = 0;
  for (int r = 0; r < kFinalizeRows; ++r) {
    s0 += rows[0][r][tx];
    s1 += rows[1][r][tx];
  }
  if (i < WS) {
    if (dw) dw[i] = float(s0);
    return;
  }
  const int c = i - WS;
  if (dcb) dcb[c] = float(s0);
  if (dbias) dbias[c] = float(s0);
  if (dscale) dscale[c] = float(s1);
  const float g = gout_ptr ? *gout_ptr : 1.0f;
  if (dgamma) dgamma[c] = dgamma_u[c] * g;
  if (dbeta) dbeta[c] = dbeta_u[c] * g;
}

int reduce_chunks(int64_t HW) {
  // about 16K elements per CTA, a multiple of 4 so that float4 loads stay aligned
  int64_t s = (HW + 16383) / 16384;
  return int(s < 1 ? 1 : s);
}
int reduce_chunk_size(int64_t HW, int S) { return int(((HW + S - 1) / S + 3) / 4 * 4); }

}  // namespace

int conv_block_reduce_chunks(const ConvBlockShape& sh) {
  return reduce_chunks(int64_t(sh.Ho) * sh.Wo);
}

void conv_block_normalize_cuda(const float* z, const float* mean, const float* rstd,
                               const float* bias, const float* scale, const float* gamma,
                               const float* beta, const ConvBlockShape& sh, int C, float* y) {
  const int64_t HW = int64_t(sh.Ho) * sh.Wo;
  const int S = reduce_chunks(HW);
  const int chunk = reduce_chunk_size(HW, S);
  dim3 grid(S, C, sh.N);
  normalize_kernel<<<grid, 256, 0, cuda::stream()>>>(z, mean, rstd, bias, scale, gamma, beta, C,
                                                      sh.G, HW, chunk, y);
  TG_CUDA_CHECK_LAUNCH();
}

void conv_block_reduce_cuda(const ConvBlockReduceArgs& a) {
  const ConvBlockShape& sh = a.shape;
  const int64_t HW = int64_t(sh.Ho) * sh.Wo;
  const int S = reduce_chunks(HW);
  const int chunk = reduce_chunk_size(HW, S);
  dim3 grid(S, a.cout, sh.N);
  cudaStream_t s = cuda::stream();
  if (a.loss_target)
    reduce_kernel<true><<<grid, 256, 0, s>>>(a.z, a.other, a.mean, a.rstd, a.bias, a.scale, a.gamma,
                                             a.beta, a.cout, sh.G, HW, chunk, a.part);
  else
    reduce_kernel<false><<<grid, 256, 0, s>>>(a.z, a.other, a.mean, a.rstd, a.bias, a.scale, a.gamma,
                                              a.beta, a.cout, sh.G, HW, chunk, a.part);
  TG_CUDA_CHECK_LAUNCH();
  const double numel = double(sh.N) * a.cout * HW;
  const double dscale = a.loss_target ? 2.0 / numel : 1.0;
  reduce_finalize_kernel<<<1, 1024, 0, s>>>(a.part, sh.N, a.cout, sh.G, S, a.gamma, dscale,
                                            1.0 / numel, a.loss, a.A, a.B, a.dgamma_u, a.dbeta_u);
  TG_CUDA_CHECK_LAUNCH();
}


void conv_block_stats_finalize_cuda(const float* tile_stats, int NG, int tiles, double eps,
                                    float* mean, float* rstd) {
  stats_finalize_kernel<<<(NG + 127) / 128, 128, 0, cuda::stream()>>>(
      reinterpret_cast<const float4*>(tile_stats), NG, tiles, eps, mean, rstd);
  TG_CUDA_CHECK_LAUNCH();
}

void conv_block_backward_finalize_cuda(const ConvBlockBackwardArgs& a, int blocks, int WS) {
  const int n = WS + a.cout;
  backward_finalize_kernel<<<(n + 31) / 32, dim3(32, kFinalizeRows), 0, cuda::stream()>>>(
      a.dw_part, a.dbias_part, a.dscale_part, blocks, WS, a.cout, a.dgamma_u, a.dbeta_u, a.gout,
      a.dweight, a.dconv_bias, a.dbias, a.dscale, a.dgamma, a.dbeta);
  TG_CUDA_CHECK_LAUNCH();
}

}  // namespace tg::ops::detail
