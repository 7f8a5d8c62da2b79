// Tests of ops/loss.h: l1_loss and smooth_l1_loss against naive loops, float64 gradchecks in both
// operands, beta = 0, bad inputs, CUDA against CPU.
#include "ops/loss.h"

#include <cmath>
#include <string>
#include <vector>

#include "ops/op_check.h"

namespace tg {
namespace {

using testing::expect_cuda_matches_cpu;
using testing::expect_gradcheck;
using testing::randn_t;

double naive_smooth_l1(const Tensor& x, const Tensor& t, double beta) {
  const auto a = x.to_vector<double>(), b = t.to_vector<double>();
  double acc = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(a[i] - b[i]);
    acc += beta == 0 ? d : (d < beta ? 0.5 * d * d / beta : d - 0.5 * beta);
  }
  return acc / double(a.size());
}

TEST(LossForward, MatchesNaiveLoops) {
  uint64_t seed = 1;
  for (DType dt : {DType::Float32, DType::Float64})
    for (const Shape& s : {Shape{}, Shape{7}, Shape{2, 3, 4, 5}}) {
      Tensor x = randn_t(s, seed++, dt), t = randn_t(s, seed++, dt);
      const double tol = dt == DType::Float32 ? 1e-6 : 1e-14;
      Tensor l1 = ops::l1_loss(x, t);
      EXPECT_EQ(l1.shape(), Shape{});
      EXPECT_NEAR(l1.item(), naive_smooth_l1(x, t, 0), tol);
      for (double beta : {0.0, 0.5, 1.0, 3.0})
        EXPECT_NEAR(ops::smooth_l1_loss(x, t, beta).item(), naive_smooth_l1(x, t, beta), tol) << beta;
    }
}

TEST(LossGrad, GradcheckBothOperands) {
  uint64_t seed = 20;
  for (double beta : {-1.0, 0.0, 0.5, 1.0}) {
    Tensor x = randn_t({3, 5}, seed++, DType::Float64).set_requires_grad(true);
    Tensor t = randn_t({3, 5}, seed++, DType::Float64).set_requires_grad(true);
    auto f = [&](const std::vector<Tensor>& in) {
      return std::vector<Tensor>{beta < 0 ? ops::l1_loss(in[0], in[1])
                                          : ops::smooth_l1_loss(in[0], in[1], beta)};
    };
    expect_gradcheck(f, {x, t}, "loss beta " + std::to_string(beta));
  }
}

TEST(LossErrors, BadInputs) {
  Tensor x = Tensor::randn({2, 3}, 1);
  EXPECT_ERROR_HAS(ops::l1_loss(x, Tensor::randn({3, 2}, 2)),
                   "l1_loss: expected input and target of the same shape", "[2, 3]", "[3, 2]");
  EXPECT_ERROR_HAS(ops::smooth_l1_loss(x, x, -1.0), "smooth_l1_loss: expected beta >= 0", "-1");
  EXPECT_ERROR_HAS(ops::smooth_l1_loss(x, Tensor::randn({2, 3}, 2, DType::Float64)),
                   "smooth_l1_loss: expected operands of the same dtype");
  EXPECT_ERROR_HAS(ops::l1_loss(Tensor(), x), "l1_loss: expected a defined tensor as input");
}

TEST(LossCuda, MatchesCpuOnOddShapes) {
  TG_SKIP_WITHOUT_GPU();
  uint64_t seed = 1;
  for (DType dt : {DType::Float32, DType::Float64})
    for (double beta : {0.0, 0.7}) {
      Tensor x = randn_t({3, 37, 41}, seed++, dt).set_requires_grad(true);
      Tensor t = randn_t({3, 37, 41}, seed++, dt).set_requires_grad(true);
      expect_cuda_matches_cpu(
          [&](const std::vector<Tensor>& in) {
            return std::vector<Tensor>{ops::smooth_l1_loss(in[0], in[1], beta)};
          },
          {x, t}, dt == DType::Float32 ? 1e-6 : 1e-13, "smooth_l1");
    }
}

}  // namespace
}  // namespace tg
