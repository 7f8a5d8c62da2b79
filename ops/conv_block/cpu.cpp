// The fused block's CPU passes (the op and its nodes: ops/conv_block/op.cpp).
//
// CPU path (float32 and float64), with s = sigmoid((z + bias_c) * scale_c), xhat = (s - mean) * rstd,
// y = xhat * gamma_c + beta_c:
//   forward    z = conv(x) + conv_bias through conv2d's CPU launcher (im2col + Eigen GEMM, OpenMP
//              over the batch); statistics: per (n, c) plane the count, mean and M2 of s (two-pass,
//              double), combined per (n, g) in fixed order (Chan); conv_block then writes y.
//   reduce     per plane, sum d^2, sum d, sum d * xhat with d = y - target (the loss) or d = dy;
//              then, in fixed order, the loss, A = sum dy*gamma and B = sum dy*gamma*xhat per (n, g),
//              and dgamma, dbeta per channel. For the loss this runs in the forward (with dy for an
//              output gradient of 1; the backward scales by the real one).
//   backward   per plane, dz = scale * s(1-s) * rstd * (dy*gamma - A/M - xhat*B/M), recomputing s,
//              xhat, y and dy from z (and the target); per-plane sums for dbias (= dconv_bias) and
//              dscale, added over n in fixed order; then dweight (and dx only when x needs a
//              gradient) through conv2d's CPU backward launcher.
// Elementwise passes: OpenMP over the N*C planes, sigmoid through Eigen's vectorised exp into a
// per-thread plane buffer, sums in double over 8 fixed lanes. Every reduction has a fixed order, so
// results do not depend on the number of threads. Saved: x, the parameters, z, the target, mean and
// rstd per (n, g) in double, and for the loss A, B, dgamma, dbeta.
#include "kernels.h"

// GCC 12 reports its own AVX-512 intrinsics' _mm512_undefined_* results as maybe uninitialized when
// Eigen's vectorised exp inlines them (GCC bug 105593, a false positive; conv2d.cpp shows it too).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <Eigen/Core>

#include <cmath>
#include <vector>

namespace tg::ops {

// ---- CPU kernels --------------------------------------------------------------------------------

namespace detail {
namespace {

constexpr int kLanes = 8;

// Per-thread plane buffers, aligned for Eigen's packets. Eigen's expressions write only into these:
// a destination's alignment decides which elements take the vector path (Eigen's exp) and which the
// scalar one (std::exp), so writing into tensor memory would make the bits depend on the address.
template <typename T>
using Buf = std::vector<T, Eigen::aligned_allocator<T>>;
template <typename T>
using ArrMap = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>, Eigen::Aligned>;
template <typename T>
using ConstArrMap = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;

// Sums in double over kLanes independent lanes (vectorisable, fixed order), lanes added in order.
template <typename T>
double sum_lanes(const T* a, int64_t n) {
  double acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += double(a[i + j]);
  for (int j = 0; i + j < n; ++j) acc[j] += double(a[i + j]);
  double r = 0;
  for (int j = 0; j < kLanes; ++j) r += acc[j];
  return r;
}

template <typename T>
double dot_lanes(const T* a, const T* b, int64_t n) {
  double acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += double(a[i + j]) * double(b[i + j]);
  for (int j = 0; i + j < n; ++j) acc[j] += double(a[i + j]) * double(b[i + j]);
  double r = 0;
  for (int j = 0; j < kLanes; ++j) r += acc[j];
  return r;
}

// sum (a - mu)^2 in double.
template <typename T>
double sq_dev_lanes(const T* a, double mu, int64_t n) {
  double acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) {
      const double d = double(a[i + j]) - mu;
      acc[j] += d * d;
    }
  for (int j = 0; i + j < n; ++j) {
    const double d = double(a[i + j]) - mu;
    acc[j] += d * d;
  }
  double r = 0;
  for (int j = 0; j < kLanes; ++j) r += acc[j];
  return r;
}

// s = sigmoid((z + b) * k) for one plane; s is an aligned buffer.
template <typename T>
void sigmoid_plane(const T* z, T b, T k, int64_t n, T* s) {
  ArrMap<T>(s, n) = (T(1) + ((ConstArrMap<T>(z, n) + b) * (-k)).exp()).inverse();
}

}  // namespace

template <typename T>
void conv_block_stats_cpu(const ConvBlockCpuSizes& sz, const T* z, const T* bias, const T* scale,
                          double eps, double* mean, double* rstd) {
  const int64_t N = sz.N, C = sz.C, HxW = sz.HxW, G = sz.G, D = C / G;
  std::vector<double> pmean(N * C), pm2(N * C);
#pragma omp parallel
  {
    Buf<T> s(HxW);
#pragma omp for schedule(static)
    for (int64_t pl = 0; pl < N * C; ++pl) {
      const int64_t c = pl % C;
      sigmoid_plane(z + pl * HxW, bias[c], scale[c], HxW, s.data());
      const double mu = sum_lanes(s.data(), HxW) / double(HxW);
      pmean[pl] = mu;
      pm2[pl] = sq_dev_lanes(s.data(), mu, HxW);
    }
  }
  // Chan's combination of the group's D planes (equal counts), in channel order.
  for (int64_t ng = 0; ng < N * G; ++ng) {
    const double* pm = pmean.data() + ng * D;
    const double* p2 = pm2.data() + ng * D;
    double mu = 0;
    for (int64_t d = 0; d < D; ++d) mu += pm[d];
    mu /= double(D);
    double m2 = 0;
    for (int64_t d = 0; d < D; ++d) m2 += p2[d] + double(HxW) * (pm[d] - mu) * (pm[d] - mu);
    mean[ng] = mu;
    rstd[ng] = 1.0 / std::sqrt(m2 / double(D * HxW) + eps);
  }
}

template <typename T>
void conv_block_normalize_cpu(const ConvBlockCpuSizes& sz, const T* z, const double* mean,
                              const double* rstd, const T* bias, const T* scale, const T* gamma,
                              const T* beta, T* y) {
  const int64_t C = sz.C, HxW = sz.HxW, D = C / sz.G;
#pragma omp parallel
  {
    Buf<T> s(HxW);
#pragma omp for schedule(static)
    for (int64_t pl = 0; pl < sz.N * C; ++pl) {
      const int64_t c = pl % C, ng = pl / D;  // planes of a group are consecutive
      const double a = rstd[ng] * double(gamma[c]);
      const T ta = T(a), off = T(double(beta[c]) - mean[ng] * a);
      sigmoid_plane(z + pl * HxW, bias[c], scale[c], HxW, s.data());
      T* yp = y + pl * HxW;
      for (int64_t i = 0; i < HxW; ++i) yp[i] = s[i] * ta + off;
    }
  }
}

template <typename T>
void conv_block_reduce_cpu(const ConvBlockCpuSizes& sz, bool loss_target, const T* z,
                           const T* other, const double* mean, const double* rstd, const T* bias,
                           const T* scale, const T* gamma, const T* beta, double dy_scale,
                           double loss_scale, double* loss, double* A, double* B, double* dgamma,
                           double* dbeta) {
  const int64_t N = sz.N, C = sz.C, HxW = sz.HxW, G = sz.G, D = C / G;
  std::vector<double> sq(N * C), s1(N * C), sx(N * C);
#pragma omp parallel
  {
    Buf<T> xh(HxW), dbuf(loss_target ? HxW : 0);
#pragma omp for schedule(static)
    for (int64_t pl = 0; pl < N * C; ++pl) {
      const int64_t c = pl % C, ng = pl / D;
      const T m = T(mean[ng]), r = T(rstd[ng]);
      sigmoid_plane(z + pl * HxW, bias[c], scale[c], HxW, xh.data());
      ArrMap<T> xhm(xh.data(), HxW);
      xhm = (xhm - m) * r;
      const T* d = other + pl * HxW;
      if (loss_target) {
        ArrMap<T>(dbuf.data(), HxW) = xhm * gamma[c] + beta[c] - ConstArrMap<T>(d, HxW);
        d = dbuf.data();
      }
      sq[pl] = loss ? dot_lanes(d, d, HxW) : 0.0;
      s1[pl] = sum_lanes(d, HxW);
      sx[pl] = dot_lanes(d, xh.data(), HxW);
    }
  }
  if (loss) {
    double l = 0;
    for (int64_t pl = 0; pl < N * C; ++pl) l += sq[pl];
    *loss = l * loss_scale;
  }
  for (int64_t ng = 0; ng < N * G; ++ng) {
    double a = 0, b = 0;
    for (int64_t d = 0; d < D; ++d) {
      const int64_t c = (ng % G) * D + d;
      a += double(gamma[c]) * s1[ng * D + d];
      b += double(gamma[c]) * sx[ng * D + d];
    }
    A[ng] = a * dy_scale;
    B[ng] = b * dy_scale;
  }
  for (int64_t c = 0; c < C; ++c) {
    double db = 0, dg = 0;
    for (int64_t n = 0; n < N; ++n) {
      db += s1[n * C + c];
      dg += sx[n * C + c];
    }
    dbeta[c] = db * dy_scale;
    dgamma[c] = dg * dy_scale;
  }
}

template <typename T>
void conv_block_dz_cpu(const ConvBlockCpuSizes& sz, bool loss_target, const T* z, const T* other,
                       const double* mean, const double* rstd, const double* A, const double* B,
                       double a_scale, const T* bias, const T* scale, const T* gamma,
                       const T* beta, double gs, T* dz, double* dbias, double* dscale) {
  const int64_t N = sz.N, C = sz.C, HxW = sz.HxW, D = C / sz.G;
  const double inv_m = 1.0 / double(D * HxW);
  std::vector<double> pdb(N * C), pds(N * C);
#pragma omp parallel
  {
    Buf<T> zb(HxW), s(HxW), du(HxW);
#pragma omp for schedule(static)
    for (int64_t pl = 0; pl < N * C; ++pl) {
      const int64_t c = pl % C, ng = pl / D;
      const T m = T(mean[ng]), r = T(rstd[ng]);
      const T a_ = T(A[ng] * a_scale * inv_m), b_ = T(B[ng] * a_scale * inv_m);
      const T sc = scale[c], gm = gamma[c], bt = beta[c], g = T(gs);
      ArrMap<T> zbm(zb.data(), HxW), sm(s.data(), HxW), dum(du.data(), HxW);
      zbm = ConstArrMap<T>(z + pl * HxW, HxW) + bias[c];
      sm = (T(1) + (zbm * (-sc)).exp()).inverse();
      ConstArrMap<T> o(other + pl * HxW, HxW);
      if (loss_target) {
        dum = r * ((g * (((sm - m) * r) * gm + bt - o)) * gm - a_ - ((sm - m) * r) * b_) * sm *
              (T(1) - sm);
      } else {
        dum = r * ((g * o) * gm - a_ - ((sm - m) * r) * b_) * sm * (T(1) - sm);
      }
      T* dzp = dz + pl * HxW;
      for (int64_t i = 0; i < HxW; ++i) dzp[i] = du[i] * sc;
      pdb[pl] = sum_lanes(dzp, HxW);
      pds[pl] = dot_lanes(du.data(), zb.data(), HxW);
    }
  }
  for (int64_t c = 0; c < C; ++c) {
    double db = 0, ds = 0;
    for (int64_t n = 0; n < N; ++n) {
      db += pdb[n * C + c];
      ds += pds[n * C + c];
    }
    if (dbias) dbias[c] = db;
    if (dscale) dscale[c] = ds;
  }
}

#define TG_CONV_BLOCK_CPU(T)                                                                      \
  template void conv_block_stats_cpu<T>(const ConvBlockCpuSizes&, const T*, const T*, const T*,  \
                                        double, double*, double*);                                \
  template void conv_block_normalize_cpu<T>(const ConvBlockCpuSizes&, const T*, const double*,   \
                                            const double*, const T*, const T*, const T*,          \
                                            const T*, T*);                                        \
  template void conv_block_reduce_cpu<T>(const ConvBlockCpuSizes&, bool, const T*, const T*,     \
                                         const double*, const double*, const T*, const T*,        \
                                         const T*, const T*, double, double, double*, double*,    \
                                         double*, double*, double*);                              \
  template void conv_block_dz_cpu<T>(const ConvBlockCpuSizes&, bool, const T*, const T*,         \
                                     const double*, const double*, const double*, const double*,  \
                                     double, const T*, const T*, const T*, const T*, double, T*,  \
                                     double*, double*);
TG_CONV_BLOCK_CPU(float)
TG_CONV_BLOCK_CPU(double)
#undef TG_CONV_BLOCK_CPU

}  // namespace detail

}  // namespace tg::ops
