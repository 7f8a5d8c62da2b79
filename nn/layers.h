// Conv2d and GroupNorm modules with PyTorch's parameter names and initialisation.
#pragma once

#include "../core/rng.h"
#include "module.h"
#include "../ops/conv2d.h"
#include "../ops/group_norm.h"

namespace tg::nn {

/// weight (Cout, Cin, k, k) and bias (Cout), both U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with
/// fan_in = Cin*k*k: PyTorch's kaiming_uniform(a=sqrt(5)) and its bias rule.
class Conv2d : public Module {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, Generator& gen,
         ops::Conv2dOptions options = {}, DType dtype = DType::Float32);
  Tensor forward(const Tensor& x) const { return ops::conv2d(x, weight, bias, options_); }

  Tensor weight, bias;

 private:
  ops::Conv2dOptions options_;
};

/// weight (C) = 1, bias (C) = 0; eps 1e-5.
class GroupNorm : public Module {
 public:
  GroupNorm(int64_t num_groups, int64_t num_channels, double eps = 1e-5,
            DType dtype = DType::Float32);
  Tensor forward(const Tensor& x) const {
    return ops::group_norm(x, num_groups_, weight, bias, ops::GroupNormOptions{eps_});
  }
  int64_t num_groups() const { return num_groups_; }
  double eps() const { return eps_; }

  Tensor weight, bias;

 private:
  int64_t num_groups_;
  double eps_;
};

}  // namespace tg::nn
