// A naive float64 reference of the conv block, written from SPEC.md's formulas with plain loops and
// sharing no code with ops/: y = GroupNorm(sigmoid((conv(x) + conv_bias + bias) * scale)) and its
// backward for a given dy (or for the MSE loss against a target). Stride 1, no padding.
#pragma once

#include <cmath>
#include <vector>

#include "core/tensor.h"

namespace tg::testing {

struct NaiveBlockGrads {
  std::vector<double> dweight, dconv_bias, dbias, dscale, dgamma, dbeta, dx;
};

struct NaiveBlock {
  int64_t N, Cin, H, W, Cout, k, G;
  double eps = 1e-5;
  std::vector<double> x, weight, conv_bias, bias, scale, gamma, beta;
  // filled by forward()
  std::vector<double> z, s, xhat, y, mean, rstd;

  int64_t Ho() const { return H - k + 1; }
  int64_t Wo() const { return W - k + 1; }
  int64_t P() const { return Ho() * Wo(); }

  NaiveBlock(const Tensor& x_, const Tensor& w, const Tensor& cb, const Tensor& b, const Tensor& sc,
             const Tensor& gm, const Tensor& bt, int64_t groups, double eps_ = 1e-5)
      : N(x_.size(0)), Cin(x_.size(1)), H(x_.size(2)), W(x_.size(3)), Cout(w.size(0)),
        k(w.size(2)), G(groups), eps(eps_), x(x_.to_vector<double>()), weight(w.to_vector<double>()),
        conv_bias(cb.to_vector<double>()), bias(b.to_vector<double>()),
        scale(sc.to_vector<double>()), gamma(gm.to_vector<double>()), beta(bt.to_vector<double>()) {
    forward();
  }

  size_t xi(int64_t n, int64_t c, int64_t h, int64_t w) const {
    return size_t(((n * Cin + c) * H + h) * W + w);
  }
  size_t wi(int64_t co, int64_t ci, int64_t i, int64_t j) const {
    return size_t(((co * Cin + ci) * k + i) * k + j);
  }
  size_t yi(int64_t n, int64_t c, int64_t p) const { return size_t((n * Cout + c) * P() + p); }

  void forward() {
    const int64_t D = Cout / G;
    z.assign(size_t(N * Cout * P()), 0.0);
    s = xhat = y = z;
    mean.assign(size_t(N * G), 0.0);
    rstd = mean;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t co = 0; co < Cout; ++co)
        for (int64_t oh = 0; oh < Ho(); ++oh)
          for (int64_t ow = 0; ow < Wo(); ++ow) {
            double acc = conv_bias[size_t(co)];
            for (int64_t ci = 0; ci < Cin; ++ci)
              for (int64_t i = 0; i < k; ++i)
                for (int64_t j = 0; j < k; ++j) acc += weight[wi(co, ci, i, j)] * x[xi(n, ci, oh + i, ow + j)];
            const size_t o = yi(n, co, oh * Wo() + ow);
            z[o] = acc;
            s[o] = 1.0 / (1.0 + std::exp(-(acc + bias[size_t(co)]) * scale[size_t(co)]));
          }
    const double M = double(D * P());
    for (int64_t n = 0; n < N; ++n)
      for (int64_t g = 0; g < G; ++g) {
        double mu = 0, var = 0;
        for (int64_t c = g * D; c < (g + 1) * D; ++c)
          for (int64_t p = 0; p < P(); ++p) mu += s[yi(n, c, p)];
        mu /= M;
        for (int64_t c = g * D; c < (g + 1) * D; ++c)
          for (int64_t p = 0; p < P(); ++p) var += (s[yi(n, c, p)] - mu) * (s[yi(n, c, p)] - mu);
        var /= M;
        const double r = 1.0 / std::sqrt(var + eps);
        mean[size_t(n * G + g)] = mu;
        rstd[size_t(n * G + g)] = r;
        for (int64_t c = g * D; c < (g + 1) * D; ++c)
          for (int64_t p = 0; p < P(); ++p) {
            const size_t o = yi(n, c, p);
            xhat[o] = (s[o] - mu) * r;
            y[o] = xhat[o] * gamma[size_t(c)] + beta[size_t(c)];
          }
      }
  }

  /// mean((y - target)^2)
  double loss(const std::vector<double>& target) const {
    double l = 0;
    for (size_t i = 0; i < y.size(); ++i) l += (y[i] - target[i]) * (y[i] - target[i]);
    return l / double(y.size());
  }
  /// dy of loss() scaled by the loss's output gradient gl: 2 (y - t) / numel * gl.
  std::vector<double> loss_dy(const std::vector<double>& target, double gl = 1.0) const {
    std::vector<double> dy(y.size());
    for (size_t i = 0; i < y.size(); ++i) dy[i] = 2.0 * (y[i] - target[i]) / double(y.size()) * gl;
    return dy;
  }

  NaiveBlockGrads backward(const std::vector<double>& dy) const {
    const int64_t D = Cout / G;
    const double M = double(D * P());
    NaiveBlockGrads r;
    r.dgamma.assign(size_t(Cout), 0.0);
    r.dbeta = r.dbias = r.dscale = r.dgamma;
    std::vector<double> dz(y.size());
    for (int64_t n = 0; n < N; ++n)
      for (int64_t g = 0; g < G; ++g) {
        double mg = 0, mgx = 0;  // means over the group of dy*gamma and dy*gamma*xhat
        for (int64_t c = g * D; c < (g + 1) * D; ++c)
          for (int64_t p = 0; p < P(); ++p) {
            const size_t o = yi(n, c, p);
            mg += dy[o] * gamma[size_t(c)];
            mgx += dy[o] * gamma[size_t(c)] * xhat[o];
          }
        mg /= M;
        mgx /= M;
        const double rs = rstd[size_t(n * G + g)];
        for (int64_t c = g * D; c < (g + 1) * D; ++c)
          for (int64_t p = 0; p < P(); ++p) {
            const size_t o = yi(n, c, p);
            r.dgamma[size_t(c)] += dy[o] * xhat[o];
            r.dbeta[size_t(c)] += dy[o];
            const double ds = rs * (dy[o] * gamma[size_t(c)] - mg - xhat[o] * mgx);
            const double du = ds * s[o] * (1.0 - s[o]);
            dz[o] = du * scale[size_t(c)];
            r.dbias[size_t(c)] += dz[o];
            r.dscale[size_t(c)] += du * (z[o] + bias[size_t(c)]);
          }
      }
    r.dconv_bias = r.dbias;
    r.dweight.assign(weight.size(), 0.0);
    r.dx.assign(x.size(), 0.0);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t co = 0; co < Cout; ++co)
        for (int64_t oh = 0; oh < Ho(); ++oh)
          for (int64_t ow = 0; ow < Wo(); ++ow) {
            const double g = dz[yi(n, co, oh * Wo() + ow)];
            for (int64_t ci = 0; ci < Cin; ++ci)
              for (int64_t i = 0; i < k; ++i)
                for (int64_t j = 0; j < k; ++j) {
                  r.dweight[wi(co, ci, i, j)] += g * x[xi(n, ci, oh + i, ow + j)];
                  r.dx[xi(n, ci, oh + i, ow + j)] += g * weight[wi(co, ci, i, j)];
                }
          }
    return r;
  }
};

/// ||a - b|| / ||b|| of a tensor against a host vector (a NaN gives infinity).
inline double rel_l2_vec(const Tensor& a, const std::vector<double>& b) {
  auto x = a.to_vector<double>();
  if (x.size() != b.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::isnan(x[i])) return INFINITY;
    num += (x[i] - b[i]) * (x[i] - b[i]);
    den += b[i] * b[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

}  // namespace tg::testing
