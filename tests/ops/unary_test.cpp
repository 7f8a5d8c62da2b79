// Tests of ops/unary.h: neg exp log sqrt abs pow relu tanh clamp against std:: math, float64
// gradchecks, saved-tensor version checks, bad inputs, CUDA against CPU on odd shapes.
#include "ops/unary.h"

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "ops/elementwise.h"
#include "ops/op_check.h"

namespace tg {
namespace {

using testing::expect_cuda_matches_cpu;
using testing::expect_gradcheck;
using testing::expect_values_near;
using testing::randn_t;

struct UnaryCase {
  const char* name;
  std::function<Tensor(const Tensor&)> op;
  std::function<double(double)> ref;
  bool positive_only;  ///< the op's domain (and gradcheck) needs x > 0
};

const std::vector<UnaryCase>& unary_cases() {
  static const std::vector<UnaryCase> cases = {
      {"neg", [](const Tensor& x) { return ops::neg(x); }, [](double x) { return -x; }, false},
      {"exp", [](const Tensor& x) { return ops::exp(x); }, [](double x) { return std::exp(x); }, false},
      {"log", [](const Tensor& x) { return ops::log(x); }, [](double x) { return std::log(x); }, true},
      {"sqrt", [](const Tensor& x) { return ops::sqrt(x); }, [](double x) { return std::sqrt(x); }, true},
      {"abs", [](const Tensor& x) { return ops::abs(x); }, [](double x) { return std::fabs(x); }, false},
      {"pow3", [](const Tensor& x) { return ops::pow(x, 3.0); }, [](double x) { return x * x * x; },
       false},
      {"pow-1.5", [](const Tensor& x) { return ops::pow(x, -1.5); },
       [](double x) { return std::pow(x, -1.5); }, true},
      {"relu", [](const Tensor& x) { return ops::relu(x); }, [](double x) { return x > 0 ? x : 0.0; },
       false},
      {"tanh", [](const Tensor& x) { return ops::tanh(x); }, [](double x) { return std::tanh(x); }, false},
      {"clamp", [](const Tensor& x) { return ops::clamp(x, -0.5, 0.7); },
       [](double x) { return std::min(std::max(x, -0.5), 0.7); }, false},
  };
  return cases;
}

// Values whose distance to the kinks of abs, relu and clamp exceeds gradcheck's eps.
Tensor input(const Shape& shape, uint64_t seed, DType dt, bool positive) {
  Tensor x = randn_t(shape, seed, dt);
  auto v = x.to_vector<double>();
  for (double& e : v) {
    if (std::fabs(e) < 0.01) e += 0.05;
    if (std::fabs(e + 0.5) < 0.01 || std::fabs(e - 0.7) < 0.01) e += 0.05;
    if (positive) e = std::fabs(e) + 0.2;
  }
  return Tensor::from_vector<double>(v, shape).to(dt);
}

TEST(UnaryForward, MatchesStdMath) {
  uint64_t seed = 1;
  for (DType dt : {DType::Float32, DType::Float64})
    for (const auto& c : unary_cases())
      for (const Shape& s : {Shape{}, Shape{1}, Shape{3, 7}, Shape{2, 3, 5, 4}}) {
        Tensor x = input(s, seed++, dt, c.positive_only);
        Tensor y = c.op(x);
        EXPECT_EQ(y.shape(), s);
        std::vector<double> ref;
        for (double v : x.to_vector<double>()) ref.push_back(c.ref(v));
        expect_values_near(y.to_vector<double>(), ref, dt == DType::Float32 ? 1e-6 : 1e-15,
                           dt == DType::Float32 ? 2e-6 : 1e-14, c.name);
      }
}

TEST(UnaryForward, EdgeValues) {
  Tensor x = Tensor::from_vector<double>({0.0, -1.0, 1e3, -1e3}, {4});
  EXPECT_EQ(ops::relu(x).to_vector<double>(), (std::vector<double>{0, 0, 1e3, 0}));
  auto l = ops::log(x).to_vector<double>();
  EXPECT_TRUE(std::isinf(l[0]) && l[0] < 0);
  EXPECT_TRUE(std::isnan(l[1]));
  EXPECT_EQ(ops::tanh(x).to_vector<double>()[2], 1.0);
  EXPECT_EQ(ops::clamp(x, -2, 2).to_vector<double>(), (std::vector<double>{0, -1, 2, -2}));
}

TEST(UnaryGrad, Gradcheck) {
  uint64_t seed = 50;
  for (const auto& c : unary_cases())
    for (const Shape& s : {Shape{}, Shape{2, 3, 4}}) {
      Tensor x = input(s, seed++, DType::Float64, c.positive_only).set_requires_grad(true);
      expect_gradcheck([&](const std::vector<Tensor>& in) { return std::vector<Tensor>{c.op(in[0])}; },
                       {x}, c.name);
    }
}

TEST(UnaryGrad, GradientsAtTheKinksFollowPyTorch) {
  Tensor x = Tensor::from_vector<double>({0.0, -0.5, 0.7, 2.0}, {4}).set_requires_grad(true);
  ops::sum(ops::abs(x)).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{0, -1, 1, 1}));
  x.set_grad(Tensor());
  ops::sum(ops::relu(x)).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{0, 0, 1, 1}));
  x.set_grad(Tensor());
  ops::sum(ops::clamp(x, -0.5, 0.7)).backward();  // lo <= x <= hi passes, bounds included
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{1, 1, 1, 0}));
  x.set_grad(Tensor());
  ops::sum(ops::pow(x, 0.0)).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{0, 0, 0, 0}));
}

TEST(UnaryGrad, ModifyingTheSavedInputMakesBackwardThrow) {
  Tensor x = input({3}, 1, DType::Float64, true).set_requires_grad(true);
  Tensor y = ops::log(x);
  {
    autograd::NoGradGuard g;
    x.fill_(2.0);
  }
  EXPECT_ERROR_HAS(ops::sum(y).backward(), "log backward", "modified in place");
  autograd::clear_tape();
}

TEST(UnaryErrors, BadInputs) {
  EXPECT_ERROR_HAS(ops::exp(Tensor()), "exp: expected a defined tensor as x");
  EXPECT_ERROR_HAS(ops::tanh(Tensor::empty({2, 0})), "tanh: expected a non-empty tensor", "[2, 0]");
  EXPECT_ERROR_HAS(ops::clamp(Tensor::randn({2}, 1), 1.0, -1.0), "clamp: expected lo <= hi",
                   "lo = 1", "hi = -1");
}

TEST(UnaryCuda, MatchesCpuOnOddShapes) {
  TG_SKIP_WITHOUT_GPU();
  uint64_t seed = 1;
  for (DType dt : {DType::Float32, DType::Float64})
    for (const auto& c : unary_cases())
      for (const Shape& s : {Shape{}, Shape{3, 37, 41}}) {
        Tensor x = input(s, seed++, dt, c.positive_only).set_requires_grad(true);
        expect_cuda_matches_cpu([&](const std::vector<Tensor>& in) { return std::vector<Tensor>{c.op(in[0])}; },
                                {x}, dt == DType::Float32 ? 1e-6 : 1e-13, c.name);
      }
}

}  // namespace
}  // namespace tg
