// Tests of NumPy broadcasting in the binary ops (ops/elementwise.h, general path in ops/pointwise.h):
// add sub mul div maximum minimum and the operators against a naive reference, gradients summed
// over broadcast dimensions (float64 gradcheck), 0-dim tensors, bad shapes, CUDA against CPU.
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "ops/elementwise.h"
#include "ops/op_check.h"
#include "ops/unary.h"

namespace tg {
namespace {

using testing::error_of;
using testing::expect_cuda_matches_cpu;
using testing::expect_gradcheck;
using testing::expect_values_near;
using testing::leaf;
using testing::randn_t;
using testing::ref_broadcast;

struct BinaryCase {
  const char* name;
  std::function<Tensor(const Tensor&, const Tensor&)> op;
  std::function<double(double, double)> ref;
};

const std::vector<BinaryCase>& binary_cases() {
  static const std::vector<BinaryCase> cases = {
      {"add", [](const Tensor& a, const Tensor& b) { return ops::add(a, b); },
       [](double x, double y) { return x + y; }},
      {"sub", [](const Tensor& a, const Tensor& b) { return ops::sub(a, b); },
       [](double x, double y) { return x - y; }},
      {"mul", [](const Tensor& a, const Tensor& b) { return ops::mul(a, b); },
       [](double x, double y) { return x * y; }},
      {"div", [](const Tensor& a, const Tensor& b) { return ops::div(a, b); },
       [](double x, double y) { return x / y; }},
      {"maximum", [](const Tensor& a, const Tensor& b) { return ops::maximum(a, b); },
       [](double x, double y) { return std::max(x, y); }},
      {"minimum", [](const Tensor& a, const Tensor& b) { return ops::minimum(a, b); },
       [](double x, double y) { return std::min(x, y); }},
  };
  return cases;
}

// Pairs of shapes and their broadcast: equal, trailing, leading, both sides, 0-dim, the (C,1,1)
// fast path, and (1, C, 1, 1) which the seed refused.
const std::vector<std::vector<Shape>> kShapes = {
    {{2, 3, 4}, {2, 3, 4}, {2, 3, 4}},       {{2, 3, 4}, {4}, {2, 3, 4}},
    {{3, 1}, {1, 5}, {3, 5}},                {{}, {2, 3}, {2, 3}},
    {{2, 3}, {}, {2, 3}},                    {{}, {}, {}},
    {{2, 4, 3, 3}, {4, 1, 1}, {2, 4, 3, 3}}, {{1, 4, 1, 1}, {2, 4, 3, 3}, {2, 4, 3, 3}},
    {{5, 1, 3}, {2, 1}, {5, 2, 3}},          {{1}, {7}, {7}},
};

// Values away from 0 (div) and without ties (maximum, minimum).
Tensor operand(const Shape& shape, uint64_t seed, DType dt) {
  return ops::add(randn_t(shape, seed, dt), 3.0);
}

TEST(BroadcastForward, MatchesNaiveReference) {
  uint64_t seed = 1;
  for (DType dt : {DType::Float32, DType::Float64})
    for (const auto& c : binary_cases())
      for (const auto& s : kShapes) {
        Tensor a = operand(s[0], seed++, dt), b = operand(s[1], seed++, dt);
        Tensor y = c.op(a, b);
        const std::string what = std::string(c.name) + " " + shape_str(s[0]) + " " + shape_str(s[1]);
        EXPECT_EQ(y.shape(), s[2]) << what;
        EXPECT_EQ(y.dtype(), dt) << what;
        expect_values_near(y.to_vector<double>(), ref_broadcast(a, b, s[2], c.ref), 0,
                           dt == DType::Float32 ? 1e-6 : 1e-15, what);
      }
}

TEST(BroadcastForward, OperatorsTensorTensorAndScalarBothOrders) {
  Tensor a = operand({2, 3}, 1, DType::Float64), b = operand({3}, 2, DType::Float64);
  auto same = [](const Tensor& x, const Tensor& y) {
    expect_values_near(x.to_vector<double>(), y.to_vector<double>(), 1e-15, 1e-15, "operator");
  };
  same(a / b, ops::div(a, b));
  same(a + b, ops::add(a, b));
  same(a - b, ops::sub(a, b));
  same(a * b, ops::mul(a, b));
  same(a / 4.0, ops::mul(a, 0.25));
  same(2.0 / a, ops::div(Tensor::full({}, 2.0, DType::Float64), a));
  same(2.0 - a, ops::neg(ops::sub(a, 2.0)));
  auto av = a.to_vector<double>();
  auto inv = (2.0 / a).to_vector<double>();
  for (size_t i = 0; i < av.size(); ++i) EXPECT_NEAR(inv[i], 2.0 / av[i], 1e-15);
}

TEST(BroadcastForward, NanPropagatesThroughMaximumAndMinimum) {
  Tensor a = Tensor::from_vector<double>({NAN, 1.0, 2.0}, {3});
  Tensor b = Tensor::from_vector<double>({0.0, NAN, 1.0}, {3});
  auto mx = ops::maximum(a, b).to_vector<double>(), mn = ops::minimum(a, b).to_vector<double>();
  EXPECT_TRUE(std::isnan(mx[0]) && std::isnan(mx[1]));
  EXPECT_TRUE(std::isnan(mn[0]) && std::isnan(mn[1]));
  EXPECT_EQ(mx[2], 2.0);
  EXPECT_EQ(mn[2], 1.0);
}

TEST(BroadcastGrad, GradcheckEveryOpAndShapePair) {
  uint64_t seed = 100;
  for (const auto& c : binary_cases())
    for (const auto& s : kShapes) {
      Tensor a = operand(s[0], seed++, DType::Float64).set_requires_grad(true);
      Tensor b = operand(s[1], seed++, DType::Float64).set_requires_grad(true);
      auto f = [&](const std::vector<Tensor>& in) { return std::vector<Tensor>{c.op(in[0], in[1])}; };
      expect_gradcheck(f, {a, b}, std::string(c.name) + " " + shape_str(s[0]) + " " + shape_str(s[1]));
    }
}

TEST(BroadcastGrad, GradientOfABroadcastOperandIsTheSumOverBroadcastDims) {
  Tensor a = leaf({2, 3, 4}, 1);
  Tensor b = leaf({3, 1}, 2);
  ops::sum(ops::add(a, b)).backward();
  ASSERT_EQ(b.grad().shape(), (Shape{3, 1}));
  for (double v : b.grad().to_vector<double>()) EXPECT_EQ(v, 8.0);  // 2 * 4 elements each
  for (double v : a.grad().to_vector<double>()) EXPECT_EQ(v, 1.0);
}

TEST(BroadcastGrad, TiesSplitTheGradientEvenly) {
  Tensor a = Tensor::from_vector<double>({1.0, 2.0}, {2}).set_requires_grad(true);
  Tensor b = Tensor::from_vector<double>({1.0, 3.0}, {2}).set_requires_grad(true);
  ops::sum(ops::maximum(a, b)).backward();
  EXPECT_EQ(a.grad().to_vector<double>(), (std::vector<double>{0.5, 0.0}));
  EXPECT_EQ(b.grad().to_vector<double>(), (std::vector<double>{0.5, 1.0}));
}

TEST(BroadcastGrad, OnlyTheOperandThatRequiresGradGetsOne) {
  Tensor a = leaf({2, 3}, 1);
  Tensor b = randn_t({3}, 2, DType::Float64);
  ops::sum(ops::div(a, ops::add(b, 5.0))).backward();
  EXPECT_TRUE(a.grad().defined());
  EXPECT_FALSE(b.grad().defined());
  autograd::clear_tape();
}

TEST(BroadcastErrors, IncompatibleShapesDtypesAndEmptyTensors) {
  EXPECT_ERROR_HAS(ops::div(Tensor::randn({2, 3}, 1), Tensor::randn({2}, 2)),
                   "div: cannot broadcast [2] against [2, 3]", "sizes 3 and 2 at dimension -1");
  EXPECT_ERROR_HAS(ops::maximum(Tensor::randn({4, 2}, 1), Tensor::randn({3, 1}, 2)),
                   "maximum: cannot broadcast", "[4, 2]", "[3, 1]");
  EXPECT_ERROR_HAS(ops::minimum(Tensor::randn({2}, 1), Tensor::randn({2}, 2, DType::Float64)),
                   "minimum: expected operands of the same dtype", "float32", "float64");
  EXPECT_ERROR_HAS(ops::div(Tensor::randn({2}, 1), Tensor()), "div: expected a defined tensor as b");
  EXPECT_ERROR_HAS(ops::maximum(Tensor::empty({0, 2}), Tensor::randn({2}, 1)),
                   "maximum: expected a non-empty tensor as a", "[0, 2]");
  EXPECT_ERROR_HAS(ops::div(Tensor::randn({2}, 1), 0.0), "div: division of a tensor by the scalar 0");
}

TEST(BroadcastCuda, MatchesCpuOnOddShapes) {
  TG_SKIP_WITHOUT_GPU();
  const std::vector<std::vector<Shape>> shapes = {
      {{3, 1, 37}, {5, 1}}, {{}, {7, 13}}, {{1, 5, 1, 1}, {3, 5, 17, 19}}, {{2, 1, 3, 1}, {4, 1, 5}},
      {{1001}, {1001}}};
  uint64_t seed = 1;
  for (DType dt : {DType::Float32, DType::Float64})
    for (const auto& c : binary_cases())
      for (const auto& s : shapes) {
        Tensor a = operand(s[0], seed++, dt).set_requires_grad(true);
        Tensor b = operand(s[1], seed++, dt).set_requires_grad(true);
        auto f = [&](const std::vector<Tensor>& in) { return std::vector<Tensor>{c.op(in[0], in[1])}; };
        expect_cuda_matches_cpu(f, {a, b}, dt == DType::Float32 ? 1e-6 : 1e-13,
                                std::string(c.name) + " " + shape_str(s[0]) + " " + shape_str(s[1]));
      }
}

}  // namespace
}  // namespace tg
