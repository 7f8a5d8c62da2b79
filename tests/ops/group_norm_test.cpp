// Tests of ops::group_norm: forward, statistics and backward against naive loops, float64
// gradchecks of x, weight and bias, edge cases (G = 1, G = C, 1x1 spatial, N = 1, no affine),
// poisoned outputs, bad inputs, determinism, CUDA against CPU on odd shapes.
#include "ops/group_norm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/gradcheck.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "test_utils.h"

#ifdef TG_WITH_CUDA
namespace tg::cuda {
cudaStream_t stream();  // core/cuda_utils.h (not included: it needs the cuDNN headers)
}
#endif

using namespace tg;
using namespace tg::testing;

namespace {

struct GnRef {
  std::vector<double> y, mean, rstd, dx, dgamma, dbeta;
};

// Naive loops in double, straight from the SPEC formulas. gamma/beta may be undefined; dy may be
// undefined (forward only).
GnRef gn_reference(const Tensor& x, int64_t G, const Tensor& gamma, const Tensor& beta,
                   const Tensor& dy, double eps = 1e-5) {
  const int64_t N = x.size(0), C = x.size(1), HW = x.numel() / (N * C), D = C / G, M = D * HW;
  auto xv = x.to_vector<double>();
  std::vector<double> gv =
      gamma.defined() ? gamma.to_vector<double>() : std::vector<double>(C, 1.0);
  std::vector<double> bv = beta.defined() ? beta.to_vector<double>() : std::vector<double>(C, 0.0);
  std::vector<double> dyv = dy.defined() ? dy.to_vector<double>() : std::vector<double>();
  GnRef r;
  r.y.resize(xv.size());
  r.dx.resize(xv.size());
  r.dgamma.assign(C, 0.0);
  r.dbeta.assign(C, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t g = 0; g < G; ++g) {
      const int64_t base = (n * G + g) * M;
      double s = 0;
      for (int64_t i = 0; i < M; ++i) s += xv[base + i];
      const double mean = s / M;
      double q = 0;
      for (int64_t i = 0; i < M; ++i) q += (xv[base + i] - mean) * (xv[base + i] - mean);
      const double rstd = 1.0 / std::sqrt(q / M + eps);
      r.mean.push_back(mean);
      r.rstd.push_back(rstd);
      std::vector<double> xhat(M), gg(M);
      double mg = 0, mgx = 0;
      for (int64_t i = 0; i < M; ++i) {
        const int64_t c = g * D + i / HW;
        xhat[i] = (xv[base + i] - mean) * rstd;
        r.y[base + i] = xhat[i] * gv[c] + bv[c];
        if (dyv.empty()) continue;
        gg[i] = dyv[base + i] * gv[c];
        mg += gg[i] / M;
        mgx += gg[i] * xhat[i] / M;
        r.dgamma[c] += dyv[base + i] * xhat[i];
        r.dbeta[c] += dyv[base + i];
      }
      if (dyv.empty()) continue;
      for (int64_t i = 0; i < M; ++i) r.dx[base + i] = rstd * (gg[i] - mg - xhat[i] * mgx);
    }
  return r;
}

const DType kDTypes[] = {DType::Float32, DType::Float64};

struct Case {
  Shape x;
  int64_t G;
  bool weight, bias;
};

// Odd sizes: HxW not a multiple of 4, G = 1, G = C, 1x1 spatial, N = 1, 3-D input, no affine.
const Case kCases[] = {
    {{2, 6, 5, 7}, 3, true, true}, {{2, 6, 5, 7}, 1, true, true},   {{2, 6, 5, 7}, 6, true, true},
    {{3, 4, 1, 1}, 2, true, true}, {{1, 5, 3, 3}, 5, false, false}, {{1, 8, 7, 13}, 2, true, false},
    {{2, 4, 11}, 2, false, true},  {{1, 1, 1, 3}, 1, true, true},   {{4, 6, 2, 3}, 3, true, true},
    {{33, 8, 2, 3}, 4, true, true}};  // more (n, g) pairs than threads, a plane of 6

}  // namespace

// ---- forward ------------------------------------------------------------------------------------

TEST(GroupNorm, ForwardAndStatsMatchNaiveLoops) {
  for (DType dt : kDTypes) {
    for (const Case& cs : kCases) {
      const int64_t C = cs.x[1];
      Tensor x = randn_t(cs.x, 1, dt, Device::CPU, 0.5, 1.5);
      Tensor w = cs.weight ? randn_t({C}, 2, dt) : Tensor();
      Tensor b = cs.bias ? randn_t({C}, 3, dt) : Tensor();
      auto out = ops::group_norm_with_stats(x, cs.G, w, b);
      ASSERT_EQ(out.size(), 3u);
      ASSERT_EQ(out[0].shape(), cs.x);
      ASSERT_EQ(out[1].shape(), (Shape{cs.x[0], cs.G}));
      ASSERT_EQ(out[2].shape(), (Shape{cs.x[0], cs.G}));
      GnRef ref = gn_reference(x, cs.G, w, b, Tensor());
      const double tol = dt == DType::Float32 ? 2e-6 : 1e-12;
      const std::string what =
          std::string(dtype_name(dt)) + " " + shape_str(cs.x) + " G=" + std::to_string(cs.G);
      EXPECT_LE(max_abs_diff_vec(out[0].to_vector<double>(), ref.y), tol * (1 + max_abs(ref.y)))
          << what;
      EXPECT_LE(max_abs_diff_vec(out[1].to_vector<double>(), ref.mean), tol) << what;
      auto rs = out[2].to_vector<double>();
      for (size_t i = 0; i < rs.size(); ++i) EXPECT_NEAR(rs[i] / ref.rstd[i], 1.0, tol) << what;
      EXPECT_EQ(ops::group_norm(x, cs.G, w, b).to_vector<double>(), out[0].to_vector<double>());
    }
  }
}

TEST(GroupNorm, EpsAndConstantGroups) {
  // A constant group has variance 0: rstd = 1 / sqrt(eps), y = beta.
  Tensor x = Tensor::full({2, 4, 3, 3}, 2.5, DType::Float64);
  Tensor w = randn_t({4}, 5, DType::Float64);
  Tensor b = randn_t({4}, 6, DType::Float64);
  ops::GroupNormOptions opt;
  opt.eps = 0.25;
  auto out = ops::group_norm_with_stats(x, 2, w, b, opt);
  for (double r : out[2].to_vector<double>()) EXPECT_DOUBLE_EQ(r, 2.0);
  for (double m : out[1].to_vector<double>()) EXPECT_DOUBLE_EQ(m, 2.5);
  GnRef ref = gn_reference(x, 2, w, b, Tensor(), 0.25);
  EXPECT_LE(max_abs_diff_vec(out[0].to_vector<double>(), ref.y), 1e-15);
  // A different eps changes rstd as the formula says.
  Tensor xr = randn_t({2, 4, 3, 3}, 7, DType::Float64);
  opt.eps = 0.5;
  auto o2 = ops::group_norm_with_stats(xr, 2, w, b, opt);
  GnRef r2 = gn_reference(xr, 2, w, b, Tensor(), 0.5);
  EXPECT_LE(max_abs_diff_vec(o2[2].to_vector<double>(), r2.rstd), 1e-14);
  EXPECT_LE(max_abs_diff_vec(o2[0].to_vector<double>(), r2.y), 1e-13);
}

// ---- backward -----------------------------------------------------------------------------------

TEST(GroupNorm, BackwardMatchesNaiveLoops) {
  for (DType dt : kDTypes) {
    for (const Case& cs : kCases) {
      const int64_t C = cs.x[1];
      Tensor x = randn_t(cs.x, 11, dt, Device::CPU, -0.3, 2.0).set_requires_grad();
      Tensor w = cs.weight ? randn_t({C}, 12, dt).set_requires_grad() : Tensor();
      Tensor b = cs.bias ? randn_t({C}, 13, dt).set_requires_grad() : Tensor();
      Tensor dy = randn_t(cs.x, 14, dt);
      ops::group_norm(x, cs.G, w, b).backward(dy);
      GnRef ref = gn_reference(x, cs.G, w, b, dy);
      const double tol = dt == DType::Float32 ? 5e-6 : 1e-12;
      const std::string what =
          std::string(dtype_name(dt)) + " " + shape_str(cs.x) + " G=" + std::to_string(cs.G);
      ASSERT_TRUE(x.grad().defined()) << what;
      EXPECT_LE(max_abs_diff_vec(x.grad().to_vector<double>(), ref.dx), tol * (1 + max_abs(ref.dx)))
          << what;
      if (cs.weight) {
        ASSERT_TRUE(w.grad().defined()) << what;
        EXPECT_LE(max_abs_diff_vec(w.grad().to_vector<double>(), ref.dgamma),
                  tol * (1 + max_abs(ref.dgamma)))
            << what;
      }
      if (cs.bias) {
        ASSERT_TRUE(b.grad().defined()) << what;
        EXPECT_LE(max_abs_diff_vec(b.grad().to_vector<double>(), ref.dbeta),
                  tol * (1 + max_abs(ref.dbeta)))
            << what;
      }
    }
  }
}

TEST(GroupNorm, GradcheckAllInputs) {
  for (const Case& cs : kCases) {
    const int64_t C = cs.x[1];
    Tensor x = randn_t(cs.x, 21, DType::Float64, Device::CPU, 0.2, 1.3).set_requires_grad();
    Tensor w = cs.weight ? randn_t({C}, 22, DType::Float64).set_requires_grad() : Tensor();
    Tensor b = cs.bias ? randn_t({C}, 23, DType::Float64).set_requires_grad() : Tensor();
    const int64_t G = cs.G;
    auto r = gradcheck(
        [G](const std::vector<Tensor>& in) {
          return std::vector<Tensor>{ops::group_norm(in[0], G, in[1], in[2])};
        },
        {x, w, b});
    EXPECT_TRUE(r.passed) << shape_str(cs.x) << " G=" << G << "\n" << r.message;
    EXPECT_EQ(r.inputs.size(), size_t(1 + cs.weight + cs.bias));
  }
}

TEST(GroupNorm, GradcheckWithPlainLeavesAndOtherEps) {
  // weight only (no bias), x not requiring grad: weight's gradient alone.
  Tensor x = randn_t({2, 6, 3, 2}, 31, DType::Float64);
  Tensor w = randn_t({6}, 32, DType::Float64).set_requires_grad();
  ops::GroupNormOptions opt;
  opt.eps = 1e-3;
  auto r = gradcheck(
      [opt](const std::vector<Tensor>& in) {
        return std::vector<Tensor>{ops::group_norm(in[0], 3, in[1], in[2], opt)};
      },
      {x, w, Tensor()});
  EXPECT_TRUE(r.passed) << r.message;
  ASSERT_EQ(r.inputs.size(), 1u);
  EXPECT_EQ(r.inputs[0].input, 1u);
}

TEST(GroupNorm, ComputesOnlyTheGradientsThatAreNeeded) {
  Tensor x = randn_t({2, 4, 3, 5}, 41, DType::Float64);
  Tensor w = randn_t({4}, 42, DType::Float64);
  Tensor b = randn_t({4}, 43, DType::Float64);
  Tensor dy = randn_t({2, 4, 3, 5}, 44, DType::Float64);
  GnRef ref = gn_reference(x, 2, w, b, dy);
  for (int mask = 1; mask < 8; ++mask) {
    Tensor xx = x.clone(), ww = w.clone(), bb = b.clone();
    if (mask & 1) xx.set_requires_grad();
    if (mask & 2) ww.set_requires_grad();
    if (mask & 4) bb.set_requires_grad();
    ops::group_norm(xx, 2, ww, bb).backward(dy);
    EXPECT_EQ(xx.grad().defined(), bool(mask & 1)) << mask;
    EXPECT_EQ(ww.grad().defined(), bool(mask & 2)) << mask;
    EXPECT_EQ(bb.grad().defined(), bool(mask & 4)) << mask;
    if (mask & 1) EXPECT_LE(max_abs_diff_vec(xx.grad().to_vector<double>(), ref.dx), 1e-12);
    if (mask & 2) EXPECT_LE(max_abs_diff_vec(ww.grad().to_vector<double>(), ref.dgamma), 1e-12);
    if (mask & 4) EXPECT_LE(max_abs_diff_vec(bb.grad().to_vector<double>(), ref.dbeta), 1e-12);
  }
  auto out = ops::group_norm_with_stats(x, 2, w, b);
  auto g = ops::group_norm_backward(dy, x, out[1], out[2], w, 2, false, true, false);
  EXPECT_FALSE(g.dx.defined());
  EXPECT_TRUE(g.dweight.defined());
  EXPECT_FALSE(g.dbias.defined());
  EXPECT_LE(max_abs_diff_vec(g.dweight.to_vector<double>(), ref.dgamma), 1e-12);
}

TEST(GroupNorm, SavesXAndStatsNotTheOutput) {
  Tensor x0 = randn_t({2, 4, 3, 3}, 51, DType::Float64);
  Tensor w = randn_t({4}, 52, DType::Float64).set_requires_grad();
  Tensor b = randn_t({4}, 53, DType::Float64);
  Tensor dy = randn_t({2, 4, 3, 3}, 54, DType::Float64);
  GnRef ref = gn_reference(x0, 2, w, b, dy);
  {
    Tensor x = x0.clone();
    Tensor y = ops::group_norm(x, 2, w, b);
    y.fill_(-7.0);  // y is not saved
    y.backward(dy);
    EXPECT_LE(max_abs_diff_vec(w.grad().to_vector<double>(), ref.dgamma), 1e-12);
    w.set_grad(Tensor());
  }
  {
    Tensor x = x0.clone();
    Tensor y = ops::group_norm(x, 2, w, b);
    x.fill_(1.0);
    expect_error_contains([&] { y.backward(dy); }, {"group_norm", "modified in place"});
    autograd::clear_tape();
  }
  {
    Tensor x = x0.clone();
    auto out = ops::group_norm_with_stats(x, 2, w, b);
    out[2].fill_(1.0);  // rstd is saved
    expect_error_contains([&] { out[0].backward(dy); }, {"group_norm", "modified in place"});
    autograd::clear_tape();
  }
}

TEST(GroupNorm, BackwardIsDeterministic) {
  Tensor x = randn_t({3, 8, 37, 29}, 61, DType::Float32);
  Tensor w = randn_t({8}, 62, DType::Float32);
  Tensor dy = randn_t({3, 8, 37, 29}, 63, DType::Float32);
  auto out = ops::group_norm_with_stats(x, 4, w, Tensor());
  auto g1 = ops::group_norm_backward(dy, x, out[1], out[2], w, 4, true, true, true);
  auto g2 = ops::group_norm_backward(dy, x, out[1], out[2], w, 4, true, true, true);
  EXPECT_EQ(g1.dx.to_vector<float>(), g2.dx.to_vector<float>());
  EXPECT_EQ(g1.dweight.to_vector<float>(), g2.dweight.to_vector<float>());
  EXPECT_EQ(g1.dbias.to_vector<float>(), g2.dbias.to_vector<float>());
}

// ---- preallocated outputs (poisoned) ------------------------------------------------------------

TEST(GroupNorm, CpuLaunchersWriteEveryOutput) {
  const Shape xs{3, 6, 5, 3};
  Tensor x = randn_t(xs, 71, DType::Float64);
  Tensor w = randn_t({6}, 72, DType::Float64);
  Tensor b = randn_t({6}, 73, DType::Float64);
  Tensor dy = randn_t(xs, 74, DType::Float64);
  GnRef ref = gn_reference(x, 3, w, b, dy);
  ops::detail::GroupNormParams p;
  p.N = 3, p.C = 6, p.HxW = 15, p.G = 3, p.eps = 1e-5;
  Tensor y = Tensor::empty(xs, DType::Float64), dx = Tensor::empty(xs, DType::Float64);
  Tensor mean = Tensor::empty({3, 3}, DType::Float64), rstd = Tensor::empty({3, 3}, DType::Float64);
  Tensor dg = Tensor::empty({6}, DType::Float64), db = Tensor::empty({6}, DType::Float64);
  for (Tensor* t : {&y, &dx, &mean, &rstd, &dg, &db}) poison(*t);
  ops::detail::group_norm_forward_cpu<double>(p, x.data<double>(), w.data<double>(),
                                              b.data<double>(), y.data<double>(),
                                              mean.data<double>(), rstd.data<double>());
  ops::detail::group_norm_backward_cpu<double>(
      p, dy.data<double>(), x.data<double>(), mean.data<double>(), rstd.data<double>(),
      w.data<double>(), dx.data<double>(), dg.data<double>(), db.data<double>());
  EXPECT_LE(max_abs_diff_vec(y.to_vector<double>(), ref.y), 1e-13);
  EXPECT_LE(max_abs_diff_vec(mean.to_vector<double>(), ref.mean), 1e-14);
  EXPECT_LE(max_abs_diff_vec(rstd.to_vector<double>(), ref.rstd), 1e-13);
  EXPECT_LE(max_abs_diff_vec(dx.to_vector<double>(), ref.dx), 1e-12);
  EXPECT_LE(max_abs_diff_vec(dg.to_vector<double>(), ref.dgamma), 1e-12);
  EXPECT_LE(max_abs_diff_vec(db.to_vector<double>(), ref.dbeta), 1e-12);
}

// ---- bad inputs ---------------------------------------------------------------------------------

TEST(GroupNorm, BadInputsGiveClearErrors) {
  Tensor x = randn_t({2, 6, 4, 5}, 81, DType::Float32);
  Tensor w = randn_t({6}, 82, DType::Float32);
  Tensor b = randn_t({6}, 83, DType::Float32);
  expect_error_contains([&] { ops::group_norm(x, 4, w, b); },
                        {"group_norm", "num_groups", "divide", "C = 6", "num_groups = 4"});
  expect_error_contains([&] { ops::group_norm(x, 0, w, b); },
                        {"group_norm", "num_groups >= 1", "num_groups = 0"});
  expect_error_contains([&] { ops::group_norm(x, -2, w, b); }, {"group_norm", "num_groups = -2"});
  expect_error_contains([&] { ops::group_norm(x, 3, randn_t({5}, 1, DType::Float32), b); },
                        {"group_norm", "weight", "(6)", "[5]"});
  expect_error_contains(
      [&] {
        ops::group_norm(x, 3, w, randn_t({6, 1, 1}, 1, DType::Float32));
      },
      {"group_norm", "bias", "(6)", "[6, 1, 1]"});
  expect_error_contains([&] { ops::group_norm(x, 3, w.to(DType::Float64), b); },
                        {"group_norm", "weight", "float32", "float64"});
  expect_error_contains([&] { ops::group_norm(x.to(DType::Float64), 3, w, b); },
                        {"group_norm", "float64", "float32"});
  expect_error_contains([&] { ops::group_norm(randn_t({6}, 1, DType::Float32), 3, w, b); },
                        {"group_norm", "(N, C, *)", "[6]"});
  expect_error_contains(
      [&] {
        ops::group_norm(Tensor::empty({0, 6, 2, 2}), 3, w, b);
      },
      {"group_norm", "non-empty", "[0, 6, 2, 2]"});
  expect_error_contains([&] { ops::group_norm(Tensor(), 3, w, b); }, {"group_norm", "undefined"});
  ops::GroupNormOptions opt;
  opt.eps = -1e-5;
  expect_error_contains([&] { ops::group_norm(x, 3, w, b, opt); }, {"group_norm", "eps"});
  auto out = ops::group_norm_with_stats(x, 3, w, b);
  expect_error_contains(
      [&] {
        ops::group_norm_backward(randn_t({2, 6, 4, 4}, 1, DType::Float32), x, out[1], out[2], w, 3,
                                 true, true, true);
      },
      {"group_norm", "dy", "[2, 6, 4, 5]", "[2, 6, 4, 4]"});
  expect_error_contains(
      [&] { ops::group_norm_backward(x, x, out[1], out[2], w, 2, true, true, true); },
      {"group_norm", "mean", "[2, 2]", "[2, 3]"});
}

TEST(GroupNorm, DeviceMismatchGivesClearError) {
  TG_SKIP_WITHOUT_GPU();
  Tensor x = randn_t({2, 6, 4, 5}, 81, DType::Float32, Device::CUDA);
  Tensor w = randn_t({6}, 82, DType::Float32);
  expect_error_contains([&] { ops::group_norm(x, 3, w, Tensor()); },
                        {"group_norm", "weight", "cuda", "cpu"});
}

// ---- CUDA against CPU ---------------------------------------------------------------------------

namespace {

void compare_cuda_cpu(const Case& cs, DType dt, uint64_t seed) {
  const int64_t C = cs.x[1];
  Tensor x = randn_t(cs.x, seed, dt, Device::CPU, 0.7, 1.9);
  Tensor w = cs.weight ? randn_t({C}, seed + 1, dt) : Tensor();
  Tensor b = cs.bias ? randn_t({C}, seed + 2, dt) : Tensor();
  Tensor dy = randn_t(cs.x, seed + 3, dt);
  auto oc = ops::group_norm_with_stats(x, cs.G, w, b);
  auto og = ops::group_norm_with_stats(x.cuda(), cs.G, w.defined() ? w.cuda() : w,
                                       b.defined() ? b.cuda() : b);
  ASSERT_TRUE(og[0].is_cuda());
  const std::string what =
      std::string(dtype_name(dt)) + " " + shape_str(cs.x) + " G=" + std::to_string(cs.G);
  const double tol = dt == DType::Float32 ? 1e-5 : 1e-12;
  EXPECT_LE(scaled_err(og[0], oc[0]), tol) << what;
  EXPECT_LE(scaled_err(og[1], oc[1]), tol) << what;
  EXPECT_LE(rel_l2(og[2], oc[2]), tol) << what;
  auto gc = ops::group_norm_backward(dy, x, oc[1], oc[2], w, cs.G, true, true, true);
  auto gg = ops::group_norm_backward(dy.cuda(), x.cuda(), oc[1].cuda(), oc[2].cuda(),
                                     w.defined() ? w.cuda() : w, cs.G, true, true, true);
  const double gtol = dt == DType::Float32 ? 2e-5 : 1e-11;
  EXPECT_LE(scaled_err(gg.dx, gc.dx), gtol) << what;
  EXPECT_LE(scaled_err(gg.dweight, gc.dweight), gtol) << what;
  EXPECT_LE(scaled_err(gg.dbias, gc.dbias), gtol) << what;
  // Parameter gradients alone give the same bits; dx alone too.
  auto gp = ops::group_norm_backward(dy.cuda(), x.cuda(), oc[1].cuda(), oc[2].cuda(),
                                     w.defined() ? w.cuda() : w, cs.G, false, true, true);
  EXPECT_FALSE(gp.dx.defined());
  EXPECT_EQ(gp.dweight.to_vector<double>(), gg.dweight.to_vector<double>()) << what;
  auto gx = ops::group_norm_backward(dy.cuda(), x.cuda(), oc[1].cuda(), oc[2].cuda(),
                                     w.defined() ? w.cuda() : w, cs.G, true, false, false);
  EXPECT_EQ(gx.dx.to_vector<double>(), gg.dx.to_vector<double>()) << what;
}

}  // namespace

TEST(GroupNormCuda, MatchesCpuOnOddShapes) {
  TG_SKIP_WITHOUT_GPU();
  for (DType dt : kDTypes) {
    uint64_t seed = 100;
    for (const Case& cs : kCases) compare_cuda_cpu(cs, dt, seed += 10);
    // Groups and planes larger than one chunk (8192), odd everywhere.
    const Case big[] = {{{2, 6, 61, 67}, 2, true, true},   // M = 12261, HxW = 4087
                        {{1, 2, 97, 101}, 1, true, true},  // HxW = 9797
                        {{3, 10, 45, 47}, 5, false, true},
                        {{1, 3, 129, 131}, 3, true, false}};
    for (const Case& cs : big) compare_cuda_cpu(cs, dt, seed += 10);
  }
}

TEST(GroupNormCuda, DeterministicAndWritesEveryPoisonedOutput) {
  TG_SKIP_WITHOUT_GPU();
  const Shape xs{3, 6, 45, 211};  // M = 28485: 4 chunks per group, HxW = 9495: 2 per plane
  for (DType dt : kDTypes) {
    Tensor x = randn_t(xs, 201, dt, Device::CUDA, 3.0, 0.5);
    Tensor w = randn_t({6}, 202, dt, Device::CUDA);
    Tensor b = randn_t({6}, 203, dt, Device::CUDA);
    Tensor dy = randn_t(xs, 204, dt, Device::CUDA);
    ops::detail::GroupNormParams p;
    p.N = 3, p.C = 6, p.HxW = 45 * 211, p.G = 2, p.eps = 1e-5;
    Tensor y = Tensor::empty(xs, dt, Device::CUDA), dx = Tensor::empty(xs, dt, Device::CUDA);
    Tensor mean = Tensor::empty({3, 2}, dt, Device::CUDA);
    Tensor rstd = Tensor::empty({3, 2}, dt, Device::CUDA);
    Tensor dg = Tensor::empty({6}, dt, Device::CUDA), db = Tensor::empty({6}, dt, Device::CUDA);
    Tensor wf =
        Tensor::empty({ops::detail::group_norm_forward_workspace_size(p)}, dt, Device::CUDA);
    Tensor wb =
        Tensor::empty({ops::detail::group_norm_backward_workspace_size(p)}, dt, Device::CUDA);
    for (Tensor* t : {&y, &dx, &mean, &rstd, &dg, &db, &wf, &wb}) poison(*t);
#ifdef TG_WITH_CUDA
    dispatch_dtype(dt, [&](auto tag) {
      using T = decltype(tag);
      ops::detail::group_norm_forward_cuda<T>(p, x.data<T>(), w.data<T>(), b.data<T>(), y.data<T>(),
                                              mean.data<T>(), rstd.data<T>(), wf.data<T>(),
                                              cuda::stream());
      ops::detail::group_norm_backward_cuda<T>(
          p, dy.data<T>(), x.data<T>(), mean.data<T>(), rstd.data<T>(), w.data<T>(), dx.data<T>(),
          dg.data<T>(), db.data<T>(), wb.data<T>(), cuda::stream());
    });
#endif
    cuda::synchronize();
    GnRef ref = gn_reference(x, 2, w, b, dy);
    const double tol = dt == DType::Float32 ? 1e-5 : 1e-12;
    auto rel = [](const Tensor& a, const std::vector<double>& r) {
      Tensor t = Tensor::from_vector<double>(r, {int64_t(r.size())});
      return rel_l2(a.cpu().to(DType::Float64).view({int64_t(r.size())}), t);
    };
    EXPECT_LE(rel(y, ref.y), tol) << dtype_name(dt);
    EXPECT_LE(rel(mean, ref.mean), tol) << dtype_name(dt);
    EXPECT_LE(rel(rstd, ref.rstd), tol) << dtype_name(dt);
    EXPECT_LE(rel(dx, ref.dx), 2 * tol) << dtype_name(dt);
    EXPECT_LE(rel(dg, ref.dgamma), 2 * tol) << dtype_name(dt);
    EXPECT_LE(rel(db, ref.dbeta), 2 * tol) << dtype_name(dt);
    // Same inputs, same bits.
    auto o1 = ops::group_norm_with_stats(x, 2, w, b);
    auto o2 = ops::group_norm_with_stats(x, 2, w, b);
    EXPECT_EQ(o1[0].to_vector<double>(), o2[0].to_vector<double>());
    EXPECT_EQ(o1[2].to_vector<double>(), rstd.to_vector<double>());
    auto g1 = ops::group_norm_backward(dy, x, o1[1], o1[2], w, 2, true, true, true);
    auto g2 = ops::group_norm_backward(dy, x, o1[1], o1[2], w, 2, true, true, true);
    EXPECT_EQ(g1.dx.to_vector<double>(), g2.dx.to_vector<double>());
    EXPECT_EQ(g1.dweight.to_vector<double>(), g2.dweight.to_vector<double>());
    EXPECT_EQ(g1.dbias.to_vector<double>(), g2.dbias.to_vector<double>());
  }
}

TEST(GroupNormCuda, GradcheckFloat64) {
  TG_SKIP_WITHOUT_GPU();
  for (const Case& cs : {Case{{2, 6, 3, 5}, 3, true, true}, Case{{1, 4, 1, 1}, 1, true, true}}) {
    const int64_t C = cs.x[1];
    Tensor x = randn_t(cs.x, 211, DType::Float64, Device::CUDA).set_requires_grad();
    Tensor w = randn_t({C}, 212, DType::Float64, Device::CUDA).set_requires_grad();
    Tensor b = randn_t({C}, 213, DType::Float64, Device::CUDA).set_requires_grad();
    const int64_t G = cs.G;
    auto r = gradcheck(
        [G](const std::vector<Tensor>& in) {
          return std::vector<Tensor>{ops::group_norm(in[0], G, in[1], in[2])};
        },
        {x, w, b});
    EXPECT_TRUE(r.passed) << shape_str(cs.x) << "\n" << r.message;
  }
}
