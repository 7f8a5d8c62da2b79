// The epilogue path's kernels: every float32 CUDA block the direct kernels do not handle. cuDNN
// convolves (ops/conv_block/op.cpp calls ops/conv2d's launchers); these kernels do the rest without
// writing s or y. z here is cuDNN's conv(x) without conv_bias: b' = conv_bias + bias is added where
// the bias is added anyway.
//
// With s = sigmoid((z + b') * scale), xhat = (s - mean) * rstd, y = xhat * gamma + beta, d = y - t:
//   moments         one CTA per (n, c, chunk of <= 2048 pixels), 8 pixels per thread in registers;
//                   two-pass: the chunk's float means K (of s) and L (of t), then in double the
//                   shifted sums of s - K, t - L, their squares and their product, so the chunk's
//                   mean, M2 and co-moment carry no cancellation. Writes b' (once per channel).
//   moments_plane   one thread per (n, c): Chan's combination of the plane's chunks in order
//                   (double).
//   moments_group   one thread per (n, g): mean and rstd (two-pass over the group's planes, as the
//                   CPU path does); for the loss, per plane from the moments alone (y is affine in
//                   s), with a = gamma rstd and dbar = a (sbar - mean) + beta - tbar:
//                     sum d      = m dbar
//                     sum d xhat = rstd (a M2_s - C_st + m dbar (sbar - mean))
//                     sum d^2    = a^2 M2_s - 2 a C_st + M2_t + m dbar^2
//                   (mean and rstd as rounded to float, the values the backward uses), and from
//                   them A = sum dy gamma and B = sum dy gamma xhat per (n, g).
//   moments_channel one block: dgamma, dbeta per channel (sums over n in order) and the loss.
//   dz              per (n, c, chunk) like moments: dz = scale s (1 - s) rstd (dy gamma - A/M -
//                   xhat B/M), recomputing s, xhat, y and dy from z and the target (or the given
//                   dy); writes dz (optional) and per-(n, chunk) partials of d bias and d scale,
//                   which backward_finalize (epilogue.cu) sums in fixed order.
// No float atomics: every result has a fixed order of additions, so runs give the same bits.
#include "../../core/cuda_reduce.cuh"
#include "../../core/cuda_utils.h"
#include "device.cuh"
#include "kernels.h"

namespace tg::ops::detail {
namespace {

using cuda::block_sum;

constexpr int kPerThread = 8;  // pixels per thread per chunk, held in registers
constexpr int kMaxThreads = 256;

// The chunking of one HW plane: threads per CTA (a multiple of 32), pixels per chunk, chunks per
// plane. Depends on HW only, so every GPU reduces in the same order.
struct Chunking {
  int threads, chunk, S;
};
Chunking chunking(int64_t HW) {
  int64_t t = (HW + kPerThread - 1) / kPerThread;
  t = (t + 31) / 32 * 32;
  if (t > kMaxThreads) t = kMaxThreads;
  Chunking c;
  c.threads = int(t);
  c.chunk = c.threads * kPerThread;
  c.S = int((HW + c.chunk - 1) / c.chunk);
  return c;
}

// Chan's combination of (count, mean, M2) statistics with a co-moment: (na; mean_s, M2_s, mean_t,
// M2_t, C_st) += (nb; b[...]). With one variable (NV = 2) only the first two fields are used.
template <int NV>
__device__ void chan_add(double& na, double (&a)[5], double nb, const double* b) {
  if (nb <= 0) return;
  const double n = na + nb;
  const double ds = b[0] - a[0], f = na * nb / n;
  a[0] += ds * nb / n;
  a[1] += b[1] + ds * ds * f;
  if constexpr (NV == 5) {
    const double dt = b[2] - a[2];
    a[2] += dt * nb / n;
    a[3] += b[3] + dt * dt * f;
    a[4] += b[4] + ds * dt * f;
  }
  na = n;
}

// part[(plane * S + chunk) * NV]: mean_s, M2_s (NV = 2), then mean_t, M2_t, C_st (NV = 5).
template <bool LOSS>
__global__ void __launch_bounds__(kMaxThreads)
    moments_kernel(const float* __restrict__ z, const float* __restrict__ target,
                   const float* __restrict__ conv_bias, const float* __restrict__ bias,
                   const float* __restrict__ scale, int C, int64_t HW, int chunk, int S,
                   float* __restrict__ bias_eff, double* __restrict__ part) {
  constexpr int NV = LOSS ? 5 : 2;
  __shared__ float fscratch[32 * 2];
  __shared__ double dscratch[32 * 5];
  __shared__ float shift[2];
  const int plane = blockIdx.x / S, ch = blockIdx.x % S, c = plane % C;
  const float b = conv_bias[c] + bias[c], k = scale[c];
  if (plane == c && ch == 0 && threadIdx.x == 0) bias_eff[c] = b;  // n = 0 writes b' once
  const int64_t lo = int64_t(ch) * chunk;
  const int cnt = int(HW - lo < chunk ? HW - lo : chunk);
  const size_t base = size_t(plane) * HW + lo;

  float s[kPerThread], t[kPerThread];
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) {
    const int i = threadIdx.x + j * blockDim.x;
    s[j] = i < cnt ? __ldg(z + base + i) : 0.f;
    t[j] = LOSS && i < cnt ? __ldg(target + base + i) : 0.f;
  }
  float sum[2] = {0.f, 0.f};
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) {
    const int i = threadIdx.x + j * blockDim.x;
    s[j] = i < cnt ? sigmoidf((s[j] + b) * k) : 0.f;
    sum[0] += s[j];
    sum[1] += t[j];
  }
  // pass 1: the chunk's means in float (shifts only: pass 2 corrects them exactly)
  block_sum<2>(sum, fscratch);
  if (threadIdx.x == 0) {
    shift[0] = sum[0] / float(cnt);
    shift[1] = sum[1] / float(cnt);
  }
  __syncthreads();
  const float K = shift[0], L = shift[1];
  // pass 2: shifted sums in double
  double v[NV] = {};
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i < cnt) {
      const float ds = s[j] - K;
      v[0] += double(ds);
      v[1] += double(ds * ds);
      if constexpr (LOSS) {
        const float dt = t[j] - L;
        v[2] += double(dt);
        v[3] += double(dt * dt);
        v[4] += double(ds * dt);
      }
    }
  }
  block_sum<NV>(v, dscratch);
  if (threadIdx.x == 0) {
    const double m = cnt;
    double* p = part + size_t(blockIdx.x) * NV;
    p[0] = double(K) + v[0] / m;
    p[1] = v[1] - v[0] * v[0] / m;
    if constexpr (LOSS) {
      p[2] = double(L) + v[2] / m;
      p[3] = v[3] - v[2] * v[2] / m;
      p[4] = v[4] - v[0] * v[2] / m;
    }
  }
}

// plane[pl * NV] from its S chunks, in order.
template <int NV>
__global__ void moments_plane_kernel(const double* __restrict__ part, int planes, int S, int64_t HW,
                                     int chunk, double* __restrict__ plane) {
  const int pl = blockIdx.x * blockDim.x + threadIdx.x;
  if (pl >= planes) return;
  double n = 0, a[5] = {0, 0, 0, 0, 0};
  for (int s = 0; s < S; ++s) {
    const int64_t lo = int64_t(s) * chunk;
    const double nb = double(HW - lo < chunk ? HW - lo : chunk);
    chan_add<NV>(n, a, nb, part + (size_t(pl) * S + s) * NV);
  }
  for (int i = 0; i < NV; ++i) plane[size_t(pl) * NV + i] = a[i];
}

// Per (n, g): mean, rstd; with the loss also A, B, the group's sum of d^2 (sq) and, per plane,
// sum d and sum d xhat (pd, 2 per plane). dy_scale turns sums of d into sums of dy (2 / numel).
template <bool LOSS>
__global__ void moments_group_kernel(const double* __restrict__ plane, int N, int C, int G,
                                     int64_t HW, double eps, const float* __restrict__ gamma,
                                     const float* __restrict__ beta, double dy_scale,
                                     float* __restrict__ mean, float* __restrict__ rstd,
                                     float* __restrict__ A, float* __restrict__ B,
                                     double* __restrict__ sq, double* __restrict__ pd) {
  constexpr int NV = LOSS ? 5 : 2;
  const int ng = blockIdx.x * blockDim.x + threadIdx.x;
  if (ng >= N * G) return;
  const int D = C / G, c0 = (ng % G) * D;
  const double* pg = plane + size_t(ng) * D * NV;  // the group's planes are consecutive
  double mu = 0;
  for (int d = 0; d < D; ++d) mu += pg[d * NV];
  mu /= D;
  double m2 = 0;
  for (int d = 0; d < D; ++d) {
    const double e = pg[d * NV] - mu;
    m2 += pg[d * NV + 1] + double(HW) * e * e;
  }
  const float mf = float(mu), rf = float(1.0 / sqrt(m2 / (double(D) * double(HW)) + eps));
  mean[ng] = mf;
  rstd[ng] = rf;
  if (!LOSS) return;
  const double m = double(mf), r = double(rf), cnt = double(HW);
  double a_sum = 0, b_sum = 0, q = 0;
  for (int d = 0; d < D; ++d) {
    const double* p = pg + d * NV;
    const double gm = gamma[c0 + d], a = gm * r, e = p[0] - m;
    const double dbar = a * e + double(beta[c0 + d]) - p[2];
    const double s1 = cnt * dbar;
    const double sx = r * (a * p[1] - p[4] + cnt * dbar * e);
    q += a * a * p[1] - 2 * a * p[4] + p[3] + cnt * dbar * dbar;
    a_sum += gm * s1;
    b_sum += gm * sx;
    pd[(size_t(ng) * D + d) * 2] = s1;
    pd[(size_t(ng) * D + d) * 2 + 1] = sx;
  }
  A[ng] = float(a_sum * dy_scale);
  B[ng] = float(b_sum * dy_scale);
  sq[ng] = q;
}

// One block: dbeta, dgamma per channel (for an output gradient of 1) and the loss.
__global__ void moments_channel_kernel(const double* __restrict__ pd, const double* __restrict__ sq,
                                       int N, int C, int G, double dy_scale, double loss_scale,
                                       float* __restrict__ loss, float* __restrict__ dgamma,
                                       float* __restrict__ dbeta) {
  __shared__ double sh[256];
  const int t = threadIdx.x;
  double v = 0;
  for (int i = t; i < N * G; i += blockDim.x) v += sq[i];
  sh[t] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (t < s) sh[t] += sh[t + s];
    __syncthreads();
  }
  if (t == 0) *loss = float(sh[0] * loss_scale);
  for (int c = t; c < C; c += blockDim.x) {
    double db = 0, dg = 0;
    for (int n = 0; n < N; ++n) {
      db += pd[(size_t(n) * C + c) * 2];
      dg += pd[(size_t(n) * C + c) * 2 + 1];
    }
    dbeta[c] = float(db * dy_scale);
    dgamma[c] = float(dg * dy_scale);
  }
}

// dz and per-(n, chunk) partials of d bias (sum dz) and d scale (sum du * (z + b')):
// db_part[(n * S + chunk) * C + c], the layout backward_finalize reads.
template <bool LOSS>
__global__ void __launch_bounds__(kMaxThreads)
    dz_kernel(const float* __restrict__ z, const float* __restrict__ other,
              const float* __restrict__ mean, const float* __restrict__ rstd,
              const float* __restrict__ A, const float* __restrict__ B,
              const float* __restrict__ bias, const float* __restrict__ scale,
              const float* __restrict__ gamma, const float* __restrict__ beta,
              const float* __restrict__ gout_ptr, float dy_scale, int C, int G, int64_t HW,
              int chunk, int S, float* __restrict__ dz, float* __restrict__ db_part,
              float* __restrict__ ds_part) {
  __shared__ float scratch[32 * 2];
  const int plane = blockIdx.x / S, ch = blockIdx.x % S, c = plane % C, n = plane / C;
  const int D = C / G, ng = n * G + c / D;
  const float gout = gout_ptr ? *gout_ptr : 1.0f;
  const float gs = gout * dy_scale;
  const float inv_m = 1.0f / float(double(D) * double(HW));
  const float m = mean[ng], r = rstd[ng], a_ = A[ng] * gout * inv_m, b_ = B[ng] * gout * inv_m;
  const float bb = bias[c], sc = scale[c], gm = gamma[c], bt = beta[c];
  const int64_t lo = int64_t(ch) * chunk;
  const int cnt = int(HW - lo < chunk ? HW - lo : chunk);
  const size_t base = size_t(plane) * HW + lo;

  float zr[kPerThread], orr[kPerThread];
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) {
    const int i = threadIdx.x + j * blockDim.x;
    zr[j] = i < cnt ? __ldg(z + base + i) : 0.f;
    orr[j] = i < cnt ? __ldg(other + base + i) : 0.f;
  }
  float acc[2] = {0.f, 0.f};
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i < cnt) {
      const float zb = zr[j] + bb;
      const float s = sigmoidf(zb * sc);
      const float xh = (s - m) * r;
      const float dy = LOSS ? gs * (xh * gm + bt - orr[j]) : gs * orr[j];
      const float du = r * (dy * gm - a_ - xh * b_) * s * (1.f - s);
      const float dzv = du * sc;
      acc[0] += dzv;
      acc[1] = fmaf(du, zb, acc[1]);
      if (dz) dz[base + i] = dzv;
    }
  }
  block_sum<2>(acc, scratch);
  if (threadIdx.x == 0) {
    const size_t o = (size_t(n) * S + ch) * C + c;
    db_part[o] = acc[0];
    ds_part[o] = acc[1];
  }
}

Tensor scratch_f64(int64_t n) { return Tensor::empty({n}, DType::Float64, Device::CUDA); }

}  // namespace

void conv_block_moments_cuda(const ConvBlockMomentsArgs& a) {
  const ConvBlockShape& sh = a.shape;
  const int64_t HW = int64_t(sh.Ho) * sh.Wo;
  const int C = a.cout, planes = sh.N * C;
  const Chunking ck = chunking(HW);
  const bool loss = a.target != nullptr;
  const int NV = loss ? 5 : 2;
  cudaStream_t st = cuda::stream();
  Tensor part = scratch_f64(int64_t(planes) * ck.S * NV);
  Tensor plane = scratch_f64(int64_t(planes) * NV);
  const int blocks = planes * ck.S;
  if (loss)
    moments_kernel<true><<<blocks, ck.threads, 0, st>>>(a.z, a.target, a.conv_bias, a.bias, a.scale,
                                                        C, HW, ck.chunk, ck.S, a.bias_eff,
                                                        part.data<double>());
  else
    moments_kernel<false><<<blocks, ck.threads, 0, st>>>(a.z, nullptr, a.conv_bias, a.bias, a.scale,
                                                         C, HW, ck.chunk, ck.S, a.bias_eff,
                                                         part.data<double>());
  TG_CUDA_CHECK_LAUNCH();
  const int pgrid = (planes + 127) / 128;
  if (loss)
    moments_plane_kernel<5><<<pgrid, 128, 0, st>>>(part.data<double>(), planes, ck.S, HW, ck.chunk,
                                                   plane.data<double>());
  else
    moments_plane_kernel<2><<<pgrid, 128, 0, st>>>(part.data<double>(), planes, ck.S, HW, ck.chunk,
                                                   plane.data<double>());
  TG_CUDA_CHECK_LAUNCH();
  const int NG = sh.N * sh.G, ggrid = (NG + 127) / 128;
  const double numel = double(planes) * double(HW);
  if (!loss) {
    moments_group_kernel<false><<<ggrid, 128, 0, st>>>(plane.data<double>(), sh.N, C, sh.G, HW,
                                                       a.eps, a.gamma, a.beta, 0.0, a.mean, a.rstd,
                                                       nullptr, nullptr, nullptr, nullptr);
    TG_CUDA_CHECK_LAUNCH();
    return;
  }
  Tensor sq = scratch_f64(NG);
  Tensor pd = scratch_f64(int64_t(planes) * 2);
  const double dy_scale = 2.0 / numel;
  moments_group_kernel<true><<<ggrid, 128, 0, st>>>(plane.data<double>(), sh.N, C, sh.G, HW, a.eps,
                                                    a.gamma, a.beta, dy_scale, a.mean, a.rstd, a.A,
                                                    a.B, sq.data<double>(), pd.data<double>());
  TG_CUDA_CHECK_LAUNCH();
  moments_channel_kernel<<<1, 256, 0, st>>>(pd.data<double>(), sq.data<double>(), sh.N, C, sh.G,
                                            dy_scale, 1.0 / numel, a.loss, a.dgamma_u, a.dbeta_u);
  TG_CUDA_CHECK_LAUNCH();
}

void conv_block_epilogue_dz_cuda(const ConvBlockBackwardArgs& a) {
  const ConvBlockShape& sh = a.shape;
  const int64_t HW = int64_t(sh.Ho) * sh.Wo;
  const int C = a.cout;
  const Chunking ck = chunking(HW);
  const int parts = sh.N * ck.S;
  Tensor db = Tensor::empty({int64_t(parts) * C}, DType::Float32, Device::CUDA);
  Tensor ds = Tensor::empty({int64_t(parts) * C}, DType::Float32, Device::CUDA);
  const int blocks = sh.N * C * ck.S;
  cudaStream_t st = cuda::stream();
  if (a.loss_target)
    dz_kernel<true><<<blocks, ck.threads, 0, st>>>(
        a.z, a.other, a.mean, a.rstd, a.A, a.B, a.bias, a.scale, a.gamma, a.beta, a.gout,
        a.dy_scale, C, sh.G, HW, ck.chunk, ck.S, a.dz, db.data<float>(), ds.data<float>());
  else
    dz_kernel<false><<<blocks, ck.threads, 0, st>>>(
        a.z, a.other, a.mean, a.rstd, a.A, a.B, a.bias, a.scale, a.gamma, a.beta, a.gout,
        a.dy_scale, C, sh.G, HW, ck.chunk, ck.S, a.dz, db.data<float>(), ds.data<float>());
  TG_CUDA_CHECK_LAUNCH();
  ConvBlockBackwardArgs f = a;
  f.dweight = nullptr;  // cuDNN's, not ours
  f.dbias_part = db.data<float>();
  f.dscale_part = ds.data<float>();
  conv_block_backward_finalize_cuda(f, parts, 0);
}

}  // namespace tg::ops::detail
