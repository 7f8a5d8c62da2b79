// Tests of the modules: virtual forward, Sequential (PyTorch's names), Linear (init, forward, grads),
// the activation modules and ConvBlock (the seed's names and the fused path).
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "core/gradcheck.h"
#include "nn/conv_block.h"
#include "nn/linear.h"
#include "nn/sequential.h"
#include "ops/elementwise.h"
#include "ops/matmul.h"
#include "ops/shape.h"
#include "ops/unary.h"
#include "test_utils.h"

namespace tg {
namespace {

using testing::rel_l2;

std::vector<std::string> names_of(const nn::Module& m) {
  std::vector<std::string> out;
  for (const auto& [n, t] : m.named_parameters()) out.push_back(n);
  return out;
}

TEST(Modules, SequentialNamesChildrenLikePyTorch) {
  Generator gen(1);
  nn::Sequential seq;
  seq.push_back(std::make_shared<nn::ConvBlock>(3, 8, 3, 2, gen));
  seq.push_back(std::make_shared<nn::ReLU>());
  seq.push_back(std::make_shared<nn::Linear>(8, 4, gen));
  const std::vector<std::string> expected = {
      "0.bias", "0.scale", "0.conv.weight", "0.conv.bias", "0.group_norm.weight",
      "0.group_norm.bias", "2.weight", "2.bias"};
  EXPECT_EQ(names_of(seq), expected);
  EXPECT_EQ(seq.size(), 3u);
  EXPECT_ERROR_HAS(seq[3], "Sequential: index 3 out of range for 3 modules");
}

TEST(Modules, SequentialForwardComposesTheModules) {
  Generator gen(2);
  auto l1 = std::make_shared<nn::Linear>(5, 7, gen, true, DType::Float64);
  auto l2 = std::make_shared<nn::Linear>(7, 3, gen, false, DType::Float64);
  nn::Sequential seq({l1, std::make_shared<nn::Tanh>(), l2, std::make_shared<nn::Sigmoid>()});
  Tensor x = Tensor::randn({4, 5}, 3, DType::Float64);
  Tensor ref = ops::sigmoid(l2->forward(ops::tanh(l1->forward(x))));
  EXPECT_LT(rel_l2(seq.forward(x), ref), 1e-15);
  const nn::Module& as_base = seq;
  EXPECT_LT(rel_l2(as_base(x), ref), 1e-15);
  EXPECT_EQ(seq.forward(x).shape(), (Shape{4, 3}));
}

TEST(Modules, LinearInitAndForward) {
  Generator gen(4);
  nn::Linear lin(6, 3, gen, true, DType::Float64);
  EXPECT_EQ(names_of(lin), (std::vector<std::string>{"weight", "bias"}));
  EXPECT_EQ(lin.weight.shape(), (Shape{3, 6}));
  const double bound = 1.0 / std::sqrt(6.0);
  for (double v : lin.weight.to_vector<double>()) EXPECT_LE(std::fabs(v), bound);
  for (double v : lin.bias.to_vector<double>()) EXPECT_LE(std::fabs(v), bound);
  Tensor x = Tensor::randn({2, 4, 6}, 5, DType::Float64);
  Tensor y = lin.forward(x);
  EXPECT_EQ(y.shape(), (Shape{2, 4, 3}));
  const auto xv = x.to_vector<double>(), wv = lin.weight.to_vector<double>(),
             bv = lin.bias.to_vector<double>(), yv = y.to_vector<double>();
  for (int64_t r = 0; r < 8; ++r)
    for (int64_t o = 0; o < 3; ++o) {
      double acc = bv[size_t(o)];
      for (int64_t i = 0; i < 6; ++i) acc += xv[size_t(r * 6 + i)] * wv[size_t(o * 6 + i)];
      EXPECT_NEAR(yv[size_t(r * 3 + o)], acc, 1e-14);
    }
  EXPECT_ERROR_HAS(lin.forward(Tensor::randn({2, 5}, 1, DType::Float64)),
                   "Linear: expected input (N, 6)", "[2, 5]");
}

TEST(Modules, LinearGradcheck) {
  Generator gen(6);
  nn::Linear lin(4, 3, gen, true, DType::Float64);
  Tensor x = Tensor::randn({5, 4}, 7, DType::Float64).set_requires_grad(true);
  auto f = [&](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{ops::add(ops::matmul(in[0], ops::permute(in[1], {1, 0})), in[2])};
  };
  const GradcheckResult r = gradcheck(f, {x, lin.weight, lin.bias});
  EXPECT_TRUE(r.passed) << r.message;
  Tensor y = lin.forward(x);
  EXPECT_LT(rel_l2(y, f({x, lin.weight, lin.bias})[0]), 1e-15);
}

TEST(Modules, ConvBlockIsTheSeedsBlockAsALayer) {
  Generator g1(8), g2(8);
  nn::ConvBlock block(3, 4, 3, 2, g1, DType::Float64);
  nn::Model model(3, 4, 3, 2, {4, 1, 1}, {4, 1, 1}, g2, DType::Float64);
  EXPECT_EQ(names_of(block), names_of(model));
  Tensor x = Tensor::randn({2, 3, 7, 6}, 9, DType::Float64);
  EXPECT_LT(rel_l2(block.forward(x), model.forward_reference(x)), 1e-12);
  const nn::Module& base = block;
  EXPECT_LT(rel_l2(base.forward(x), model.forward(x)), 1e-12);
}

TEST(Modules, BaseForwardThrows) {
  struct Empty : nn::Module {};
  Empty e;
  EXPECT_ERROR_HAS(e.forward(Tensor::zeros({1})), "forward", "does not define forward()");
}

}  // namespace
}  // namespace tg
