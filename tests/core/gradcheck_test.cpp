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
  EXPECT_THROW(gradcheck([](const std::vector<Tensor>& in) { return in; }, {x}), Error);
}
