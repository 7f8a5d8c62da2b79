// Tests of optim/adamw.h (against a naive transcription of PyTorch's rule, with groups), the
// learning-rate schedules (optim/lr_scheduler.h) on AdamW and SGD, clip_grad_norm_ and manual_seed.
#include "optim/adamw.h"

#include <cmath>
#include <string>
#include <vector>

#include "core/default_generator.h"
#include "nn/utils.h"
#include "optim/lr_scheduler.h"
#include "optim/sgd.h"
#include "test_utils.h"

namespace tg {
namespace {

using testing::randn_t;

Tensor param(const Shape& s, uint64_t seed, DType dt = DType::Float64, Device dev = Device::CPU) {
  return randn_t(s, seed, dt, dev).set_requires_grad(true);
}

// PyTorch's _single_tensor_adamw, in double, on host vectors.
struct NaiveAdamW {
  std::vector<double> p, m, v;
  int64_t t = 0;
  void step(const std::vector<double>& g, double lr, double wd, const optim::AdamWOptions& o) {
    if (m.empty()) m.assign(p.size(), 0.0), v.assign(p.size(), 0.0);
    ++t;
    for (size_t i = 0; i < p.size(); ++i) {
      p[i] *= 1 - lr * wd;
      m[i] += (1 - o.beta1) * (g[i] - m[i]);
      v[i] = o.beta2 * v[i] + (1 - o.beta2) * g[i] * g[i];
      const double bc1 = 1 - std::pow(o.beta1, double(t)), bc2 = 1 - std::pow(o.beta2, double(t));
      p[i] -= lr / bc1 * (m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + o.eps));
    }
  }
};

TEST(AdamW, MatchesPyTorchsRuleWithGroups) {
  Tensor a = param({3, 4}, 1), b = param({5}, 2);
  optim::AdamWOptions o;
  o.lr = 0.01;
  o.weight_decay = 0.1;
  optim::AdamW opt({optim::ParamGroup{{{"a", a}}}, optim::ParamGroup{{{"b", b}}, 0.05, 0.0}}, o);
  EXPECT_EQ(opt.num_groups(), 2u);
  EXPECT_EQ(opt.group_lr(1), 0.05);
  NaiveAdamW na{a.to_vector<double>()}, nb{b.to_vector<double>()};
  for (int s = 0; s < 4; ++s) {
    Tensor ga = randn_t({3, 4}, 10 + s, DType::Float64), gb = randn_t({5}, 20 + s, DType::Float64);
    a.set_grad(ga);
    b.set_grad(s == 2 ? Tensor() : gb);  // b skips step 2: its own step count stays behind
    opt.step();
    na.step(ga.to_vector<double>(), 0.01, 0.1, o);
    if (s != 2) nb.step(gb.to_vector<double>(), 0.05, 0.0, o);
  }
  EXPECT_EQ(opt.param_step(0), 4);
  EXPECT_EQ(opt.param_step(1), 3);
  EXPECT_LT(testing::max_abs_diff_vec(a.to_vector<double>(), na.p), 1e-14);
  EXPECT_LT(testing::max_abs_diff_vec(b.to_vector<double>(), nb.p), 1e-14);
  EXPECT_LT(testing::max_abs_diff_vec(opt.exp_avg_sq(0).to_vector<double>(), na.v), 1e-15);
}

TEST(AdamW, BadOptionsAndGroups) {
  Tensor a = param({2}, 1);
  optim::AdamWOptions o;
  o.beta1 = 1.0;
  EXPECT_ERROR_HAS(optim::AdamW({{"a", a}}, o), "AdamW: invalid beta1 1");
  EXPECT_ERROR_HAS(optim::AdamW({{"a", a}, {"a", param({2}, 2)}}), "AdamW: parameter name 'a'",
                   "appears twice");
  optim::AdamW opt({{"a", a}});
  EXPECT_ERROR_HAS(opt.set_group_lr(1, 0.1), "AdamW: parameter group 1 does not exist (1 groups)");
  EXPECT_ERROR_HAS(opt.set_group_lr(0, -1), "AdamW: invalid learning rate -1");
  EXPECT_ERROR_HAS(optim::AdamW({optim::ParamGroup{{{"a", a}}, -1, 0}, optim::ParamGroup{{}}},
                                optim::AdamWOptions{}),
                   "AdamW: parameter group 1 is empty");
}

TEST(AdamW, CudaMatchesCpu) {
  TG_SKIP_WITHOUT_GPU();
  for (DType dt : {DType::Float32, DType::Float64}) {
    std::vector<std::pair<std::string, Tensor>> cpu, gpu;
    for (int i = 0; i < 45; ++i) {  // more than one launch's worth of tensors
      Tensor p = param({int64_t(1 + 97 * i)}, uint64_t(i), dt);
      cpu.emplace_back(std::to_string(i), p);
      gpu.emplace_back(std::to_string(i), p.detach().cuda().clone().set_requires_grad(true));
    }
    optim::AdamW oc(cpu), og(gpu);
    for (int s = 0; s < 3; ++s) {
      for (size_t i = 0; i < cpu.size(); ++i) {
        Tensor g = randn_t(cpu[i].second.shape(), 1000 + i + 100 * s, dt);
        cpu[i].second.set_grad(g);
        gpu[i].second.set_grad(g.cuda());
      }
      oc.step();
      og.step();
    }
    for (size_t i = 0; i < cpu.size(); ++i)
      EXPECT_LE(testing::rel_l2(gpu[i].second, cpu[i].second), dt == DType::Float32 ? 1e-6 : 1e-14);
  }
}

TEST(LRScheduler, StepLRAndCosineOnAnyOptimizer) {
  Tensor a = param({2}, 1);
  optim::SGD sgd({a}, optim::SGDOptions{0.1});
  optim::StepLR step(sgd, 2, 0.5);
  std::vector<double> got;
  for (int e = 0; e < 5; ++e) {
    step.step();
    got.push_back(sgd.options().lr);
  }
  EXPECT_EQ(got, (std::vector<double>{0.1, 0.05, 0.05, 0.025, 0.025}));

  optim::AdamW adam({optim::ParamGroup{{{"a", a}}, 0.2}, optim::ParamGroup{{{"b", param({2}, 2)}}, 0.4}},
                    optim::AdamWOptions{});
  optim::CosineAnnealingLR cos(adam, 4, 0.1);
  for (int e = 1; e <= 4; ++e) {
    cos.step();
    EXPECT_NEAR(adam.group_lr(0), 0.1 + 0.1 * (1 + std::cos(M_PI * e / 4)) / 2, 1e-15);
    EXPECT_NEAR(adam.group_lr(1), 0.1 + 0.3 * (1 + std::cos(M_PI * e / 4)) / 2, 1e-15);
  }
  EXPECT_NEAR(adam.group_lr(0), 0.1, 1e-15);
  EXPECT_ERROR_HAS(optim::StepLR(sgd, 0), "StepLR: expected step_size > 0, got 0");
  EXPECT_ERROR_HAS(optim::CosineAnnealingLR(sgd, 0), "CosineAnnealingLR: expected T_max > 0");
}

TEST(ClipGradNorm, ScalesToMaxNormAndReturnsTheTotal) {
  Tensor a = param({2}, 1), b = param({1}, 2), c = param({3}, 3);
  a.set_grad(Tensor::from_vector<double>({3, 0}, {2}));
  b.set_grad(Tensor::from_vector<double>({4}, {1}));
  EXPECT_DOUBLE_EQ(nn::utils::clip_grad_norm_({a, b, c}, 1.0), 5.0);
  const double coef = 1.0 / (5.0 + 1e-6);
  EXPECT_DOUBLE_EQ(a.grad().to_vector<double>()[0], 3 * coef);
  EXPECT_DOUBLE_EQ(b.grad().to_vector<double>()[0], 4 * coef);
  EXPECT_FALSE(c.grad().defined());
  // Below the limit nothing changes.
  EXPECT_NEAR(nn::utils::clip_grad_norm_({a, b}, 10.0), 1.0, 1e-6);
  EXPECT_DOUBLE_EQ(b.grad().to_vector<double>()[0], 4 * coef);
  EXPECT_ERROR_HAS(nn::utils::clip_grad_norm_({a}, -1), "clip_grad_norm_: expected max_norm >= 0");
}

TEST(ManualSeed, ReseedsTheDefaultGenerator) {
  manual_seed(42);
  Tensor x = Tensor::randn({4}, default_generator());
  manual_seed(42);
  Tensor y = Tensor::randn({4}, default_generator());
  EXPECT_EQ(x.to_vector<double>(), y.to_vector<double>());
  Tensor z = Tensor::randn({4}, default_generator());
  EXPECT_NE(y.to_vector<double>(), z.to_vector<double>());
}

}  // namespace
}  // namespace tg
