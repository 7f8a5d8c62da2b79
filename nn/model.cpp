#include "model.h"

#include "../ops/elementwise.h"

namespace tg::nn {

Model::Model(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t num_groups,
             const Shape& bias_shape, const Shape& scale_shape, Generator& gen, DType dtype) {
  TG_CHECK(bias_shape == Shape({out_channels, 1, 1}), "Model: expected bias_shape (",
           out_channels, ", 1, 1), got ", bias_shape);
  TG_CHECK(scale_shape == Shape({out_channels, 1, 1}), "Model: expected scale_shape (",
           out_channels, ", 1, 1), got ", scale_shape);
  // PyTorch creates conv first, then bias and scale: draw in that order, register in its order.
  auto c = std::make_shared<Conv2d>(in_channels, out_channels, kernel_size, gen,
                                    ops::Conv2dOptions{}, dtype);
  bias = register_parameter("bias", Tensor::randn(bias_shape, gen, dtype));
  scale = register_parameter("scale", Tensor::randn(scale_shape, gen, dtype));
  conv = register_module("conv", c);
  group_norm = register_module("group_norm",
                               std::make_shared<GroupNorm>(num_groups, out_channels, 1e-5, dtype));
}

namespace {
Generator& seeded(Generator&& g) { return g; }
}  // namespace

Model::Model(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t num_groups,
             uint64_t seed, DType dtype)
    : Model(in_channels, out_channels, kernel_size, num_groups, {out_channels, 1, 1},
            {out_channels, 1, 1}, seeded(Generator(seed)), dtype) {}

ops::ConvBlockParams Model::block_params() const {
  return ops::ConvBlockParams{conv->weight,      conv->bias,        bias, scale,
                              group_norm->weight, group_norm->bias, group_norm->num_groups(),
                              group_norm->eps()};
}

Tensor Model::forward(const Tensor& x) const { return ops::conv_block(x, block_params()); }

Tensor Model::loss(const Tensor& x, const Tensor& target) const {
  return ops::conv_block_mse_loss(x, block_params(), target);
}

Tensor Model::forward_reference(const Tensor& x) const {
  Tensor z = conv->forward(x);
  Tensor u = ops::mul(ops::add(z, bias), scale);
  return group_norm->forward(ops::sigmoid(u));
}

}  // namespace tg::nn
