// Tests of ops/shape.h and Tensor::reshape: values against index arithmetic, float64 gradchecks,
// bad arguments, CUDA against CPU on odd shapes.
#include "ops/shape.h"

#include <string>
#include <vector>

#include "core/autograd.h"
#include "ops/elementwise.h"
#include "ops/op_check.h"

namespace tg {
namespace {

using testing::expect_cuda_matches_cpu;
using testing::expect_gradcheck;
using testing::randn_t;

Tensor iota(const Shape& shape) {
  std::vector<double> v(size_t(checked_numel(shape)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = double(i);
  return Tensor::from_vector<double>(v, shape);
}

TEST(ShapeForward, ReshapeInfersOneDimensionAndSharesStorage) {
  Tensor x = iota({2, 3, 4});
  Tensor y = ops::reshape(x, {4, -1});
  EXPECT_EQ(y.shape(), (Shape{4, 6}));
  EXPECT_EQ(y.to_vector<double>(), x.to_vector<double>());
  EXPECT_EQ(y.raw_data(), x.raw_data());
  EXPECT_EQ(x.reshape({-1}).shape(), Shape{24});
  EXPECT_EQ(Tensor::full({}, 3.0).reshape({1, 1}).shape(), (Shape{1, 1}));
}

TEST(ShapeForward, PermuteMatchesIndexArithmetic) {
  Tensor x = iota({2, 3, 4});
  Tensor y = ops::permute(x, {2, 0, -2});
  ASSERT_EQ(y.shape(), (Shape{4, 2, 3}));
  const auto v = y.to_vector<double>();
  for (int64_t k = 0; k < 4; ++k)
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t j = 0; j < 3; ++j) EXPECT_EQ(v[size_t((k * 2 + i) * 3 + j)], double((i * 3 + j) * 4 + k));
}

TEST(ShapeForward, CatAndNarrowAreInverse) {
  Tensor a = iota({2, 3, 4}), b = ops::add(iota({2, 1, 4}), 100.0), c = ops::add(iota({2, 2, 4}), 200.0);
  Tensor y = ops::cat({a, b, c}, 1);
  ASSERT_EQ(y.shape(), (Shape{2, 6, 4}));
  EXPECT_EQ(ops::narrow(y, 1, 0, 3).to_vector<double>(), a.to_vector<double>());
  EXPECT_EQ(ops::narrow(y, 1, 3, 1).to_vector<double>(), b.to_vector<double>());
  EXPECT_EQ(ops::narrow(y, -2, 4, 2).to_vector<double>(), c.to_vector<double>());
  EXPECT_EQ(ops::cat({a, a}, 0).shape(), (Shape{4, 3, 4}));
  EXPECT_EQ(ops::narrow(a, 2, 1, 0).numel(), 0);
  const auto v = ops::narrow(a, 2, 1, 2).to_vector<double>();
  EXPECT_EQ(v[0], 1.0);
  EXPECT_EQ(v[1], 2.0);
  EXPECT_EQ(v[2], 5.0);
}

TEST(ShapeGrad, Gradcheck) {
  Tensor x = randn_t({2, 3, 4}, 1, DType::Float64).set_requires_grad(true);
  Tensor y = randn_t({2, 2, 4}, 2, DType::Float64).set_requires_grad(true);
  expect_gradcheck([](const std::vector<Tensor>& in) { return std::vector<Tensor>{ops::reshape(in[0], {-1, 4})}; },
                   {x}, "reshape");
  expect_gradcheck([](const std::vector<Tensor>& in) { return std::vector<Tensor>{in[0].reshape({6, 4}) * in[0].reshape({6, 4})}; },
                   {x}, "Tensor::reshape");
  expect_gradcheck([](const std::vector<Tensor>& in) { return std::vector<Tensor>{ops::permute(in[0], {1, 2, 0})}; },
                   {x}, "permute");
  expect_gradcheck([](const std::vector<Tensor>& in) { return std::vector<Tensor>{ops::cat({in[0], in[1], in[0]}, 1)}; },
                   {x, y}, "cat");
  expect_gradcheck([](const std::vector<Tensor>& in) { return std::vector<Tensor>{ops::narrow(in[0], 2, 1, 2)}; },
                   {x}, "narrow");
}

TEST(ShapeGrad, ReshapeIsOnTheTapeAndViewIsNot) {
  Tensor x = randn_t({2, 3}, 1, DType::Float64).set_requires_grad(true);
  EXPECT_ERROR_HAS(x.view({6}), "view: the tensor takes part in autograd");
  Tensor y = x.reshape({6});
  EXPECT_TRUE(y.requires_grad());
  ops::sum(ops::mul(y, 2.0)).backward();
  EXPECT_EQ(x.grad().shape(), (Shape{2, 3}));
  for (double v : x.grad().to_vector<double>()) EXPECT_EQ(v, 2.0);
}

TEST(ShapeErrors, BadArguments) {
  Tensor x = Tensor::randn({2, 3}, 1);
  EXPECT_ERROR_HAS(x.reshape({4, -1}), "reshape: cannot reshape a tensor of shape [2, 3]", "[4, -1]");
  EXPECT_ERROR_HAS(x.reshape({-1, -1}), "reshape: only one dimension may be -1");
  EXPECT_ERROR_HAS(x.reshape({7}), "reshape: cannot reshape", "6 elements", "[7]");
  EXPECT_ERROR_HAS(ops::permute(x, {0}), "permute: expected 2 dimensions", "[2, 3]");
  EXPECT_ERROR_HAS(ops::permute(x, {1, 1}), "permute: dimension 1 appears more than once");
  EXPECT_ERROR_HAS(ops::permute(x, {0, 2}), "permute: dimension 2 is out of range");
  EXPECT_ERROR_HAS(ops::cat({}, 0), "cat: expected at least one tensor");
  EXPECT_ERROR_HAS(ops::cat({x, Tensor::randn({3, 3}, 2)}, 1), "cat: tensor 1 has shape [3, 3]",
                   "except in dimension 1");
  EXPECT_ERROR_HAS(ops::cat({x, Tensor::randn({2, 3}, 2, DType::Float64)}, 0), "cat: tensor 1 is float64");
  EXPECT_ERROR_HAS(ops::narrow(x, 1, 2, 2), "narrow: start 2 and length 2 do not fit dimension 1 of size 3");
  EXPECT_ERROR_HAS(ops::narrow(x, 2, 0, 1), "narrow: dimension 2 is out of range");
}

TEST(ShapeCuda, MatchesCpuOnOddShapes) {
  TG_SKIP_WITHOUT_GPU();
  for (DType dt : {DType::Float32, DType::Float64}) {
    Tensor x = randn_t({3, 37, 5, 7}, 1, dt).set_requires_grad(true);
    Tensor y = randn_t({3, 11, 5, 7}, 2, dt).set_requires_grad(true);
    expect_cuda_matches_cpu([](const std::vector<Tensor>& in) { return std::vector<Tensor>{ops::permute(in[0], {3, 1, 0, 2})}; },
                            {x}, 0, "permute");
    expect_cuda_matches_cpu([](const std::vector<Tensor>& in) { return std::vector<Tensor>{ops::cat({in[0], in[1]}, 1)}; },
                            {x, y}, 0, "cat");
    expect_cuda_matches_cpu([](const std::vector<Tensor>& in) { return std::vector<Tensor>{ops::narrow(in[0], 1, 5, 29)}; },
                            {x}, 0, "narrow");
    expect_cuda_matches_cpu([](const std::vector<Tensor>& in) { return std::vector<Tensor>{ops::reshape(in[0], {-1, 35})}; },
                            {x}, 0, "reshape");
  }
}

}  // namespace
}  // namespace tg
