#include <gtest/gtest.h>

#include <cmath>

#include "core/autograd.h"
#include "core/tensor.h"
#include "test_ops.h"
#include "test_utils.h"

using namespace tg;
using namespace tg::testing;

namespace {
Tensor vec(std::vector<double> v) { return Tensor::from_vector<double>(v, {int64_t(v.size())}); }
}  // namespace

class Autograd : public ::testing::Test {
 protected:
  void SetUp() override { autograd::clear_tape(); }
  void TearDown() override { autograd::clear_tape(); }
};

TEST_F(Autograd, ChainRuleThroughSeveralOps) {
  // L = sum(sin(a * b) * a)
  Tensor a = vec({0.3, -1.2, 2.0}).set_requires_grad();
  Tensor b = vec({1.5, 0.7, -0.4}).set_requires_grad();
  Tensor L = test_sum(test_mul(test_sin(test_mul(a, b)), a));
  EXPECT_EQ(autograd::tape_size(), 4u);
  L.backward();
  EXPECT_EQ(autograd::tape_size(), 0u);
  auto ga = a.grad().to_vector<double>();
  auto gb = b.grad().to_vector<double>();
  auto av = a.to_vector<double>(), bv = b.to_vector<double>();
  for (int i = 0; i < 3; ++i) {
    double u = av[i] * bv[i];
    EXPECT_NEAR(ga[i], std::cos(u) * bv[i] * av[i] + std::sin(u), 1e-14);
    EXPECT_NEAR(gb[i], std::cos(u) * av[i] * av[i], 1e-14);
  }
}

TEST_F(Autograd, TensorUsedTwice) {
  Tensor x = vec({1.0, -2.0, 3.0}).set_requires_grad();
  Tensor L = test_sum(test_mul(x, x));
  L.backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{2.0, -4.0, 6.0}));
}

TEST_F(Autograd, IntermediateUsedTwice) {
  Tensor x = vec({0.5, 1.0}).set_requires_grad();
  Tensor s = test_sin(x);
  Tensor L = test_sum(test_mul(s, s));  // d/dx sin^2 = 2 sin cos
  L.backward();
  auto g = x.grad().to_vector<double>();
  EXPECT_NEAR(g[0], 2 * std::sin(0.5) * std::cos(0.5), 1e-15);
  EXPECT_NEAR(g[1], 2 * std::sin(1.0) * std::cos(1.0), 1e-15);
}

TEST_F(Autograd, AccumulatesAcrossBackwardCalls) {
  Tensor x = vec({1.0, 2.0}).set_requires_grad();
  test_sum(test_mul(x, x)).backward();
  test_sum(test_mul(x, x)).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{4.0, 8.0}));
}

TEST_F(Autograd, NoGradRecordsNothing) {
  Tensor x = vec({1.0}).set_requires_grad();
  {
    autograd::NoGradGuard guard;
    EXPECT_FALSE(autograd::grad_mode_enabled());
    {
      autograd::NoGradGuard nested;
    }
    EXPECT_FALSE(autograd::grad_mode_enabled());
    Tensor y = test_mul(x, x);
    EXPECT_FALSE(y.requires_grad());
    EXPECT_EQ(autograd::tape_size(), 0u);
    EXPECT_THROW(y.backward(), Error);
  }
  EXPECT_TRUE(autograd::grad_mode_enabled());
}

TEST_F(Autograd, SecondBackwardWithoutRetainGraphIsAClearError) {
  Tensor x = vec({1.0, 2.0}).set_requires_grad();
  Tensor L = test_sum(test_sin(x));
  L.backward();
  try {
    L.backward();
    FAIL() << "second backward did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("retain_graph"), std::string::npos) << e.what();
  }
}

TEST_F(Autograd, RetainGraphAllowsSecondBackward) {
  Tensor x = vec({1.0, 2.0}).set_requires_grad();
  Tensor L = test_sum(test_sin(x));
  L.backward(Tensor(), /*retain_graph=*/true);
  EXPECT_EQ(autograd::tape_size(), 2u);
  L.backward();
  auto g = x.grad().to_vector<double>();
  EXPECT_NEAR(g[0], 2 * std::cos(1.0), 1e-15);
  EXPECT_NEAR(g[1], 2 * std::cos(2.0), 1e-15);
}

TEST_F(Autograd, NonScalarBackwardNeedsExplicitGradient) {
  Tensor x = vec({1.0, 2.0, 3.0}).set_requires_grad();
  Tensor y = test_mul(x, x);
  EXPECT_THROW(y.backward(), Error);
  EXPECT_THROW(y.backward(vec({1.0})), Error);  // wrong shape
  y.backward(vec({1.0, 0.5, -1.0}));
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{2.0, 2.0, -6.0}));
}

TEST_F(Autograd, InPlaceChangeOfSavedTensorIsAClearError) {
  Tensor x = vec({1.0, 2.0}).set_requires_grad();
  Tensor w = vec({3.0, 4.0});
  Tensor L = test_sum(test_mul(x, w));
  w.fill_(0.0);  // w was saved by test_mul
  try {
    L.backward();
    FAIL() << "backward after an in-place change did not throw";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("modified in place"), std::string::npos) << m;
    EXPECT_NE(m.find("test_mul"), std::string::npos) << m;
  }
}

TEST_F(Autograd, NeedsGradMaskSkipsUnneededGradients) {
  Tensor x = vec({1.0, 2.0});  // no grad
  Tensor w = vec({3.0, 4.0}).set_requires_grad();
  Tensor y = test_mul(x, w);
  auto node = y.impl()->grad_fn.lock();
  ASSERT_TRUE(node);
  EXPECT_FALSE(node->needs_input_grad(0));
  EXPECT_TRUE(node->needs_input_grad(1));
  test_sum(y).backward();
  EXPECT_FALSE(x.grad().defined());
  EXPECT_EQ(w.grad().to_vector<double>(), (std::vector<double>{1.0, 2.0}));
}

TEST_F(Autograd, SavedTensorsAreReleasedDuringTheWalk) {
  Tensor x = vec({1.0, 2.0}).set_requires_grad();
  std::weak_ptr<TensorImpl> inner;
  Tensor L;
  {
    Tensor s = test_sin(x);
    inner = s.impl();
    L = test_sum(test_mul(s, s));  // test_mul saves s
  }
  EXPECT_FALSE(inner.expired());  // kept alive by the tape
  L.backward();
  EXPECT_TRUE(inner.expired());
}

TEST_F(Autograd, LeafRulesAndDetach) {
  Tensor x = vec({1.0}).set_requires_grad();
  Tensor y = test_sin(x);
  EXPECT_TRUE(x.is_leaf());
  EXPECT_FALSE(y.is_leaf());
  EXPECT_TRUE(y.requires_grad());
  EXPECT_THROW(y.set_requires_grad(false), Error);
  Tensor d = y.detach();
  EXPECT_FALSE(d.requires_grad());
  EXPECT_TRUE(d.is_leaf());
  EXPECT_THROW(y.view({1, 1}), Error);
}

TEST_F(Autograd, IndependentGraphsBackwardSeparately) {
  Tensor a = vec({1.0, 2.0}).set_requires_grad();
  Tensor b = vec({3.0, 4.0}).set_requires_grad();
  Tensor La = test_sum(test_mul(a, a));
  Tensor Lb = test_sum(test_sin(b));
  La.backward();  // runs and frees only La's graph
  EXPECT_EQ(autograd::tape_size(), 2u);
  Lb.backward();
  EXPECT_EQ(a.grad().to_vector<double>(), (std::vector<double>{2.0, 4.0}));
  EXPECT_NEAR(b.grad().to_vector<double>()[1], std::cos(4.0), 1e-15);
  EXPECT_EQ(autograd::tape_size(), 0u);
}

TEST_F(Autograd, DroppedGraphsArePruned) {
  Tensor x = vec({1.0, 2.0}).set_requires_grad();
  for (int i = 0; i < 1000; ++i) test_sum(test_sin(x));  // results dropped: nothing can reach them
  EXPECT_LT(autograd::tape_size(), 600u);
  autograd::prune_tape();
  EXPECT_EQ(autograd::tape_size(), 0u);
  Tensor kept = test_sin(x);
  autograd::prune_tape();
  EXPECT_EQ(autograd::tape_size(), 1u);  // its output is alive
  test_sum(kept).backward();
  EXPECT_NEAR(x.grad().to_vector<double>()[0], std::cos(1.0), 1e-15);
}
