// Linear layer and activation modules, with PyTorch's names and initialisation.
#pragma once

#include "../core/rng.h"
#include "module.h"

namespace tg::nn {

/// y = x @ weight^T + bias for x (N, in) or (B, N, in). weight (out, in) and bias (out), both
/// U(-1/sqrt(in), 1/sqrt(in)) drawn from gen in that order: PyTorch's kaiming_uniform(a=sqrt(5))
/// and its bias rule.
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, Generator& gen, bool bias = true,
         DType dtype = DType::Float32);
  Tensor forward(const Tensor& x) const override;

  Tensor weight, bias;  ///< bias is undefined without one
};

/// max(x, 0)
class ReLU : public Module {
 public:
  Tensor forward(const Tensor& x) const override;
};

/// tanh(x)
class Tanh : public Module {
 public:
  Tensor forward(const Tensor& x) const override;
};

/// 1 / (1 + exp(-x))
class Sigmoid : public Module {
 public:
  Tensor forward(const Tensor& x) const override;
};

}  // namespace tg::nn
