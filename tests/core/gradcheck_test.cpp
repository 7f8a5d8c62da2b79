#include <gtest/gtest.h>

#include "core/autograd.h"
#include "core/gradcheck.h"
#include "test_ops.h"
#include "test_utils.h"

using namespace tg;
using namespace tg::testing;

TEST(Gradcheck, PassesOnACorrectFunction) {
  Tensor a = Tensor::randn({2, 3}, 1, DType::Float64).set_requires_grad();
  Tensor b = Tensor::randn({2, 3}, 2, DType::Float64).set_requires_grad();
  auto r = gradcheck([](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{test_sin(test_mul(in[0], in[1])), test_sum(in[0])};
  }, {a, b});
  EXPECT_TRUE(r.passed) << r.message;
  ASSERT_EQ(r.inputs.size(), 2u);
  EXPECT_LT(r.inputs[0].max_abs_error, 1e-8);
  // gradcheck leaves the inputs as they were
  EXPECT_EQ(a.to_vector<double>(), Tensor::randn({2, 3}, 1, DType::Float64).to_vector<double>());
  EXPECT_FALSE(a.grad().defined());
}

TEST(Gradcheck, FailsOnAWrongBackwardAndSaysWhere) {
  Tensor x = Tensor::randn({5}, 3, DType::Float64).set_requires_grad();
  auto r = gradcheck([](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{test_sin(in[0], /*wrong=*/true)};
  }, {x});
  EXPECT_FALSE(r.passed);
  ASSERT_EQ(r.inputs.size(), 1u);
  EXPECT_FALSE(r.inputs[0].passed);
  EXPECT_GE(r.inputs[0].worst_index, 0);
  EXPECT_NEAR(r.inputs[0].analytic / r.inputs[0].numeric, 1.01, 1e-6);
  EXPECT_NE(r.message.find("input 0"), std::string::npos) << r.message;
  EXPECT_NE(r.message.find("analytic"), std::string::npos) << r.message;
}

TEST(Gradcheck, OnlyChecksInputsThatRequireGrad) {
  Tensor x = Tensor::randn({4}, 4, DType::Float64).set_requires_grad();
  Tensor w = Tensor::randn({4}, 5, DType::Float64);
  auto r = gradcheck([](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{test_mul(in[0], in[1])};
  }, {x, w});
  EXPECT_TRUE(r.passed) << r.message;
  ASSERT_EQ(r.inputs.size(), 1u);
  EXPECT_EQ(r.inputs[0].input, 0u);
}

TEST(Gradcheck, RefusesFloat32) {
  Tensor x = Tensor::randn({4}, 4, DType::Float32).set_requires_grad();
  EXPECT_ERROR_HAS(gradcheck([](const std::vector<Tensor>& in) { return in; }, {x}), "gradcheck",
                   "input 0 must be float64", "float32 cpu [4]");
  // an input that does not require grad may be float32
  Tensor x64 = Tensor::randn({3}, 5, DType::Float64).set_requires_grad();
  Tensor w32 = Tensor::randn({3}, 6, DType::Float32);
  auto r = gradcheck([](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{test_mul(in[0], in[1].to(DType::Float64))};
  }, {x64, w32});
  EXPECT_TRUE(r.passed) << r.message;
}

TEST(Gradcheck, CatchesANonDeterministicBackward) {
  Tensor x = Tensor::randn({6}, 7, DType::Float64).set_requires_grad();
  auto f = [](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{test_quirky_sin(in[0], SinQuirk::Flaky)};
  };
  auto r = gradcheck(f, {x});
  EXPECT_FALSE(r.passed);
  EXPECT_CONTAINS(r.message, "input 0: two backward runs gave different gradients");
  ASSERT_EQ(r.inputs.size(), 1u);
  EXPECT_TRUE(r.inputs[0].passed) << "the values are right to 1e-9; only the determinism check fails";
  GradcheckOptions lenient;
  lenient.check_determinism = false;
  auto r2 = gradcheck(f, {x}, lenient);
  EXPECT_TRUE(r2.passed) << r2.message;
}

TEST(Gradcheck, CatchesAGradientThatIgnoresAZeroCotangent) {
  Tensor x = Tensor::randn({6}, 8, DType::Float64).set_requires_grad();
  auto f = [](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{test_quirky_sin(in[0], SinQuirk::Leaky)};
  };
  auto r = gradcheck(f, {x});
  EXPECT_FALSE(r.passed);
  EXPECT_CONTAINS(r.message, "input 0: a zero output gradient gave a non-zero input gradient");
  ASSERT_EQ(r.inputs.size(), 1u);
  EXPECT_TRUE(r.inputs[0].passed);
  GradcheckOptions lenient;
  lenient.check_zero_grad = false;
  auto r2 = gradcheck(f, {x}, lenient);
  EXPECT_TRUE(r2.passed) << r2.message;
}

TEST(Gradcheck, AnalyticGradientsMatchTheClosedForm) {
  // L = <v0, a * b> + <v1, sin(a)>: dL/da = v0 * b + v1 * cos(a), dL/db = v0 * a.
  const std::vector<double> av{0.2, -0.7, 1.3}, bv{1.5, 0.4, -2.0}, v0{1.0, -0.5, 2.0},
      v1{0.3, 0.3, -1.0};
  Tensor a = Tensor::from_vector<double>(av, {3}).set_requires_grad();
  Tensor b = Tensor::from_vector<double>(bv, {3}).set_requires_grad();
  Tensor c = Tensor::from_vector<double>(bv, {3});  // no grad: its slot stays undefined
  auto g = analytic_gradients(
      [](const std::vector<Tensor>& in) {
        return std::vector<Tensor>{test_mul(in[0], in[1]), test_sin(test_mul(in[0], in[2]))};
      },
      {a, b, c},
      {Tensor::from_vector<double>(v0, {3}), Tensor::from_vector<double>(v1, {3})});
  ASSERT_EQ(g.size(), 3u);
  EXPECT_FALSE(g[2].defined());
  auto ga = g[0].to_vector<double>(), gb = g[1].to_vector<double>();
  for (int i = 0; i < 3; ++i) {
    EXPECT_NEAR(ga[i], v0[i] * bv[i] + v1[i] * std::cos(av[i] * bv[i]) * bv[i], 1e-14) << i;
    EXPECT_NEAR(gb[i], v0[i] * av[i], 1e-14) << i;
  }
  EXPECT_FALSE(a.grad().defined()) << "analytic_gradients works on detached copies";
  EXPECT_ERROR_HAS(analytic_gradients([](const std::vector<Tensor>& in) { return in; }, {a},
                                      {Tensor(), Tensor()}),
                   "gradcheck", "returned 1 outputs", "expected 2");
}

TEST(Gradcheck, AGradientThatIsOffInOneElementIsFoundThere) {
  // wrong only at index 4: the report names that element
  struct OffByOne : autograd::Node {
    const char* name() const override { return "off_by_one"; }
    std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
      Tensor r = g[0].clone();
      r.data<double>()[4] *= 1.1;
      return {r};
    }
  };
  Tensor x = Tensor::randn({7}, 9, DType::Float64).set_requires_grad();
  auto r = gradcheck([](const std::vector<Tensor>& in) {
    Tensor y = in[0].detach().clone();
    if (autograd::should_record({in[0]})) autograd::record(std::make_shared<OffByOne>(), {in[0]}, {y});
    return std::vector<Tensor>{y};
  }, {x});
  EXPECT_FALSE(r.passed);
  ASSERT_EQ(r.inputs.size(), 1u);
  EXPECT_EQ(r.inputs[0].worst_index, 4);
  EXPECT_NEAR(r.inputs[0].analytic / r.inputs[0].numeric, 1.1, 1e-6);
  EXPECT_CONTAINS(r.message, "input 0 [7]: gradient mismatch at index 4");
}
