// A custom differentiable op written with tg::autograd::apply_function (core/function.h):
// softplus(x) = log(1 + exp(x)), composed of library ops in the forward, with its own backward
// dx = dy * sigmoid(x). The program gradchecks it in float64 and exits non-zero on a failure.
#include <cstdio>
#include <vector>

#include "core/function.h"
#include "core/gradcheck.h"
#include "ops/elementwise.h"
#include "ops/unary.h"

namespace {

tg::Tensor softplus(const tg::Tensor& x) {
  return tg::autograd::apply_function(
      "softplus", {x},
      [](tg::autograd::FunctionContext& ctx, const std::vector<tg::Tensor>& in) {
        ctx.save_for_backward({in[0]});
        return std::vector<tg::Tensor>{tg::ops::log(tg::ops::exp(in[0]) + 1.0)};
      },
      [](tg::autograd::FunctionContext& ctx, const std::vector<tg::Tensor>& dy) {
        // Runs with grad mode off; compute only what the needs-grad mask asks for.
        if (!ctx.needs_input_grad(0)) return std::vector<tg::Tensor>{tg::Tensor()};
        const tg::Tensor x = ctx.saved()[0];  // throws if x was modified in place since
        return std::vector<tg::Tensor>{dy[0] * tg::ops::sigmoid(x)};
      })[0];
}

}  // namespace

int main() {
  try {
    tg::Tensor x = tg::Tensor::randn({3, 5}, 7, tg::DType::Float64).set_requires_grad(true);
    const tg::GradcheckResult r = tg::gradcheck(
        [](const std::vector<tg::Tensor>& in) { return std::vector<tg::Tensor>{softplus(in[0])}; }, {x});
    std::printf("softplus gradcheck: %s\n", r.passed ? "passed" : r.message.c_str());
    return r.passed ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "custom_op: %s\n", e.what());
    return 1;
  }
}
