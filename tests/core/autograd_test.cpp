#include <gtest/gtest.h>

#include <cmath>

#include "core/autograd.h"
#include "core/function.h"
#include "core/tensor.h"
#include "ops/elementwise.h"
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
    EXPECT_ERROR_HAS(y.backward(), "backward", "float64 cpu [1]", "does not require grad", "NoGradGuard");
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
  EXPECT_ERROR_HAS(y.backward(), "backward", "shape [3]", "needs an explicit gradient");
  EXPECT_ERROR_HAS(y.backward(vec({1.0})), "backward", "expected a gradient of float64 cpu [3]",
                   "got float64 cpu [1]");
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
  EXPECT_ERROR_HAS(y.set_requires_grad(false), "set_requires_grad", "only leaf tensors");
  Tensor d = y.detach();
  EXPECT_FALSE(d.requires_grad());
  EXPECT_TRUE(d.is_leaf());
  EXPECT_ERROR_HAS(y.view({1, 1}), "view", "takes part in autograd", "detach()");
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

TEST_F(Autograd, MultiRootBackwardSumsTheRootsContributions) {
  // L1 = sum(x * x) and y2 = sin(x) with cotangent v: dx = 2 x * g1 + cos(x) * v, in one walk.
  Tensor x = vec({0.5, -1.5, 2.0}).set_requires_grad();
  Tensor L1 = test_sum(test_mul(x, x));
  Tensor y2 = test_sin(x);
  autograd::backward({L1, y2}, {Tensor::full({}, 3.0, DType::Float64), vec({1.0, -2.0, 0.25})}, false);
  EXPECT_EQ(autograd::tape_size(), 0u);
  const std::vector<double> xv{0.5, -1.5, 2.0}, v{1.0, -2.0, 0.25};
  auto g = x.grad().to_vector<double>();
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(g[i], 2 * xv[i] * 3.0 + std::cos(xv[i]) * v[i], 1e-14) << i;
}

TEST_F(Autograd, MultiRootBackwardWithASharedIntermediate) {
  // s = sin(x) feeds both roots: the walk must add both gradients into s before running sin's node.
  Tensor x = vec({0.3, 1.1}).set_requires_grad();
  Tensor s = test_sin(x);
  Tensor r1 = test_mul(s, s);
  autograd::backward({r1, s}, {vec({1.0, 1.0}), vec({0.5, -1.0})}, false);
  const std::vector<double> xv{0.3, 1.1}, v{0.5, -1.0};
  auto g = x.grad().to_vector<double>();
  for (int i = 0; i < 2; ++i)
    EXPECT_NEAR(g[i], (2 * std::sin(xv[i]) + v[i]) * std::cos(xv[i]), 1e-14) << i;
}

TEST_F(Autograd, MultiRootBackwardWithTheSameRootTwiceAddsItsGradients) {
  Tensor x = vec({0.4, -0.9}).set_requires_grad();
  Tensor y = test_sin(x);
  autograd::backward({y, y}, {vec({1.0, 2.0}), vec({0.5, -4.0})}, false);
  auto g = x.grad().to_vector<double>();
  EXPECT_NEAR(g[0], 1.5 * std::cos(0.4), 1e-15);
  EXPECT_NEAR(g[1], -2.0 * std::cos(-0.9), 1e-15);
}

TEST_F(Autograd, MultiRootBackwardChecksItsArguments) {
  Tensor x = vec({1.0}).set_requires_grad();
  Tensor y = test_sin(x);
  EXPECT_ERROR_HAS(autograd::backward({y, y}, {vec({1.0})}, false), "backward", "2 tensors",
                   "1 gradients");
  EXPECT_ERROR_HAS(autograd::backward({y}, {Tensor::ones({1}, DType::Float32)}, false), "backward",
                   "expected a gradient of float64 cpu [1]", "got float32 cpu [1]");
}

TEST_F(Autograd, BackwardOfALeafAccumulatesIntoItsGrad) {
  Tensor x = vec({1.0, 2.0}).set_requires_grad();
  autograd::backward({x}, {vec({0.5, 4.0})}, false);
  autograd::backward({x}, {vec({0.5, 4.0})}, false);
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{1.0, 8.0}));
}

TEST_F(Autograd, ANodeReturningTheWrongGradientShapeIsAClearError) {
  struct BadNode : autograd::Node {
    const char* name() const override { return "bad_shape"; }
    std::vector<Tensor> backward(const std::vector<Tensor>&) override {
      return {Tensor::zeros({5}, DType::Float64)};
    }
  };
  Tensor x = vec({1.0, 2.0}).set_requires_grad();
  Tensor y = Tensor::zeros({2}, DType::Float64);
  autograd::record(std::make_shared<BadNode>(), {x}, {y});
  EXPECT_ERROR_HAS(y.backward(vec({1.0, 1.0})), "bad_shape backward, input 0",
                   "expected a gradient of float64 cpu [2]", "got float64 cpu [5]");
}

// A leaf's first gradient is taken without a copy only when nothing else can see it: a gradient
// that a node hands to two leaves (add's backward returns its dy for both inputs), or one the op
// still holds, is copied, so that changing one leaf's grad changes nothing else.
TEST_F(Autograd, LeafGradientsNeverAliasEachOtherOrAnOpsTensors) {
  Tensor a = vec({1.0, 2.0}).set_requires_grad();
  Tensor b = vec({3.0, 4.0}).set_requires_grad();
  ops::sum(ops::add(a, b)).backward();
  a.grad().fill_(7.0);
  EXPECT_EQ(b.grad().to_vector<double>(), (std::vector<double>{1.0, 1.0}));

  Tensor kept = vec({5.0, 6.0});
  Tensor x = vec({0.5, 0.25}).set_requires_grad();
  Tensor y = autograd::apply_function(
      "keeps_its_gradient", {x},
      [](autograd::FunctionContext&, const std::vector<Tensor>& in) {
        return std::vector<Tensor>{in[0].clone()};
      },
      [&](autograd::FunctionContext&, const std::vector<Tensor>&) {
        return std::vector<Tensor>{kept};
      })[0];
  y.backward(vec({1.0, 1.0}));
  kept.fill_(0.0);
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{5.0, 6.0}));
  x.grad().fill_(-1.0);
  EXPECT_EQ(kept.to_vector<double>(), (std::vector<double>{0.0, 0.0}));
}

// ... and when nothing else can see it, the backward's tensor becomes the leaf's grad as it is (no
// copy: one kernel and one allocation fewer per parameter and step).
TEST_F(Autograd, AnUnsharedFirstGradientIsStoredWithoutACopy) {
  const void* made = nullptr;
  Tensor x = vec({0.5, 0.25}).set_requires_grad();
  Tensor y = autograd::apply_function(
      "fresh_gradient", {x},
      [](autograd::FunctionContext&, const std::vector<Tensor>& in) {
        return std::vector<Tensor>{in[0].clone()};
      },
      [&](autograd::FunctionContext&, const std::vector<Tensor>& dy) {
        Tensor g = dy[0].clone();
        made = g.raw_data();
        return std::vector<Tensor>{g};
      })[0];
  y.backward(vec({2.0, 3.0}));
  EXPECT_EQ(x.grad().raw_data(), made);
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{2.0, 3.0}));
}
