// Tests of ops/mse_loss.h: forward against a naive loop and against the composition
// mean(square(y - t)), float64 gradient checks, bad inputs, and CUDA against the CPU.
#include "ops/mse_loss.h"

#include <cmath>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/gradcheck.h"
#include "ops/elementwise.h"
#include "test_utils.h"
#ifdef TG_WITH_CUDA
#include "core/cuda_utils.h"
#endif

namespace tg {
namespace {

using testing::error_of;

const DType kDTypes[] = {DType::Float32, DType::Float64};

double naive_mse(const Tensor& y, const Tensor& t) {
  const auto yv = y.to_vector<double>();
  const auto tv = t.to_vector<double>();
  double acc = 0.0;
  for (size_t i = 0; i < yv.size(); ++i) acc += (yv[i] - tv[i]) * (yv[i] - tv[i]);
  return acc / double(yv.size());
}

TEST(MseLossForward, MatchesNaiveLoop) {
  uint64_t seed = 1;
  for (DType dt : kDTypes)
    for (const Shape& shape : {Shape{2, 3, 5, 7}, Shape{1}, Shape{}, Shape{4099}}) {
      Tensor y = Tensor::randn(shape, seed++, dt);
      Tensor t = Tensor::randn(shape, seed++, dt);
      Tensor loss = ops::mse_loss(y, t);
      EXPECT_EQ(loss.shape(), Shape{});
      EXPECT_EQ(loss.dtype(), dt);
      const double ref = naive_mse(y, t);
      EXPECT_NEAR(loss.item(), ref, (dt == DType::Float32 ? 1e-6 : 1e-14) * ref)
          << shape_str(shape) << " " << dtype_name(dt);
    }
}

TEST(MseLossForward, EqualsComposition) {
  Tensor y = Tensor::randn({3, 4, 5, 6}, 10, DType::Float64);
  Tensor t = Tensor::randn({3, 4, 5, 6}, 11, DType::Float64);
  EXPECT_NEAR(ops::mse_loss(y, t).item(), ops::mean(ops::square(ops::sub(y, t))).item(), 1e-15);
  EXPECT_EQ(ops::mse_loss(y, y).item(), 0.0);
}

TEST(MseLossForward, CpuKernelsWriteEveryOutputElement) {
  Tensor y = Tensor::randn({5, 7}, 12, DType::Float64);
  Tensor t = Tensor::randn({5, 7}, 13, DType::Float64);
  Tensor g = Tensor::randn({}, 14, DType::Float64);
  Tensor loss = Tensor::empty({}, DType::Float64);
  testing::poison(loss);
  ops::detail::mse_loss_forward_cpu<double>(y.data<double>(), t.data<double>(), loss.data<double>(),
                                            35);
  EXPECT_NEAR(loss.item(), naive_mse(y, t), 1e-15);

  Tensor dy = Tensor::empty({5, 7}, DType::Float64);
  Tensor dt = Tensor::empty({5, 7}, DType::Float64);
  testing::poison(dy);
  testing::poison(dt);
  ops::detail::mse_loss_backward_cpu<double>(y.data<double>(), t.data<double>(), g.data<double>(),
                                             dy.data<double>(), dt.data<double>(), 35);
  const auto yv = y.to_vector<double>(), tv = t.to_vector<double>();
  const auto dyv = dy.to_vector<double>(), dtv = dt.to_vector<double>();
  for (size_t i = 0; i < yv.size(); ++i) {
    const double ref = 2.0 * (yv[i] - tv[i]) / 35.0 * g.item();
    EXPECT_NEAR(dyv[i], ref, 1e-15 * (1 + std::fabs(ref))) << i;
    EXPECT_EQ(dtv[i], -dyv[i]) << i;
  }
}

TEST(MseLossGrad, Gradcheck) {
  auto f = [](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{ops::mse_loss(in[0], in[1])};
  };
  for (int mask = 1; mask < 4; ++mask)
    for (const Shape& shape : {Shape{2, 3, 4, 5}, Shape{}}) {
      Tensor y = Tensor::randn(shape, 20, DType::Float64);
      Tensor t = Tensor::randn(shape, 21, DType::Float64);
      if (mask & 1) y.set_requires_grad();
      if (mask & 2) t.set_requires_grad();
      auto r = gradcheck(f, {y, t});
      EXPECT_TRUE(r.passed) << "mask " << mask << " " << shape_str(shape) << "\n" << r.message;
    }
}

TEST(MseLossGrad, SameTensorAsInputAndTarget) {
  Tensor x = Tensor::randn({3, 4}, 22, DType::Float64);
  x.set_requires_grad();
  ops::mse_loss(x, x).backward();
  ASSERT_TRUE(x.grad().defined());
  for (double v : x.grad().to_vector<double>()) EXPECT_EQ(v, 0.0);
}

TEST(MseLossGrad, GradientsEqualTheComposition) {
  Tensor y0 = Tensor::randn({2, 3, 5, 5}, 30, DType::Float64);
  Tensor t0 = Tensor::randn({2, 3, 5, 5}, 31, DType::Float64);
  Tensor y1 = y0.clone(), t1 = t0.clone(), y2 = y0.clone(), t2 = t0.clone();
  for (Tensor* p : {&y1, &t1, &y2, &t2}) p->set_requires_grad();
  ops::mse_loss(y1, t1).backward();
  ops::mean(ops::square(y2 - t2)).backward();
  EXPECT_LE(testing::max_abs_diff(y1.grad(), y2.grad()), 1e-15);
  EXPECT_LE(testing::max_abs_diff(t1.grad(), t2.grad()), 1e-15);
}

TEST(MseLossGrad, OnlyTheTargetRequiresGrad) {
  Tensor y = Tensor::randn({4, 5}, 40, DType::Float64);
  Tensor t = Tensor::randn({4, 5}, 41, DType::Float64);
  t.set_requires_grad();
  ops::mse_loss(y, t).backward();
  EXPECT_FALSE(y.grad().defined());
  ASSERT_TRUE(t.grad().defined());
  const auto yv = y.to_vector<double>(), tv = t.to_vector<double>();
  const auto dt = t.grad().to_vector<double>();
  for (size_t i = 0; i < yv.size(); ++i) EXPECT_NEAR(dt[i], -2.0 * (yv[i] - tv[i]) / 20.0, 1e-15);
}

TEST(MseLossErrors, BadInputs) {
  Tensor y = Tensor::randn({2, 3}, 1);
  std::string m = error_of([&] { ops::mse_loss(y, Tensor::randn({3, 2}, 2)); });
  EXPECT_CONTAINS(m, "mse_loss");
  EXPECT_CONTAINS(m, "same shape");
  EXPECT_CONTAINS(m, "[2, 3]");
  EXPECT_CONTAINS(m, "[3, 2]");
  m = error_of([&] { ops::mse_loss(y, Tensor::randn({2, 3}, 2, DType::Float64)); });
  EXPECT_CONTAINS(m, "mse_loss: expected target of the same dtype");
  EXPECT_CONTAINS(m, "float32");
  EXPECT_CONTAINS(m, "float64");
  m = error_of([&] { ops::mse_loss(Tensor::empty({0, 3}), Tensor::empty({0, 3})); });
  EXPECT_CONTAINS(m, "mse_loss: expected a non-empty input");
  EXPECT_CONTAINS(m, "[0, 3]");
  m = error_of([&] { ops::mse_loss(y, Tensor()); });
  EXPECT_CONTAINS(m, "mse_loss: expected a defined tensor as target");
}

TEST(MseLossErrors, DeviceMismatch) {
  TG_SKIP_WITHOUT_GPU();
  Tensor y = Tensor::randn({2, 3}, 1);
  const std::string m = error_of([&] {
    ops::mse_loss(y, Tensor::randn({2, 3}, 2, DType::Float32, Device::CUDA));
  });
  EXPECT_CONTAINS(m, "mse_loss: expected target on the same device");
  EXPECT_CONTAINS(m, "cpu");
  EXPECT_CONTAINS(m, "cuda");
}

TEST(MseLossCuda, MatchesCpuOnOddShapes) {
  TG_SKIP_WITHOUT_GPU();
  uint64_t seed = 100;
  for (DType dt : kDTypes)
    for (const Shape& shape :
         {Shape{3, 5, 7, 9}, Shape{1}, Shape{}, Shape{4097}, Shape{2, 3, 333, 257}}) {
      // float64: the CPU (sequential) and CUDA (tree) sums round differently.
      const double tol = dt == DType::Float32 ? 1e-6 : 1e-11;
      Tensor y0 = Tensor::randn(shape, seed++, dt);
      Tensor t0 = Tensor::randn(shape, seed++, dt);
      Tensor g = Tensor::randn({}, seed++, dt);
      Tensor yc = y0.clone(), tc = t0.clone(), yd = y0.cuda(), td = t0.cuda();
      for (Tensor* p : {&yc, &tc, &yd, &td}) p->set_requires_grad();
      Tensor lc = ops::mse_loss(yc, tc);
      Tensor ld = ops::mse_loss(yd, td);
      EXPECT_TRUE(ld.is_cuda());
      const std::string what = shape_str(shape) + " " + dtype_name(dt);
      EXPECT_LE(testing::rel_l2(ld, lc), tol) << what;
      lc.backward(g);
      ld.backward(g.cuda());
      EXPECT_LE(testing::rel_l2(yd.grad(), yc.grad()), tol) << what;
      EXPECT_LE(testing::rel_l2(td.grad(), tc.grad()), tol) << what;
    }
}

TEST(MseLossCuda, Deterministic) {
  TG_SKIP_WITHOUT_GPU();
  for (DType dt : kDTypes) {
    Tensor y = Tensor::randn({3, 7, 211, 307}, 200, dt, Device::CUDA);
    Tensor t = Tensor::randn({3, 7, 211, 307}, 201, dt, Device::CUDA);
    const double a = ops::mse_loss(y, t).item();
    const double b = ops::mse_loss(y, t).item();
    EXPECT_EQ(a, b) << dtype_name(dt);
  }
}

#ifdef TG_WITH_CUDA
TEST(MseLossCuda, KernelsWriteEveryOutputElement) {
  TG_SKIP_WITHOUT_GPU();
  for (DType dtype : kDTypes) {
    dispatch_dtype(dtype, [&](auto tag) {
      using T = decltype(tag);
      const int64_t n = 3 * 1001;
      Tensor y = Tensor::randn({3, 1001}, 300, dtype).cuda();
      Tensor t = Tensor::randn({3, 1001}, 301, dtype).cuda();
      Tensor g = Tensor::randn({}, 302, dtype).cuda();
      Tensor loss = Tensor::empty({}, dtype, Device::CUDA);
      Tensor partials =
          Tensor::empty({ops::detail::mse_loss_blocks(n)}, DType::Float64, Device::CUDA);
      testing::poison(loss);
      ops::detail::mse_loss_forward_cuda<T>(y.data<T>(), t.data<T>(), loss.data<T>(), n,
                                            partials.data<double>(), cuda::stream());
      EXPECT_NEAR(loss.item(), naive_mse(y, t), 1e-6 * naive_mse(y, t));

      Tensor dy = Tensor::empty({3, 1001}, dtype, Device::CUDA);
      Tensor dt = Tensor::empty({3, 1001}, dtype, Device::CUDA);
      testing::poison(dy);
      testing::poison(dt);
      ops::detail::mse_loss_backward_cuda<T>(y.data<T>(), t.data<T>(), g.data<T>(), dy.data<T>(),
                                             dt.data<T>(), n, cuda::stream());
      Tensor dy_ref = Tensor::empty({3, 1001}, dtype);
      Tensor yh = y.cpu(), th = t.cpu(), gh = g.cpu();
      ops::detail::mse_loss_backward_cpu<T>(yh.data<T>(), th.data<T>(), gh.data<T>(),
                                            dy_ref.data<T>(), nullptr, n);
      EXPECT_LE(testing::rel_l2(dy, dy_ref), 1e-6);
      EXPECT_LE(testing::rel_l2(ops::mul(dt, -1.0), dy_ref), 1e-6);
    });
  }
}
#endif

}  // namespace
}  // namespace tg
