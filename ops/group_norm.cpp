// group_norm: y = (x - mean_ng) * rstd_ng * gamma_c + beta_c over groups of D = C / G channels;
// see ops/group_norm.h for the formulas and the CUDA mapping. This file validates, dispatches,
// holds the CPU path (OpenMP over (n, g) and (n, c); statistics two-pass in double, backward sums
// in double) and the autograd node, which saves x, mean, rstd and gamma.
#include "group_norm.h"

#include <cmath>
#include <memory>
#include <vector>

#include "../core/autograd.h"
#include "../core/cuda_context.h"
#include "../core/error.h"

#ifdef TG_WITH_CUDA
#include "../core/cuda_utils.h"
#endif

namespace tg::ops {
namespace detail {

template <typename T>
void group_norm_forward_cpu(const GroupNormParams& p, const T* x, const T* gamma, const T* beta,
                            T* y, T* mean, T* rstd) {
  const int64_t NG = p.N * p.G, D = p.D(), M = p.M(), HxW = p.HxW;
#pragma omp parallel for schedule(static)
  for (int64_t ng = 0; ng < NG; ++ng) {
    const T* xg = x + ng * M;
    double sum = 0;
    for (int64_t i = 0; i < M; ++i) sum += double(xg[i]);
    const double mu = sum / double(M);
    double sq = 0;
    for (int64_t i = 0; i < M; ++i) {
      const double d = double(xg[i]) - mu;
      sq += d * d;
    }
    const double r = 1.0 / std::sqrt(sq / double(M) + p.eps);
    mean[ng] = T(mu);
    rstd[ng] = T(r);
    const int64_t g = ng % p.G;
    for (int64_t d = 0; d < D; ++d) {
      const int64_t c = g * D + d;
      const double a = r * (gamma ? double(gamma[c]) : 1.0);
      const double b = beta ? double(beta[c]) : 0.0;
      const T* xp = xg + d * HxW;
      T* yp = y + ng * M + d * HxW;
      for (int64_t i = 0; i < HxW; ++i) yp[i] = T((double(xp[i]) - mu) * a + b);
    }
  }
}

template <typename T>
void group_norm_backward_cpu(const GroupNormParams& p, const T* dy, const T* x, const T* mean,
                             const T* rstd, const T* gamma, T* dx, T* dgamma, T* dbeta) {
  if (!dx && !dgamma && !dbeta) return;
  const int64_t N = p.N, C = p.C, G = p.G, D = p.D(), M = p.M(), HxW = p.HxW;
  // Per (n, c): sum dy and sum dy * (x - mean); centering first keeps offset data accurate.
  std::vector<double> sdy(N * C), sdyx(N * C);
#pragma omp parallel for schedule(static)
  for (int64_t nc = 0; nc < N * C; ++nc) {
    const int64_t n = nc / C, c = nc % C;
    const double mu = double(mean[n * G + c / D]);
    const T* dyp = dy + nc * HxW;
    const T* xp = x + nc * HxW;
    double a1 = 0, a2 = 0;
    for (int64_t i = 0; i < HxW; ++i) {
      a1 += double(dyp[i]);
      a2 += double(dyp[i]) * (double(xp[i]) - mu);
    }
    sdy[nc] = a1;
    sdyx[nc] = a2;
  }
  if (dx) {
#pragma omp parallel for schedule(static)
    for (int64_t ng = 0; ng < N * G; ++ng) {
      const int64_t n = ng / G, g = ng % G;
      const double mu = double(mean[ng]), r = double(rstd[ng]);
      double a1 = 0, a2 = 0;
      for (int64_t d = 0; d < D; ++d) {
        const int64_t c = g * D + d;
        const double gam = gamma ? double(gamma[c]) : 1.0;
        a1 += gam * sdy[n * C + c];
        a2 += gam * sdyx[n * C + c];
      }
      const double mg = a1 / double(M);       // mean of g = dy * gamma
      const double mgx = r * a2 / double(M);  // mean of g * xhat
      for (int64_t d = 0; d < D; ++d) {
        const int64_t c = g * D + d;
        const double gam = gamma ? double(gamma[c]) : 1.0;
        const T* dyp = dy + (n * C + c) * HxW;
        const T* xp = x + (n * C + c) * HxW;
        T* dxp = dx + (n * C + c) * HxW;
        for (int64_t i = 0; i < HxW; ++i) {
          dxp[i] = T(r * (gam * double(dyp[i]) - mg - (double(xp[i]) - mu) * r * mgx));
        }
      }
    }
  }
  if (dgamma || dbeta) {
    for (int64_t c = 0; c < C; ++c) {
      const int64_t g = c / D;
      double a1 = 0, a2 = 0;
      for (int64_t n = 0; n < N; ++n) {
        a1 += double(rstd[n * G + g]) * sdyx[n * C + c];
        a2 += sdy[n * C + c];
      }
      if (dgamma) dgamma[c] = T(a1);
      if (dbeta) dbeta[c] = T(a2);
    }
  }
}

template void group_norm_forward_cpu<float>(const GroupNormParams&, const float*, const float*,
                                            const float*, float*, float*, float*);
template void group_norm_forward_cpu<double>(const GroupNormParams&, const double*, const double*,
                                             const double*, double*, double*, double*);
template void group_norm_backward_cpu<float>(const GroupNormParams&, const float*, const float*,
                                             const float*, const float*, const float*, float*,
                                             float*, float*);
template void group_norm_backward_cpu<double>(const GroupNormParams&, const double*, const double*,
                                              const double*, const double*, const double*, double*,
                                              double*, double*);

}  // namespace detail

namespace {

constexpr const char* kOp = "group_norm";

// weight / bias: undefined, or (C) with the dtype and device of x.
void check_affine(const Tensor& t, const char* what, const Tensor& x, int64_t C) {
  if (!t.defined()) return;
  TG_CHECK(t.dim() == 1 && t.size(0) == C, kOp, ": expected ", what, " of shape (", C,
           ") (the channels of x, shape ", x.shape(), ") or an undefined tensor, got ", t.shape());
  TG_CHECK(t.dtype() == x.dtype(), kOp, ": expected ", what, " of dtype ", x.dtype(),
           " (the dtype of x), got ", t.dtype());
  TG_CHECK(t.device() == x.device(), kOp, ": expected ", what, " on device ", x.device(),
           " (the device of x), got ", t.device());
}

detail::GroupNormParams check_inputs(const Tensor& x, int64_t G, const Tensor& weight,
                                     const Tensor& bias) {
  TG_CHECK(x.defined(), kOp,
           ": expected a defined input x of shape (N, C, *), got an undefined tensor");
  TG_CHECK(x.dim() >= 2, kOp, ": expected x of shape (N, C, *) with at least 2 dimensions, got ",
           x.shape());
  TG_CHECK(x.numel() > 0, kOp, ": expected a non-empty x, got shape ", x.shape());
  detail::GroupNormParams p;
  p.N = x.size(0);
  p.C = x.size(1);
  p.HxW = x.numel() / (p.N * p.C);
  TG_CHECK(G >= 1, kOp, ": expected num_groups >= 1, got num_groups = ", G);
  TG_CHECK(p.C % G == 0, kOp, ": expected num_groups to divide the number of channels C = ", p.C,
           " (x of shape ", x.shape(), "), got num_groups = ", G);
  p.G = G;
  check_affine(weight, "weight", x, p.C);
  check_affine(bias, "bias", x, p.C);
  return p;
}

// mean / rstd given to the backward: (N, G) with the dtype and device of x.
void check_stats(const Tensor& t, const char* what, const Tensor& x,
                 const detail::GroupNormParams& p) {
  const Shape expected{p.N, p.G};
  TG_CHECK(t.defined() && t.shape() == expected, kOp, ": backward expected ", what, " of shape ",
           expected, ", got ", t.defined() ? shape_str(t.shape()) : "an undefined tensor");
  TG_CHECK(t.dtype() == x.dtype(), kOp, ": backward expected ", what, " of dtype ", x.dtype(),
           ", got ", t.dtype());
  TG_CHECK(t.device() == x.device(), kOp, ": backward expected ", what, " on device ", x.device(),
           ", got ", t.device());
}

class GroupNormNode : public autograd::Node {
 public:
  const char* name() const override { return kOp; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
    const Tensor& x = x_.get(kOp);
    const Tensor& mean = mean_.get(kOp);
    const Tensor& rstd = rstd_.get(kOp);
    const Tensor weight = weight_index_ >= 0 ? weight_.get(kOp) : Tensor();
    const bool need_dw = weight_index_ >= 0 && needs_input_grad(size_t(weight_index_));
    const bool need_db = bias_index_ >= 0 && needs_input_grad(size_t(bias_index_));
    GroupNormGrads g = group_norm_backward(grad_outputs.at(0), x, mean, rstd, weight, G_,
                                           needs_input_grad(0), need_dw, need_db);
    std::vector<Tensor> out{g.dx};
    if (weight_index_ >= 0) out.push_back(g.dweight);
    if (bias_index_ >= 0) out.push_back(g.dbias);
    return out;
  }

  void release_saved() override {
    x_.release();
    mean_.release();
    rstd_.release();
    weight_.release();
  }

  autograd::SavedTensor x_, mean_, rstd_, weight_;
  int64_t G_ = 1;
  int weight_index_ = -1;  ///< position of weight among the recorded inputs, -1 when undefined
  int bias_index_ = -1;
};

}  // namespace

std::vector<Tensor> group_norm_with_stats(const Tensor& x, int64_t num_groups, const Tensor& weight,
                                          const Tensor& bias, const GroupNormOptions& opt) {
  detail::GroupNormParams p = check_inputs(x, num_groups, weight, bias);
  TG_CHECK(opt.eps >= 0 && std::isfinite(opt.eps), kOp, ": expected a finite eps >= 0, got ",
           opt.eps);
  p.eps = opt.eps;
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor mean = Tensor::empty({p.N, p.G}, x.dtype(), x.device());
  Tensor rstd = Tensor::empty({p.N, p.G}, x.dtype(), x.device());
  dispatch_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* gamma = weight.defined() ? weight.data<T>() : nullptr;
    const T* beta = bias.defined() ? bias.data<T>() : nullptr;
    if (x.is_cuda()) {
      TG_IF_CUDA({
        Tensor workspace =
            Tensor::empty({detail::group_norm_forward_workspace_size(p)}, x.dtype(), x.device());
        detail::group_norm_forward_cuda<T>(p, x.data<T>(), gamma, beta, y.data<T>(), mean.data<T>(),
                                           rstd.data<T>(), workspace.data<T>(), cuda::stream());
      });
    } else {
      detail::group_norm_forward_cpu<T>(p, x.data<T>(), gamma, beta, y.data<T>(), mean.data<T>(),
                                        rstd.data<T>());
    }
  });
  if (autograd::should_record({x, weight, bias})) {
    auto node = std::make_shared<GroupNormNode>();
    node->x_ = autograd::SavedTensor(x);
    node->mean_ = autograd::SavedTensor(mean);
    node->rstd_ = autograd::SavedTensor(rstd);
    node->G_ = p.G;
    std::vector<Tensor> inputs{x};
    if (weight.defined()) {
      node->weight_ = autograd::SavedTensor(weight);
      node->weight_index_ = int(inputs.size());
      inputs.push_back(weight);
    }
    if (bias.defined()) {
      node->bias_index_ = int(inputs.size());
      inputs.push_back(bias);
    }
    autograd::record(node, inputs, {y});
  }
  return {y, mean, rstd};
}

Tensor group_norm(const Tensor& x, int64_t num_groups, const Tensor& weight, const Tensor& bias,
                  const GroupNormOptions& opt) {
  return group_norm_with_stats(x, num_groups, weight, bias, opt)[0];
}

GroupNormGrads group_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& mean,
                                   const Tensor& rstd, const Tensor& weight, int64_t num_groups,
                                   bool need_dx, bool need_dweight, bool need_dbias) {
  const detail::GroupNormParams p = check_inputs(x, num_groups, weight, Tensor());
  TG_CHECK(dy.defined() && dy.shape() == x.shape(), kOp, ": backward expected dy of shape ",
           x.shape(), ", got ", dy.defined() ? shape_str(dy.shape()) : "an undefined tensor");
  TG_CHECK(dy.dtype() == x.dtype(), kOp, ": backward expected dy of dtype ", x.dtype(), ", got ",
           dy.dtype());
  TG_CHECK(dy.device() == x.device(), kOp, ": backward expected dy on device ", x.device(),
           ", got ", dy.device());
  check_stats(mean, "mean", x, p);
  check_stats(rstd, "rstd", x, p);
  GroupNormGrads g;
  if (!need_dx && !need_dweight && !need_dbias) return g;
  if (need_dx) g.dx = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (need_dweight) g.dweight = Tensor::empty({p.C}, x.dtype(), x.device());
  if (need_dbias) g.dbias = Tensor::empty({p.C}, x.dtype(), x.device());
  dispatch_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* gamma = weight.defined() ? weight.data<T>() : nullptr;
    T* dx = need_dx ? g.dx.data<T>() : nullptr;
    T* dgamma = need_dweight ? g.dweight.data<T>() : nullptr;
    T* dbeta = need_dbias ? g.dbias.data<T>() : nullptr;
    if (x.is_cuda()) {
      TG_IF_CUDA({
        Tensor workspace =
            Tensor::empty({detail::group_norm_backward_workspace_size(p)}, x.dtype(), x.device());
        detail::group_norm_backward_cuda<T>(p, dy.data<T>(), x.data<T>(), mean.data<T>(),
                                            rstd.data<T>(), gamma, dx, dgamma, dbeta,
                                            workspace.data<T>(), cuda::stream());
      });
    } else {
      detail::group_norm_backward_cpu<T>(p, dy.data<T>(), x.data<T>(), mean.data<T>(),
                                         rstd.data<T>(), gamma, dx, dgamma, dbeta);
    }
  });
  return g;
}

}  // namespace tg::ops
