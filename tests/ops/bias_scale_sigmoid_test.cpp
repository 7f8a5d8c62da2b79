// Tests of ops::bias_scale_sigmoid: forward and backward against naive loops, float64 gradchecks,
// edge cases, poisoned outputs, bad inputs, CUDA against CPU; and a stability test of group_norm on
// a large group of offset data (the output of bias_scale_sigmoid feeds GroupNorm in the model).
#include "ops/bias_scale_sigmoid.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/gradcheck.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "ops/group_norm.h"
#include "test_utils.h"

#ifdef TG_WITH_CUDA
namespace tg::cuda {
cudaStream_t stream();  // core/cuda_utils.h (not included: it needs the cuDNN headers)
}
#endif

using namespace tg;
using namespace tg::testing;

namespace {

struct BssRef {
  std::vector<double> s, dz, dbias, dscale;
};

// Naive loops in double, straight from the SPEC formulas (dbias = sum of dz).
BssRef bss_reference(const Tensor& z, const Tensor& bias, const Tensor& scale, const Tensor& ds) {
  const int64_t N = z.size(0), C = z.size(1), HW = z.size(2) * z.size(3);
  auto zv = z.to_vector<double>();
  auto bv = bias.to_vector<double>();
  auto kv = scale.to_vector<double>();
  std::vector<double> dsv = ds.defined() ? ds.to_vector<double>() : std::vector<double>();
  BssRef r;
  r.s.resize(zv.size());
  r.dz.resize(zv.size());
  r.dbias.assign(C, 0.0);
  r.dscale.assign(C, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < HW; ++i) {
        const int64_t k = (n * C + c) * HW + i;
        const double u = (zv[k] + bv[c]) * kv[c];
        const double s = 1.0 / (1.0 + std::exp(-u));
        r.s[k] = s;
        if (dsv.empty()) continue;
        const double du = dsv[k] * s * (1.0 - s);
        r.dz[k] = du * kv[c];
        r.dbias[c] += r.dz[k];
        r.dscale[c] += du * (zv[k] + bv[c]);
      }
  return r;
}

const DType kDTypes[] = {DType::Float32, DType::Float64};

}  // namespace

// ---- forward ------------------------------------------------------------------------------------

TEST(BiasScaleSigmoid, ForwardMatchesNaiveLoops) {
  struct Case {
    Shape z;
    bool flat_params;
  };
  const Case cases[] = {{{2, 3, 5, 7}, false},
                        {{2, 3, 5, 7}, true},
                        {{1, 1, 1, 1}, false},
                        {{3, 4, 1, 1}, true},
                        {{1, 5, 3, 11}, false}};
  for (DType dt : kDTypes) {
    for (const Case& cs : cases) {
      const int64_t C = cs.z[1];
      const Shape ps = cs.flat_params ? Shape{C} : Shape{C, 1, 1};
      Tensor z = randn_t(cs.z, 1, dt, Device::CPU, 0.3, 2.0);
      Tensor b = randn_t(ps, 2, dt);
      Tensor k = randn_t(ps, 3, dt);
      Tensor s = ops::bias_scale_sigmoid(z, b, k);
      ASSERT_EQ(s.shape(), cs.z);
      ASSERT_EQ(s.dtype(), dt);
      BssRef ref = bss_reference(z, b, k, Tensor());
      const double tol = dt == DType::Float32 ? 2e-7 : 1e-15;
      EXPECT_LE(max_abs_diff_vec(s.to_vector<double>(), ref.s), tol)
          << dtype_name(dt) << " " << shape_str(cs.z);
    }
  }
}

TEST(BiasScaleSigmoid, ExtremeArgumentsSaturateWithoutNaN) {
  for (DType dt : kDTypes) {
    // u = (z + b) * k reaches +-1e4: s is exactly 0 or 1 and every gradient is finite.
    Tensor z = Tensor::from_vector<double>({-1000, -50, -1, 1, 50, 1000}, {1, 2, 1, 3}).to(dt);
    Tensor b = Tensor::from_vector<double>({0.5, -0.5}, {2, 1, 1}).to(dt);
    Tensor k = Tensor::from_vector<double>({10, -10}, {2, 1, 1}).to(dt);
    Tensor s = ops::bias_scale_sigmoid(z, b, k);
    auto sv = s.to_vector<double>();
    BssRef ref = bss_reference(z, b, k, Tensor());
    for (size_t i = 0; i < sv.size(); ++i) {
      EXPECT_TRUE(std::isfinite(sv[i]));
      EXPECT_NEAR(sv[i], ref.s[i], 1e-7);
    }
    Tensor ds = Tensor::from_vector<double>({1.0, -2.0, 0.5, 3.0, -1.0, 2.0}, z.shape()).to(dt);
    auto g = ops::bias_scale_sigmoid_backward(ds, z, b, k, true, true, true);
    BssRef rg = bss_reference(z, b, k, ds);
    EXPECT_LE(max_abs_diff_vec(g.dz.to_vector<double>(), rg.dz), 1e-6) << dtype_name(dt);
    EXPECT_LE(max_abs_diff_vec(g.dbias.to_vector<double>(), rg.dbias), 1e-6) << dtype_name(dt);
    // dscale sums du * (z + b), with z + b up to 1e3: 1e-6 relative to that size
    EXPECT_LE(max_abs_diff_vec(g.dscale.to_vector<double>(), rg.dscale), 1e-3) << dtype_name(dt);
  }
}

// ---- backward -----------------------------------------------------------------------------------

TEST(BiasScaleSigmoid, BackwardMatchesNaiveLoops) {
  for (DType dt : kDTypes) {
    for (const Shape& zs : {Shape{2, 3, 5, 7}, Shape{3, 2, 1, 1}, Shape{1, 4, 9, 13},
                            Shape{37, 3, 3, 5}, Shape{1, 1, 1, 1}}) {  // N > threads; one element
      const int64_t C = zs[1];
      Tensor z = randn_t(zs, 11, dt).set_requires_grad();
      Tensor b = randn_t({C, 1, 1}, 12, dt).set_requires_grad();
      Tensor k = randn_t({C, 1, 1}, 13, dt).set_requires_grad();
      Tensor ds = randn_t(zs, 14, dt);
      Tensor s = ops::bias_scale_sigmoid(z, b, k);
      s.backward(ds);
      BssRef ref = bss_reference(z, b, k, ds);
      const double tol = dt == DType::Float32 ? 1e-6 : 1e-13;
      ASSERT_TRUE(z.grad().defined() && b.grad().defined() && k.grad().defined());
      EXPECT_EQ(b.grad().shape(), (Shape{C, 1, 1}));
      EXPECT_LE(max_abs_diff_vec(z.grad().to_vector<double>(), ref.dz),
                tol * (1 + max_abs(ref.dz)));
      EXPECT_LE(max_abs_diff_vec(b.grad().to_vector<double>(), ref.dbias),
                tol * (1 + max_abs(ref.dbias)) * 4);
      EXPECT_LE(max_abs_diff_vec(k.grad().to_vector<double>(), ref.dscale),
                tol * (1 + max_abs(ref.dscale)) * 4);
    }
  }
}

TEST(BiasScaleSigmoid, GradcheckAllInputs) {
  struct Case {
    Shape z;
    bool flat_params;
  };
  const Case cases[] = {
      {{2, 3, 3, 5}, false}, {{1, 2, 4, 3}, true}, {{1, 1, 1, 1}, false}, {{3, 2, 1, 1}, true}};
  for (const Case& cs : cases) {
    const int64_t C = cs.z[1];
    const Shape ps = cs.flat_params ? Shape{C} : Shape{C, 1, 1};
    Tensor z = randn_t(cs.z, 21, DType::Float64).set_requires_grad();
    Tensor b = randn_t(ps, 22, DType::Float64).set_requires_grad();
    Tensor k = randn_t(ps, 23, DType::Float64).set_requires_grad();
    auto r = gradcheck(
        [](const std::vector<Tensor>& in) {
          return std::vector<Tensor>{ops::bias_scale_sigmoid(in[0], in[1], in[2])};
        },
        {z, b, k});
    EXPECT_TRUE(r.passed) << shape_str(cs.z) << "\n" << r.message;
    EXPECT_EQ(r.inputs.size(), 3u);
  }
}

TEST(BiasScaleSigmoid, ComputesOnlyTheGradientsThatAreNeeded) {
  Tensor z = randn_t({2, 3, 4, 5}, 31, DType::Float64);
  Tensor b = randn_t({3, 1, 1}, 32, DType::Float64);
  Tensor k = randn_t({3, 1, 1}, 33, DType::Float64);
  Tensor ds = randn_t({2, 3, 4, 5}, 34, DType::Float64);
  BssRef ref = bss_reference(z, b, k, ds);
  for (int mask = 1; mask < 8; ++mask) {
    Tensor zz = z.clone(), bb = b.clone(), kk = k.clone();
    if (mask & 1) zz.set_requires_grad();
    if (mask & 2) bb.set_requires_grad();
    if (mask & 4) kk.set_requires_grad();
    ops::bias_scale_sigmoid(zz, bb, kk).backward(ds);
    EXPECT_EQ(zz.grad().defined(), bool(mask & 1)) << mask;
    EXPECT_EQ(bb.grad().defined(), bool(mask & 2)) << mask;
    EXPECT_EQ(kk.grad().defined(), bool(mask & 4)) << mask;
    if (mask & 1) EXPECT_LE(max_abs_diff_vec(zz.grad().to_vector<double>(), ref.dz), 1e-13);
    if (mask & 2) EXPECT_LE(max_abs_diff_vec(bb.grad().to_vector<double>(), ref.dbias), 1e-12);
    if (mask & 4) EXPECT_LE(max_abs_diff_vec(kk.grad().to_vector<double>(), ref.dscale), 1e-12);
  }
  // Direct call: only the requested gradients are made.
  auto g = ops::bias_scale_sigmoid_backward(ds, z, b, k, false, true, false);
  EXPECT_FALSE(g.dz.defined());
  EXPECT_TRUE(g.dbias.defined());
  EXPECT_FALSE(g.dscale.defined());
}

TEST(BiasScaleSigmoid, NoTapeWithoutGradOrUnderNoGrad) {
  Tensor z = randn_t({1, 2, 3, 3}, 41, DType::Float32);
  Tensor b = randn_t({2, 1, 1}, 42, DType::Float32);
  Tensor k = randn_t({2, 1, 1}, 43, DType::Float32);
  const size_t before = autograd::tape_size();
  EXPECT_FALSE(ops::bias_scale_sigmoid(z, b, k).requires_grad());
  {
    autograd::NoGradGuard guard;
    b.set_requires_grad();
    EXPECT_FALSE(ops::bias_scale_sigmoid(z, b, k).requires_grad());
  }
  EXPECT_EQ(autograd::tape_size(), before);
}

TEST(BiasScaleSigmoid, SavesZNotTheOutput) {
  Tensor z0 = randn_t({2, 3, 4, 4}, 51, DType::Float64);
  Tensor b = randn_t({3, 1, 1}, 52, DType::Float64).set_requires_grad();
  Tensor k = randn_t({3, 1, 1}, 53, DType::Float64);
  Tensor ds = randn_t({2, 3, 4, 4}, 54, DType::Float64);
  BssRef ref = bss_reference(z0, b, k, ds);
  {
    // The output is not needed by the backward: overwriting it changes nothing.
    Tensor z = z0.clone();
    Tensor s = ops::bias_scale_sigmoid(z, b, k);
    s.fill_(123.0);
    s.backward(ds);
    EXPECT_LE(max_abs_diff_vec(b.grad().to_vector<double>(), ref.dbias), 1e-12);
    b.set_grad(Tensor());
  }
  {
    // z is saved: modifying it in place makes the backward refuse.
    Tensor z = z0.clone();
    Tensor s = ops::bias_scale_sigmoid(z, b, k);
    z.fill_(0.5);
    expect_error_contains([&] { s.backward(ds); }, {"bias_scale_sigmoid", "modified in place"});
    autograd::clear_tape();
  }
}

TEST(BiasScaleSigmoid, BackwardIsDeterministic) {
  Tensor z = randn_t({3, 5, 37, 41}, 61, DType::Float32);
  Tensor b = randn_t({5}, 62, DType::Float32);
  Tensor k = randn_t({5}, 63, DType::Float32);
  Tensor ds = randn_t({3, 5, 37, 41}, 64, DType::Float32);
  auto g1 = ops::bias_scale_sigmoid_backward(ds, z, b, k, true, true, true);
  auto g2 = ops::bias_scale_sigmoid_backward(ds, z, b, k, true, true, true);
  EXPECT_EQ(g1.dz.to_vector<float>(), g2.dz.to_vector<float>());
  EXPECT_EQ(g1.dbias.to_vector<float>(), g2.dbias.to_vector<float>());
  EXPECT_EQ(g1.dscale.to_vector<float>(), g2.dscale.to_vector<float>());
}

// ---- preallocated outputs (poisoned) ------------------------------------------------------------

TEST(BiasScaleSigmoid, CpuLaunchersWriteEveryOutput) {
  const Shape zs{3, 4, 5, 3};
  Tensor z = randn_t(zs, 71, DType::Float64);
  Tensor b = randn_t({4}, 72, DType::Float64);
  Tensor k = randn_t({4}, 73, DType::Float64);
  Tensor ds = randn_t(zs, 74, DType::Float64);
  BssRef ref = bss_reference(z, b, k, ds);
  ops::detail::BiasScaleSigmoidParams p{3, 4, 15};
  Tensor s = Tensor::empty(zs, DType::Float64), dz = Tensor::empty(zs, DType::Float64);
  Tensor db = Tensor::empty({4}, DType::Float64), dk = Tensor::empty({4}, DType::Float64);
  for (Tensor* t : {&s, &dz, &db, &dk}) poison(*t);
  ops::detail::bias_scale_sigmoid_forward_cpu<double>(p, z.data<double>(), b.data<double>(),
                                                      k.data<double>(), s.data<double>());
  ops::detail::bias_scale_sigmoid_backward_cpu<double>(
      p, ds.data<double>(), z.data<double>(), b.data<double>(), k.data<double>(), dz.data<double>(),
      db.data<double>(), dk.data<double>());
  EXPECT_LE(max_abs_diff_vec(s.to_vector<double>(), ref.s), 1e-15);
  EXPECT_LE(max_abs_diff_vec(dz.to_vector<double>(), ref.dz), 1e-14);
  EXPECT_LE(max_abs_diff_vec(db.to_vector<double>(), ref.dbias), 1e-13);
  EXPECT_LE(max_abs_diff_vec(dk.to_vector<double>(), ref.dscale), 1e-13);
  // Null outputs are skipped, the others still written.
  poison(dk);
  ops::detail::bias_scale_sigmoid_backward_cpu<double>(p, ds.data<double>(), z.data<double>(),
                                                       b.data<double>(), k.data<double>(), nullptr,
                                                       nullptr, dk.data<double>());
  EXPECT_LE(max_abs_diff_vec(dk.to_vector<double>(), ref.dscale), 1e-13);
}

// ---- bad inputs ---------------------------------------------------------------------------------

TEST(BiasScaleSigmoid, BadInputsGiveClearErrors) {
  Tensor z = randn_t({2, 3, 4, 5}, 81, DType::Float32);
  Tensor b = randn_t({3, 1, 1}, 82, DType::Float32);
  Tensor k = randn_t({3, 1, 1}, 83, DType::Float32);
  expect_error_contains(
      [&] {
        ops::bias_scale_sigmoid(randn_t({2, 3, 4}, 1, DType::Float32), b, k);
      },
      {"bias_scale_sigmoid", "(N, C, H, W)", "[2, 3, 4]"});
  expect_error_contains(
      [&] {
        ops::bias_scale_sigmoid(z, randn_t({4, 1, 1}, 1, DType::Float32), k);
      },
      {"bias_scale_sigmoid", "bias", "(3, 1, 1)", "[4, 1, 1]"});
  expect_error_contains(
      [&] {
        ops::bias_scale_sigmoid(z, b, randn_t({3, 1}, 1, DType::Float32));
      },
      {"bias_scale_sigmoid", "scale", "(3)", "[3, 1]"});
  expect_error_contains(
      [&] {
        ops::bias_scale_sigmoid(z, randn_t({1, 3, 1, 1}, 1, DType::Float32), k);
      },
      {"bias_scale_sigmoid", "bias", "[1, 3, 1, 1]"});
  expect_error_contains([&] { ops::bias_scale_sigmoid(z, b.to(DType::Float64), k); },
                        {"bias_scale_sigmoid", "bias", "float32", "float64"});
  expect_error_contains([&] { ops::bias_scale_sigmoid(z.to(DType::Float64), b, k); },
                        {"bias_scale_sigmoid", "float64", "float32"});
  expect_error_contains([&] { ops::bias_scale_sigmoid(z, b, Tensor()); },
                        {"bias_scale_sigmoid", "scale", "undefined"});
  expect_error_contains(
      [&] {
        ops::bias_scale_sigmoid(Tensor::empty({0, 3, 4, 5}), b, k);
      },
      {"bias_scale_sigmoid", "non-empty", "[0, 3, 4, 5]"});
  expect_error_contains(
      [&] {
        ops::bias_scale_sigmoid_backward(randn_t({2, 3, 4, 4}, 1, DType::Float32), z, b, k, true,
                                         true, true);
      },
      {"bias_scale_sigmoid", "ds", "[2, 3, 4, 5]", "[2, 3, 4, 4]"});
}

TEST(BiasScaleSigmoid, DeviceMismatchGivesClearError) {
  TG_SKIP_WITHOUT_GPU();
  Tensor z = randn_t({2, 3, 4, 5}, 81, DType::Float32, Device::CUDA);
  Tensor b = randn_t({3, 1, 1}, 82, DType::Float32);
  Tensor k = randn_t({3, 1, 1}, 83, DType::Float32, Device::CUDA);
  expect_error_contains([&] { ops::bias_scale_sigmoid(z, b, k); },
                        {"bias_scale_sigmoid", "bias", "cuda", "cpu"});
}

// ---- CUDA against CPU ---------------------------------------------------------------------------

TEST(BiasScaleSigmoidCuda, MatchesCpuOnOddShapes) {
  TG_SKIP_WITHOUT_GPU();
  // Sizes not multiples of 4 or of the block size; a plane larger than one backward chunk (8192).
  const Shape shapes[] = {{3, 5, 7, 9},    {1, 1, 1, 1},   {2, 3, 1, 1},
                          {1, 2, 97, 101}, {5, 7, 33, 31}, {1, 3, 64, 129}};
  for (DType dt : kDTypes) {
    for (const Shape& zs : shapes) {
      const int64_t C = zs[1];
      Tensor z = randn_t(zs, 91, dt, Device::CPU, 0.1, 2.0);
      Tensor b = randn_t({C, 1, 1}, 92, dt);
      Tensor k = randn_t({C, 1, 1}, 93, dt);
      Tensor ds = randn_t(zs, 94, dt);
      Tensor s_cpu = ops::bias_scale_sigmoid(z, b, k);
      Tensor s_gpu = ops::bias_scale_sigmoid(z.cuda(), b.cuda(), k.cuda());
      ASSERT_TRUE(s_gpu.is_cuda());
      const double tol = dt == DType::Float32 ? 2e-6 : 1e-14;
      EXPECT_LE(max_abs_diff(s_gpu, s_cpu), tol) << dtype_name(dt) << " " << shape_str(zs);
      auto gc = ops::bias_scale_sigmoid_backward(ds, z, b, k, true, true, true);
      auto gg = ops::bias_scale_sigmoid_backward(ds.cuda(), z.cuda(), b.cuda(), k.cuda(), true,
                                                 true, true);
      EXPECT_LE(scaled_err(gg.dz, gc.dz), tol) << dtype_name(dt) << " " << shape_str(zs);
      const double rtol = dt == DType::Float32 ? 1e-5 : 1e-12;
      EXPECT_LE(scaled_err(gg.dbias, gc.dbias), rtol) << dtype_name(dt) << " " << shape_str(zs);
      EXPECT_LE(scaled_err(gg.dscale, gc.dscale), rtol) << dtype_name(dt) << " " << shape_str(zs);
      // Only the parameter gradients, then only dz.
      auto gp = ops::bias_scale_sigmoid_backward(ds.cuda(), z.cuda(), b.cuda(), k.cuda(), false,
                                                 true, true);
      EXPECT_FALSE(gp.dz.defined());
      EXPECT_EQ(gp.dbias.to_vector<double>(), gg.dbias.to_vector<double>());
      auto gz = ops::bias_scale_sigmoid_backward(ds.cuda(), z.cuda(), b.cuda(), k.cuda(), true,
                                                 false, false);
      EXPECT_EQ(gz.dz.to_vector<double>(), gg.dz.to_vector<double>());
    }
  }
}

TEST(BiasScaleSigmoidCuda, DeterministicAndWritesEveryPoisonedOutput) {
  TG_SKIP_WITHOUT_GPU();
  const Shape zs{4, 6, 45, 211};  // HxW = 9495: two backward chunks per plane
  for (DType dt : kDTypes) {
    Tensor z = randn_t(zs, 101, dt, Device::CUDA);
    Tensor b = randn_t({6}, 102, dt, Device::CUDA);
    Tensor k = randn_t({6}, 103, dt, Device::CUDA);
    Tensor ds = randn_t(zs, 104, dt, Device::CUDA);
    ops::detail::BiasScaleSigmoidParams p{4, 6, 45 * 211};
    Tensor s = Tensor::empty(zs, dt, Device::CUDA), dz = Tensor::empty(zs, dt, Device::CUDA);
    Tensor db = Tensor::empty({6}, dt, Device::CUDA), dk = Tensor::empty({6}, dt, Device::CUDA);
    Tensor ws =
        Tensor::empty({ops::detail::bias_scale_sigmoid_workspace_size(p)}, dt, Device::CUDA);
    for (Tensor* t : {&s, &dz, &db, &dk, &ws}) poison(*t);
#ifdef TG_WITH_CUDA
    dispatch_dtype(dt, [&](auto tag) {
      using T = decltype(tag);
      ops::detail::bias_scale_sigmoid_forward_cuda<T>(p, z.data<T>(), b.data<T>(), k.data<T>(),
                                                      s.data<T>(), cuda::stream());
      ops::detail::bias_scale_sigmoid_backward_cuda<T>(p, ds.data<T>(), z.data<T>(), b.data<T>(),
                                                       k.data<T>(), dz.data<T>(), db.data<T>(),
                                                       dk.data<T>(), ws.data<T>(), cuda::stream());
    });
#endif
    cuda::synchronize();
    auto gc =
        ops::bias_scale_sigmoid_backward(ds.cpu(), z.cpu(), b.cpu(), k.cpu(), true, true, true);
    const double tol = dt == DType::Float32 ? 1e-5 : 1e-12;
    EXPECT_LE(rel_l2(s, ops::bias_scale_sigmoid(z.cpu(), b.cpu(), k.cpu())), tol);
    EXPECT_LE(rel_l2(dz, gc.dz), tol);
    EXPECT_LE(rel_l2(db, gc.dbias), tol);
    EXPECT_LE(rel_l2(dk, gc.dscale), tol);
    auto g1 = ops::bias_scale_sigmoid_backward(ds, z, b, k, true, true, true);
    auto g2 = ops::bias_scale_sigmoid_backward(ds, z, b, k, true, true, true);
    EXPECT_EQ(g1.dbias.to_vector<double>(), g2.dbias.to_vector<double>());
    EXPECT_EQ(g1.dscale.to_vector<double>(), g2.dscale.to_vector<double>());
    EXPECT_EQ(g1.dbias.to_vector<double>(), db.to_vector<double>());
  }
}

TEST(BiasScaleSigmoidCuda, GradcheckFloat64) {
  TG_SKIP_WITHOUT_GPU();
  Tensor z = randn_t({2, 3, 3, 5}, 111, DType::Float64, Device::CUDA).set_requires_grad();
  Tensor b = randn_t({3, 1, 1}, 112, DType::Float64, Device::CUDA).set_requires_grad();
  Tensor k = randn_t({3, 1, 1}, 113, DType::Float64, Device::CUDA).set_requires_grad();
  auto r = gradcheck(
      [](const std::vector<Tensor>& in) {
        return std::vector<Tensor>{ops::bias_scale_sigmoid(in[0], in[1], in[2])};
      },
      {z, b, k});
  EXPECT_TRUE(r.passed) << r.message;
}

// ---- GroupNorm on a large group of offset data --------------------------------------------------

namespace {

// Statistics and y of one (n, g) group in double, two-pass.
void group_stats_reference(const std::vector<double>& x, double eps, double& mean, double& rstd) {
  double s = 0;
  for (double v : x) s += v;
  mean = s / double(x.size());
  double q = 0;
  for (double v : x) q += (v - mean) * (v - mean);
  rstd = 1.0 / std::sqrt(q / double(x.size()) + eps);
}

void check_offset_group(Device device) {
  // 2 groups of 8 * 25000 = 200000 elements, values 1000 + noise(std 0.1): a one-pass
  // E[x^2] - E[x]^2 in float32 loses every digit of the variance (1e6 vs 1e-2).
  const int64_t N = 1, C = 16, H = 125, W = 200, G = 2;
  Tensor x32 = randn_t({N, C, H, W}, 121, DType::Float32, Device::CPU, 1000.0, 0.1);
  Tensor w = randn_t({C}, 122, DType::Float32, Device::CPU, 1.0, 0.2);
  Tensor b = randn_t({C}, 123, DType::Float32, Device::CPU, 0.0, 0.2);
  auto out = ops::group_norm_with_stats(x32.to(device), G, w.to(device), b.to(device));
  // float64 reference on the very same (float32) values
  auto out64 = ops::group_norm_with_stats(x32.to(DType::Float64), G, w.to(DType::Float64),
                                          b.to(DType::Float64));
  auto xv = x32.to_vector<double>();
  const int64_t M = (C / G) * H * W;
  for (int64_t g = 0; g < G; ++g) {
    std::vector<double> part(xv.begin() + g * M, xv.begin() + (g + 1) * M);
    double mean, rstd;
    group_stats_reference(part, 1e-5, mean, rstd);
    EXPECT_NEAR(out64[1].to_vector<double>()[g], mean, 1e-9);
    EXPECT_NEAR(out64[2].to_vector<double>()[g] / rstd, 1.0, 1e-12);
    // float32 statistics: as close as float32 can store them
    EXPECT_NEAR(out[1].to_vector<double>()[g], mean, 1e-4) << device_name(device);
    EXPECT_NEAR(out[2].to_vector<double>()[g] / rstd, 1.0, 1e-5) << device_name(device);
    EXPECT_NEAR(rstd, 10.0, 0.2);  // sanity: the noise std is 0.1
  }
  // y against the closed form (x - mean) * rstd * w_c + b_c with the float64 statistics of the loops
  std::vector<double> yref(xv.size());
  const auto wv = w.to_vector<double>(), bv = b.to_vector<double>();
  for (int64_t g = 0; g < G; ++g) {
    std::vector<double> part(xv.begin() + g * M, xv.begin() + (g + 1) * M);
    double mean, rstd;
    group_stats_reference(part, 1e-5, mean, rstd);
    for (int64_t i = g * M; i < (g + 1) * M; ++i) {
      const int64_t c = i / (H * W);
      yref[size_t(i)] = (xv[size_t(i)] - mean) * rstd * wv[size_t(c)] + bv[size_t(c)];
    }
  }
  EXPECT_LE(max_abs_diff_vec(out64[0].to_vector<double>(), yref), 1e-9);
  EXPECT_LE(max_abs_diff_vec(out[0].to_vector<double>(), yref), 1e-3) << device_name(device);
  EXPECT_LE(rel_l2(out[0], out64[0]), 1e-5) << device_name(device);
  for (double v : out[0].to_vector<double>()) ASSERT_TRUE(std::isfinite(v));
}

}  // namespace

TEST(GroupNormStability, LargeOffsetGroupFloat32CpuMatchesFloat64) {
  check_offset_group(Device::CPU);
}

TEST(GroupNormStability, LargeOffsetGroupFloat32CudaMatchesFloat64) {
  TG_SKIP_WITHOUT_GPU();
  check_offset_group(Device::CUDA);
}
