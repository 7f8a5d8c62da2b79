// Tests of core/function.h: a custom op with lambdas gradchecks, gets the needs-grad mask, runs its
// forward and backward with grad mode off, detects in-place changes of saved tensors, and reports
// bad gradients clearly.
#include "core/function.h"

#include <vector>

#include "core/gradcheck.h"
#include "ops/elementwise.h"
#include "ops/unary.h"
#include "test_utils.h"

namespace tg {
namespace {

using autograd::FunctionContext;

// y = a * exp(b), both differentiable; records the mask and grad mode it saw.
struct Seen {
  bool forward_grad_mode = true, backward_grad_mode = true;
  std::vector<bool> mask;
};

Tensor mul_exp(const Tensor& a, const Tensor& b, Seen* seen = nullptr) {
  return autograd::apply_function(
      "mul_exp", {a, b},
      [seen](FunctionContext& ctx, const std::vector<Tensor>& in) {
        if (seen) seen->forward_grad_mode = autograd::grad_mode_enabled();
        Tensor e = ops::exp(in[1]);
        Tensor y = in[0] * e;
        ctx.save_for_backward({in[0], y});
        return std::vector<Tensor>{y};
      },
      [seen](FunctionContext& ctx, const std::vector<Tensor>& dy) {
        if (seen) {
          seen->backward_grad_mode = autograd::grad_mode_enabled();
          seen->mask = {ctx.needs_input_grad(0), ctx.needs_input_grad(1)};
        }
        const auto s = ctx.saved();
        std::vector<Tensor> d(2);
        if (ctx.needs_input_grad(0)) d[0] = dy[0] * (s[1] / s[0]);
        if (ctx.needs_input_grad(1)) d[1] = dy[0] * s[1];
        return d;
      })[0];
}

TEST(Function, GradchecksBothInputs) {
  Tensor a = ops::add(Tensor::rand({2, 3}, 1, DType::Float64), 0.5).set_requires_grad(true);
  Tensor b = Tensor::randn({2, 3}, 2, DType::Float64).set_requires_grad(true);
  const GradcheckResult r = gradcheck(
      [](const std::vector<Tensor>& in) { return std::vector<Tensor>{mul_exp(in[0], in[1])}; }, {a, b});
  EXPECT_TRUE(r.passed) << r.message;
}

TEST(Function, MaskAndGradModeOff) {
  Tensor a = Tensor::randn({3}, 1, DType::Float64);
  Tensor b = Tensor::randn({3}, 2, DType::Float64).set_requires_grad(true);
  Seen seen;
  ops::sum(mul_exp(a, b, &seen)).backward();
  EXPECT_FALSE(seen.forward_grad_mode);
  EXPECT_FALSE(seen.backward_grad_mode);
  EXPECT_EQ(seen.mask, (std::vector<bool>{false, true}));
  EXPECT_TRUE(b.grad().defined());
}

TEST(Function, NothingRecordedWithoutGrad) {
  autograd::clear_tape();
  Tensor y = mul_exp(Tensor::randn({3}, 1), Tensor::randn({3}, 2));
  EXPECT_FALSE(y.requires_grad());
  EXPECT_EQ(autograd::tape_size(), 0u);
}

TEST(Function, ModifyingASavedInputMakesBackwardThrow) {
  Tensor a = Tensor::randn({3}, 1, DType::Float64).set_requires_grad(true);
  Tensor b = Tensor::randn({3}, 2, DType::Float64);
  Tensor y = mul_exp(a, b);
  {
    autograd::NoGradGuard g;
    a.fill_(1.0);
  }
  EXPECT_ERROR_HAS(ops::sum(y).backward(), "mul_exp backward", "modified in place");
  autograd::clear_tape();
}

TEST(Function, BadGradientsAreClearErrors) {
  Tensor x = Tensor::randn({3}, 1, DType::Float64).set_requires_grad(true);
  auto fwd = [](FunctionContext&, const std::vector<Tensor>& in) { return std::vector<Tensor>{in[0] * 2.0}; };
  Tensor y = autograd::apply_function("bad_shape", {x}, fwd, [](FunctionContext&, const std::vector<Tensor>&) {
    return std::vector<Tensor>{Tensor::zeros({4}, DType::Float64)};
  })[0];
  EXPECT_ERROR_HAS(ops::sum(y).backward(), "bad_shape backward: the gradient of input 0", "[4]", "[3]");
  autograd::clear_tape();
  Tensor z = autograd::apply_function("bad_count", {x}, fwd, [](FunctionContext&, const std::vector<Tensor>&) {
    return std::vector<Tensor>{};
  })[0];
  EXPECT_ERROR_HAS(ops::sum(z).backward(), "bad_count backward: returned 0 gradients for 1 inputs");
  autograd::clear_tape();
  EXPECT_ERROR_HAS(autograd::apply_function("same", {x},
                                            [](FunctionContext&, const std::vector<Tensor>& in) {
                                              return std::vector<Tensor>{in[0]};
                                            },
                                            [](FunctionContext&, const std::vector<Tensor>& g) { return g; }),
                   "same: forward returned its input as output 0");
}

}  // namespace
}  // namespace tg
