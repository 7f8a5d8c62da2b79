#include "linear.h"

#include <cmath>

#include "../ops/elementwise.h"
#include "../ops/matmul.h"
#include "../ops/shape.h"
#include "../ops/unary.h"

namespace tg::nn {

Linear::Linear(int64_t in_features, int64_t out_features, Generator& gen, bool with_bias,
               DType dtype) {
  TG_CHECK(in_features > 0 && out_features > 0,
           "Linear: expected positive in_features and out_features, got ", in_features, " and ",
           out_features);
  const double bound = 1.0 / std::sqrt(double(in_features));
  weight = register_parameter(
      "weight", Tensor::rand({out_features, in_features}, gen, dtype, Device::CPU, -bound, bound));
  if (with_bias)
    bias = register_parameter("bias",
                              Tensor::rand({out_features}, gen, dtype, Device::CPU, -bound, bound));
}

Tensor Linear::forward(const Tensor& x) const {
  TG_CHECK(x.defined() && (x.dim() == 2 || x.dim() == 3) && x.size(-1) == weight.size(1),
           "Linear: expected input (N, ", weight.size(1), ") or (B, N, ", weight.size(1), "), got ",
           x.defined() ? x.shape() : Shape{});
  Tensor y = ops::matmul(x, ops::permute(weight, {1, 0}));
  return bias.defined() ? ops::add(y, bias) : y;
}

Tensor ReLU::forward(const Tensor& x) const { return ops::relu(x); }
Tensor Tanh::forward(const Tensor& x) const { return ops::tanh(x); }
Tensor Sigmoid::forward(const Tensor& x) const { return ops::sigmoid(x); }

}  // namespace tg::nn
