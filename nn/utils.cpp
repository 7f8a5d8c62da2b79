#include "utils.h"

#include <cmath>

#include "../core/autograd.h"
#include "../ops/elementwise.h"

namespace tg::nn::utils {

double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm) {
  TG_CHECK(max_norm >= 0, "clip_grad_norm_: expected max_norm >= 0, got ", max_norm);
  autograd::NoGradGuard no_grad;
  double total_sq = 0.0;
  std::vector<Tensor> grads;
  for (const Tensor& p : params) {
    TG_CHECK(p.defined(), "clip_grad_norm_: a parameter is undefined");
    Tensor g = p.grad();
    if (!g.defined() || g.numel() == 0) continue;
    TG_CHECK(grads.empty() || g.device() == grads[0].device(),
             "clip_grad_norm_: expected every gradient on ", grads.empty() ? g.device() : grads[0].device(),
             ", got one on ", g.device());
    total_sq += ops::sum(ops::square(g)).item();
    grads.push_back(g);
  }
  const double total = std::sqrt(total_sq);
  const double coef = max_norm / (total + 1e-6);
  if (coef < 1.0)
    for (Tensor& g : grads) g.copy_(ops::mul(g, coef));
  return total;
}

}  // namespace tg::nn::utils
