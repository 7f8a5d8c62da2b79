// Tests of ops::conv2d: forward and backward against naive loops, float64 gradcheck, the needs-grad
// mask, CUDA against the CPU (skipped without a GPU), the global switches and bad-input messages.
#include "ops/conv2d.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/gradcheck.h"
#include "test_utils.h"

namespace tg {
namespace {

using ops::Conv2dOptions;
using testing::expect_error_contains;

struct Case {
  int64_t N, Cin, H, W, Cout, kH, kW, stride, padding;
  bool bias;
};

std::string case_name(const Case& c) {
  std::ostringstream os;
  os << "N" << c.N << " Cin" << c.Cin << " " << c.H << "x" << c.W << " Cout" << c.Cout << " k"
     << c.kH << "x" << c.kW << " s" << c.stride << " p" << c.padding << (c.bias ? " bias" : "");
  return os.str();
}

int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t p) { return (in + 2 * p - k) / s + 1; }

// The naive 7-loop reference, in double on the host.
std::vector<double> reference_forward(const Case& c, const std::vector<double>& x,
                                      const std::vector<double>& w, const std::vector<double>& b) {
  const int64_t Ho = out_size(c.H, c.kH, c.stride, c.padding);
  const int64_t Wo = out_size(c.W, c.kW, c.stride, c.padding);
  std::vector<double> y(size_t(c.N * c.Cout * Ho * Wo));
  for (int64_t n = 0; n < c.N; ++n)
    for (int64_t co = 0; co < c.Cout; ++co)
      for (int64_t oh = 0; oh < Ho; ++oh)
        for (int64_t ow = 0; ow < Wo; ++ow) {
          double acc = c.bias ? b[size_t(co)] : 0.0;
          for (int64_t ci = 0; ci < c.Cin; ++ci)
            for (int64_t i = 0; i < c.kH; ++i)
              for (int64_t j = 0; j < c.kW; ++j) {
                const int64_t ih = oh * c.stride - c.padding + i;
                const int64_t iw = ow * c.stride - c.padding + j;
                if (ih < 0 || ih >= c.H || iw < 0 || iw >= c.W) continue;
                acc += w[size_t(((co * c.Cin + ci) * c.kH + i) * c.kW + j)] *
                       x[size_t(((n * c.Cin + ci) * c.H + ih) * c.W + iw)];
              }
          y[size_t(((n * c.Cout + co) * Ho + oh) * Wo + ow)] = acc;
        }
  return y;
}

// Naive dx, dw, db for a given dy, by scattering each output's gradient.
void reference_backward(const Case& c, const std::vector<double>& x, const std::vector<double>& w,
                        const std::vector<double>& dy, std::vector<double>& dx,
                        std::vector<double>& dw, std::vector<double>& db) {
  const int64_t Ho = out_size(c.H, c.kH, c.stride, c.padding);
  const int64_t Wo = out_size(c.W, c.kW, c.stride, c.padding);
  dx.assign(x.size(), 0.0);
  dw.assign(w.size(), 0.0);
  db.assign(size_t(c.Cout), 0.0);
  for (int64_t n = 0; n < c.N; ++n)
    for (int64_t co = 0; co < c.Cout; ++co)
      for (int64_t oh = 0; oh < Ho; ++oh)
        for (int64_t ow = 0; ow < Wo; ++ow) {
          const double g = dy[size_t(((n * c.Cout + co) * Ho + oh) * Wo + ow)];
          db[size_t(co)] += g;
          for (int64_t ci = 0; ci < c.Cin; ++ci)
            for (int64_t i = 0; i < c.kH; ++i)
              for (int64_t j = 0; j < c.kW; ++j) {
                const int64_t ih = oh * c.stride - c.padding + i;
                const int64_t iw = ow * c.stride - c.padding + j;
                if (ih < 0 || ih >= c.H || iw < 0 || iw >= c.W) continue;
                const size_t xi = size_t(((n * c.Cin + ci) * c.H + ih) * c.W + iw);
                const size_t wi = size_t(((co * c.Cin + ci) * c.kH + i) * c.kW + j);
                dx[xi] += g * w[wi];
                dw[wi] += g * x[xi];
              }
        }
}

double rel_l2(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (std::isnan(a[i])) return std::numeric_limits<double>::infinity();
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1.0));
}

// Random inputs of a case (normal, so never exactly zero).
struct Inputs {
  Tensor x, w, b;
};
Inputs make_inputs(const Case& c, DType dtype, Device device, uint64_t seed) {
  Inputs in;
  in.x = Tensor::randn({c.N, c.Cin, c.H, c.W}, seed, dtype, device);
  in.w = Tensor::randn({c.Cout, c.Cin, c.kH, c.kW}, seed + 1, dtype, device);
  if (c.bias) in.b = Tensor::randn({c.Cout}, seed + 2, dtype, device);
  return in;
}

// The naive forward of a case's inputs.
std::vector<double> reference_forward(const Case& c, const Inputs& in) {
  return reference_forward(c, in.x.to_vector<double>(), in.w.to_vector<double>(),
                           c.bias ? in.b.to_vector<double>() : std::vector<double>());
}

const std::vector<Case> kCases = {
    {2, 3, 7, 9, 4, 3, 3, 1, 0, true},   // H != W
    {2, 3, 7, 9, 4, 3, 3, 2, 1, true},   // stride 2, padding 1
    {3, 2, 8, 6, 5, 2, 2, 1, 0, true},   // even kernel
    {2, 2, 9, 7, 3, 4, 2, 2, 1, false},  // kH != kW, even, stride 2 leaving rows unread, no bias
    {1, 1, 5, 6, 2, 3, 3, 1, 1, true},   // N = 1, Cin = 1
    {2, 3, 5, 4, 2, 5, 4, 1, 0, true},   // kernel = input: 1x1 output
    {2, 2, 4, 5, 3, 1, 1, 3, 2, true},   // 1x1 kernel, stride 3, padding 2 (border outputs = bias)
    {5, 4, 6, 6, 3, 3, 3, 1, 2, true},   // N above the thread count, wide padding
    // The CPU backward splits the batch into at most 32 chunks that each sum several samples.
    {33, 2, 5, 4, 3, 3, 3, 1, 0, true},  // N = 33: one chunk holds two samples
    {70, 1, 4, 5, 1, 2, 2, 1, 1, true},  // N = 70: chunks of 2 and 3 samples; one in, one out channel
    {64, 8, 12, 10, 32, 3, 3, 1, 0, true},  // the README's batch and channel counts, on small images
};

// ---- forward ------------------------------------------------------------------------------------

TEST(Conv2d, ForwardMatchesNaiveLoopsFloat64) {
  for (const Case& c : kCases) {
    SCOPED_TRACE(case_name(c));
    Inputs in = make_inputs(c, DType::Float64, Device::CPU, 11);
    Tensor y = ops::conv2d(in.x, in.w, in.b, {c.stride, c.padding});
    const Shape expected{c.N, c.Cout, out_size(c.H, c.kH, c.stride, c.padding),
                         out_size(c.W, c.kW, c.stride, c.padding)};
    ASSERT_EQ(y.shape(), expected);
    EXPECT_LT(rel_l2(y.to_vector<double>(), reference_forward(c, in)), 1e-13);
  }
}

TEST(Conv2d, ForwardMatchesNaiveLoopsFloat32) {
  for (const Case& c : kCases) {
    SCOPED_TRACE(case_name(c));
    Inputs in = make_inputs(c, DType::Float32, Device::CPU, 21);
    Tensor y = ops::conv2d(in.x, in.w, in.b, {c.stride, c.padding});
    EXPECT_EQ(y.dtype(), DType::Float32);
    EXPECT_LT(rel_l2(y.to_vector<double>(), reference_forward(c, in)), 1e-6);
  }
}

// The raw CPU launchers write every element of their (poisoned) outputs.
TEST(Conv2d, CpuLaunchersWriteEveryElement) {
  for (const Case& c : kCases) {
    SCOPED_TRACE(case_name(c));
    Inputs in = make_inputs(c, DType::Float64, Device::CPU, 31);
    ops::detail::Conv2dParams p;
    p.N = c.N, p.Cin = c.Cin, p.H = c.H, p.W = c.W, p.Cout = c.Cout, p.kH = c.kH, p.kW = c.kW;
    p.stride = c.stride, p.padding = c.padding;
    p.Hout = out_size(c.H, c.kH, c.stride, c.padding);
    p.Wout = out_size(c.W, c.kW, c.stride, c.padding);
    Tensor y = Tensor::empty({p.N, p.Cout, p.Hout, p.Wout}, DType::Float64);
    testing::poison(y);
    ops::detail::conv2d_forward_cpu<double>(p, in.x.data<double>(), in.w.data<double>(),
                                            c.bias ? in.b.data<double>() : nullptr,
                                            y.data<double>());
    EXPECT_LT(rel_l2(y.to_vector<double>(), reference_forward(c, in)), 1e-13);

    Tensor dy = Tensor::randn(y.shape(), 32, DType::Float64);
    Tensor dx = Tensor::empty(in.x.shape(), DType::Float64);
    Tensor dw = Tensor::empty(in.w.shape(), DType::Float64);
    Tensor db = Tensor::empty({c.Cout}, DType::Float64);
    testing::poison(dx);
    testing::poison(dw);
    testing::poison(db);
    ops::detail::conv2d_backward_cpu<double>(p, in.x.data<double>(), in.w.data<double>(),
                                             dy.data<double>(), dx.data<double>(),
                                             dw.data<double>(), db.data<double>());
    std::vector<double> rdx, rdw, rdb;
    reference_backward(c, in.x.to_vector<double>(), in.w.to_vector<double>(),
                       dy.to_vector<double>(), rdx, rdw, rdb);
    EXPECT_LT(rel_l2(dx.to_vector<double>(), rdx), 1e-13);
    EXPECT_LT(rel_l2(dw.to_vector<double>(), rdw), 1e-13);
    EXPECT_LT(rel_l2(db.to_vector<double>(), rdb), 1e-13);
  }
}

// ---- backward -----------------------------------------------------------------------------------

TEST(Conv2d, BackwardMatchesNaiveLoops) {
  for (DType dtype : {DType::Float64, DType::Float32}) {
    for (const Case& c : kCases) {
      SCOPED_TRACE(case_name(c) + " " + dtype_name(dtype));
      Inputs in = make_inputs(c, dtype, Device::CPU, 41);
      in.x.set_requires_grad();
      in.w.set_requires_grad();
      if (c.bias) in.b.set_requires_grad();
      Tensor y = ops::conv2d(in.x, in.w, in.b, {c.stride, c.padding});
      Tensor dy = Tensor::randn(y.shape(), 42, dtype);
      y.backward(dy);
      std::vector<double> rdx, rdw, rdb;
      reference_backward(c, in.x.to_vector<double>(), in.w.to_vector<double>(),
                         dy.to_vector<double>(), rdx, rdw, rdb);
      const double tol = dtype == DType::Float64 ? 1e-13 : 1e-6;
      ASSERT_TRUE(in.x.grad().defined());
      ASSERT_TRUE(in.w.grad().defined());
      EXPECT_LT(rel_l2(in.x.grad().to_vector<double>(), rdx), tol);
      EXPECT_LT(rel_l2(in.w.grad().to_vector<double>(), rdw), tol);
      if (c.bias) {
        ASSERT_TRUE(in.b.grad().defined());
        EXPECT_LT(rel_l2(in.b.grad().to_vector<double>(), rdb), tol);
      }
    }
  }
}

TEST(Conv2d, GradcheckFloat64Cpu) {
  const std::vector<Case> cases = {
      {2, 2, 5, 6, 3, 3, 3, 1, 0, true},
      {2, 2, 6, 5, 3, 3, 2, 2, 1, true},
      {1, 1, 5, 5, 2, 2, 2, 2, 0, true},  // stride leaves the last row and column unread
      {2, 3, 4, 4, 2, 3, 3, 1, 1, false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(case_name(c));
    Inputs in = make_inputs(c, DType::Float64, Device::CPU, 51);
    std::vector<Tensor> inputs{in.x.set_requires_grad(), in.w.set_requires_grad()};
    if (c.bias) inputs.push_back(in.b.set_requires_grad());
    const Conv2dOptions opt{c.stride, c.padding};
    GradcheckResult r = gradcheck(
        [&](const std::vector<Tensor>& v) {
          return std::vector<Tensor>{ops::conv2d(v[0], v[1], v.size() > 2 ? v[2] : Tensor(), opt)};
        },
        inputs);
    EXPECT_TRUE(r.passed) << r.message;
    EXPECT_EQ(r.inputs.size(), inputs.size());
  }
}

// With x not requiring grad, the backward leaves x.grad() undefined, saves no weight and still gets
// dweight and dbias right.
TEST(Conv2d, InputGradientOnlyWhenNeeded) {
  const Case c{3, 2, 7, 6, 4, 3, 3, 1, 1, true};
  Inputs in = make_inputs(c, DType::Float64, Device::CPU, 61);
  in.w.set_requires_grad();
  in.b.set_requires_grad();
  Tensor y = ops::conv2d(in.x, in.w, in.b, {c.stride, c.padding});
  Tensor dy = Tensor::randn(y.shape(), 62, DType::Float64);
  y.backward(dy);
  EXPECT_FALSE(in.x.grad().defined());
  std::vector<double> rdx, rdw, rdb;
  reference_backward(c, in.x.to_vector<double>(), in.w.to_vector<double>(), dy.to_vector<double>(),
                     rdx, rdw, rdb);
  ASSERT_TRUE(in.w.grad().defined());
  ASSERT_TRUE(in.b.grad().defined());
  EXPECT_LT(rel_l2(in.w.grad().to_vector<double>(), rdw), 1e-13);
  EXPECT_LT(rel_l2(in.b.grad().to_vector<double>(), rdb), 1e-13);

  // Modifying x in place would break dweight, so that must be detected; the weight is not saved,
  // so modifying it must not be.
  Tensor y2 = ops::conv2d(in.x, in.w, in.b, {c.stride, c.padding});
  in.w.detach().fill_(0.5);
  EXPECT_NO_THROW(y2.backward(dy));
  Tensor y3 = ops::conv2d(in.x, in.w, in.b, {c.stride, c.padding});
  in.x.fill_(0.25);
  EXPECT_ERROR_HAS(y3.backward(dy), "conv2d backward", "modified in place",
                   "float64 cpu [3, 2, 7, 6]");
  autograd::clear_tape();
}

TEST(Conv2d, OnlyInputGradient) {
  const Case c{2, 3, 6, 7, 2, 2, 3, 2, 1, true};
  Inputs in = make_inputs(c, DType::Float64, Device::CPU, 71);
  in.x.set_requires_grad();
  Tensor y = ops::conv2d(in.x, in.w, in.b, {c.stride, c.padding});
  Tensor dy = Tensor::randn(y.shape(), 72, DType::Float64);
  y.backward(dy);
  EXPECT_FALSE(in.w.grad().defined());
  EXPECT_FALSE(in.b.grad().defined());
  std::vector<double> rdx, rdw, rdb;
  reference_backward(c, in.x.to_vector<double>(), in.w.to_vector<double>(), dy.to_vector<double>(),
                     rdx, rdw, rdb);
  ASSERT_TRUE(in.x.grad().defined());
  EXPECT_LT(rel_l2(in.x.grad().to_vector<double>(), rdx), 1e-13);
}

TEST(Conv2d, NoTapeWithoutGradOrInNoGradMode) {
  const Case c{1, 2, 5, 5, 2, 3, 3, 1, 0, true};
  Inputs in = make_inputs(c, DType::Float32, Device::CPU, 81);
  autograd::clear_tape();
  Tensor y = ops::conv2d(in.x, in.w, in.b);
  EXPECT_FALSE(y.requires_grad());
  EXPECT_EQ(autograd::tape_size(), 0u);
  in.w.set_requires_grad();
  {
    autograd::NoGradGuard guard;
    Tensor y2 = ops::conv2d(in.x, in.w, in.b);
    EXPECT_FALSE(y2.requires_grad());
    EXPECT_EQ(autograd::tape_size(), 0u);
  }
  Tensor y3 = ops::conv2d(in.x, in.w, in.b);
  EXPECT_TRUE(y3.requires_grad());
  EXPECT_EQ(autograd::tape_size(), 1u);
  autograd::clear_tape();
}

TEST(Conv2d, BackwardFunctionMatchesTape) {
  const Case c{3, 2, 6, 5, 3, 3, 2, 1, 1, true};
  Inputs in = make_inputs(c, DType::Float64, Device::CPU, 91);
  const Conv2dOptions opt{c.stride, c.padding};
  Tensor y = ops::conv2d(in.x, in.w, in.b, opt);
  Tensor dy = Tensor::randn(y.shape(), 92, DType::Float64);
  ops::Conv2dGrads g = ops::conv2d_backward(dy, in.x, in.w, opt, false, true, true);
  EXPECT_FALSE(g.dx.defined());
  std::vector<double> rdx, rdw, rdb;
  reference_backward(c, in.x.to_vector<double>(), in.w.to_vector<double>(), dy.to_vector<double>(),
                     rdx, rdw, rdb);
  ASSERT_TRUE(g.dweight.defined() && g.dbias.defined());
  EXPECT_LT(rel_l2(g.dweight.to_vector<double>(), rdw), 1e-13);
  EXPECT_LT(rel_l2(g.dbias.to_vector<double>(), rdb), 1e-13);
  g = ops::conv2d_backward(dy, in.x, in.w, opt, true, false, false);
  ASSERT_TRUE(g.dx.defined());
  EXPECT_FALSE(g.dweight.defined());
  EXPECT_LT(rel_l2(g.dx.to_vector<double>(), rdx), 1e-13);
  EXPECT_ERROR_HAS(ops::conv2d_backward(Tensor::randn({3, 3, 2, 2}, 1, DType::Float64), in.x, in.w,
                                        opt, true, true, true),
                   "conv2d backward", "expected dy of shape [3, 3, 6, 6]", "got [3, 3, 2, 2]");
  EXPECT_ERROR_HAS(ops::conv2d_backward(dy.to(DType::Float32), in.x, in.w, opt, true, true, true),
                   "conv2d backward", "expected dy of float64", "got float32");
}

// Two float32 backward passes of dy give the same bits.
void expect_backward_bitwise_repeatable(const Tensor& dy, const Inputs& in,
                                        const Conv2dOptions& opt) {
  auto g1 = ops::conv2d_backward(dy, in.x, in.w, opt, true, true, true);
  auto g2 = ops::conv2d_backward(dy, in.x, in.w, opt, true, true, true);
  EXPECT_EQ(g1.dweight.to_vector<float>(), g2.dweight.to_vector<float>());
  EXPECT_EQ(g1.dbias.to_vector<float>(), g2.dbias.to_vector<float>());
  EXPECT_EQ(g1.dx.to_vector<float>(), g2.dx.to_vector<float>());
}

TEST(Conv2d, BackwardIsBitwiseRepeatable) {
  const Case c{37, 3, 9, 8, 4, 3, 3, 1, 1, true};  // more samples than chunks
  Inputs in = make_inputs(c, DType::Float32, Device::CPU, 101);
  const Conv2dOptions opt{c.stride, c.padding};
  Tensor dy = Tensor::randn({c.N, c.Cout, 9, 8}, 102, DType::Float32);
  expect_backward_bitwise_repeatable(dy, in, opt);
  // and right: repeatable is not enough
  auto g = ops::conv2d_backward(dy, in.x, in.w, opt, true, true, true);
  std::vector<double> rdx, rdw, rdb;
  reference_backward(c, in.x.to_vector<double>(), in.w.to_vector<double>(), dy.to_vector<double>(),
                     rdx, rdw, rdb);
  EXPECT_LT(rel_l2(g.dx.to_vector<double>(), rdx), 1e-6);
  EXPECT_LT(rel_l2(g.dweight.to_vector<double>(), rdw), 1e-6);
  EXPECT_LT(rel_l2(g.dbias.to_vector<double>(), rdb), 1e-6);
}

// ---- switches -----------------------------------------------------------------------------------

TEST(Conv2d, SwitchesDefaultsAndToggle) {
  EXPECT_TRUE(ops::conv::allow_tf32());
  EXPECT_FALSE(ops::conv::deterministic());
  EXPECT_FALSE(ops::conv::benchmark());
  ops::conv::set_allow_tf32(false);
  ops::conv::set_deterministic(true);
  ops::conv::set_benchmark(true);
  EXPECT_FALSE(ops::conv::allow_tf32());
  EXPECT_TRUE(ops::conv::deterministic());
  EXPECT_TRUE(ops::conv::benchmark());
  ops::conv::set_allow_tf32(true);
  ops::conv::set_deterministic(false);
  ops::conv::set_benchmark(false);
  EXPECT_TRUE(ops::conv::allow_tf32());
  EXPECT_FALSE(ops::conv::deterministic());
  EXPECT_FALSE(ops::conv::benchmark());
}

// ---- bad inputs ---------------------------------------------------------------------------------

TEST(Conv2d, BadInputsNameTheProblem) {
  Tensor x = Tensor::randn({2, 3, 6, 6}, 1);
  Tensor w = Tensor::randn({4, 3, 3, 3}, 2);
  Tensor b = Tensor::randn({4}, 3);
  expect_error_contains([&] { ops::conv2d(Tensor::randn({3, 6, 6}, 1), w, b); },
                        {"conv2d", "4 dimensions", "[3, 6, 6]"});
  expect_error_contains([&] { ops::conv2d(x, Tensor::randn({4, 3, 3}, 1), b); },
                        {"conv2d", "weight", "4 dimensions", "[4, 3, 3]"});
  expect_error_contains([&] { ops::conv2d(x, Tensor::randn({4, 2, 3, 3}, 1), b); },
                        {"conv2d", "Cin = 3", "[4, 2, 3, 3]"});
  expect_error_contains([&] { ops::conv2d(x, Tensor::randn({4, 3, 7, 3}, 1), b); },
                        {"conv2d", "kernel", "padded input", "[6, 6]", "[7, 3]"});
  expect_error_contains([&] { ops::conv2d(x, Tensor::randn({4, 3, 9, 9}, 1), b, {1, 1}); },
                        {"conv2d", "padded input", "[8, 8]", "[9, 9]"});
  EXPECT_NO_THROW(ops::conv2d(x, Tensor::randn({4, 3, 8, 8}, 1), b, {1, 1}));
  expect_error_contains([&] { ops::conv2d(x, w, b, {0, 0}); }, {"conv2d", "stride >= 1", "got 0"});
  expect_error_contains([&] { ops::conv2d(x, w, b, {1, -1}); },
                        {"conv2d", "padding >= 0", "got -1"});
  expect_error_contains([&] { ops::conv2d(x, w, Tensor::randn({3}, 1)); },
                        {"conv2d", "bias", "[4]", "got [3]"});
  expect_error_contains([&] { ops::conv2d(x, w, Tensor::randn({4, 1, 1}, 1)); },
                        {"conv2d", "bias", "[4, 1, 1]"});
  expect_error_contains([&] { ops::conv2d(x, w.to(DType::Float64), b); },
                        {"conv2d", "weight", "float32", "float64"});
  expect_error_contains([&] { ops::conv2d(x, w, b.to(DType::Float64)); },
                        {"conv2d", "bias", "float32", "float64"});
  expect_error_contains([&] { ops::conv2d(Tensor(), w, b); }, {"conv2d", "undefined"});
  expect_error_contains([&] { ops::conv2d(x, Tensor(), b); }, {"conv2d", "weight", "undefined"});
  if (cuda::is_available()) {
    expect_error_contains([&] { ops::conv2d(x, w.cuda(), b); },
                          {"conv2d", "weight", "cpu", "cuda"});
    expect_error_contains([&] { ops::conv2d(x.cuda(), w.cuda(), b); },
                          {"conv2d", "bias", "cuda", "cpu"});
  }
}

// ---- CUDA ---------------------------------------------------------------------------------------

// Restores the global switches when a test ends, whatever it set.
class SwitchGuard {
 public:
  SwitchGuard()
      : tf32_(ops::conv::allow_tf32()),
        det_(ops::conv::deterministic()),
        bench_(ops::conv::benchmark()) {}
  ~SwitchGuard() {
    ops::conv::set_allow_tf32(tf32_);
    ops::conv::set_deterministic(det_);
    ops::conv::set_benchmark(bench_);
  }

 private:
  bool tf32_, det_, bench_;
};

const std::vector<Case> kGpuCases = {
    {3, 5, 17, 13, 7, 3, 3, 1, 0, true},
    {2, 3, 23, 19, 5, 5, 3, 2, 1, true},
    {5, 7, 11, 15, 9, 2, 4, 1, 2, false},
    {1, 1, 31, 29, 3, 3, 3, 3, 1, true},
    {4, 8, 33, 37, 16, 3, 3, 1, 0, true},
};

// CUDA forward and all gradients against the float64 CPU result, within rel_tol (relative L2).
void expect_cuda_matches_cpu(const Case& c, DType dtype, double rel_tol, uint64_t seed) {
  SCOPED_TRACE(case_name(c) + " " + dtype_name(dtype));
  Inputs ref = make_inputs(c, DType::Float64, Device::CPU, seed);
  const Conv2dOptions opt{c.stride, c.padding};
  Tensor y_ref = ops::conv2d(ref.x, ref.w, ref.b, opt);
  Tensor dy_ref = Tensor::randn(y_ref.shape(), seed + 7, DType::Float64);
  auto g_ref = ops::conv2d_backward(dy_ref, ref.x, ref.w, opt, true, true, true);

  Tensor x = ref.x.to(dtype).cuda(), w = ref.w.to(dtype).cuda();
  Tensor b = c.bias ? ref.b.to(dtype).cuda() : Tensor();
  Tensor dy = dy_ref.to(dtype).cuda();
  x.set_requires_grad();
  w.set_requires_grad();
  if (c.bias) b.set_requires_grad();
  Tensor y = ops::conv2d(x, w, b, opt);
  ASSERT_TRUE(y.is_cuda());
  ASSERT_EQ(y.dtype(), dtype);
  EXPECT_LT(testing::rel_l2(y, y_ref), rel_tol);
  y.backward(dy);
  ASSERT_TRUE(x.grad().defined() && w.grad().defined());
  EXPECT_LT(testing::rel_l2(x.grad(), g_ref.dx), rel_tol);
  EXPECT_LT(testing::rel_l2(w.grad(), g_ref.dweight), rel_tol);
  if (c.bias) {
    ASSERT_TRUE(b.grad().defined());
    // the bias gradient is our own reduction: no TF32
    EXPECT_LT(testing::rel_l2(b.grad(), g_ref.dbias), dtype == DType::Float64 ? 1e-13 : 1e-5);
  }
}

TEST(Conv2dCuda, Float64MatchesCpu) {
  TG_SKIP_WITHOUT_GPU();
  SwitchGuard guard;
  for (const Case& c : kGpuCases) expect_cuda_matches_cpu(c, DType::Float64, 1e-12, 201);
}

TEST(Conv2dCuda, Float32StrictMatchesCpu) {
  TG_SKIP_WITHOUT_GPU();
  SwitchGuard guard;
  ops::conv::set_allow_tf32(false);
  for (const Case& c : kGpuCases) expect_cuda_matches_cpu(c, DType::Float32, 1e-5, 301);
}

TEST(Conv2dCuda, Float32Tf32MatchesCpu) {
  TG_SKIP_WITHOUT_GPU();
  SwitchGuard guard;
  ops::conv::set_allow_tf32(true);
  for (const Case& c : kGpuCases) expect_cuda_matches_cpu(c, DType::Float32, 2e-3, 401);
}

TEST(Conv2dCuda, BenchmarkAndDeterministicModes) {
  TG_SKIP_WITHOUT_GPU();
  SwitchGuard guard;
  ops::conv::clear_algorithm_cache();
  ops::conv::set_allow_tf32(false);
  ops::conv::set_benchmark(true);
  ops::conv::set_deterministic(true);
  for (const Case& c : kGpuCases) expect_cuda_matches_cpu(c, DType::Float32, 1e-5, 501);
  // forward, backward-filter and backward-data choices per case
  EXPECT_EQ(ops::conv::algorithm_cache_size(), 3 * kGpuCases.size());
  for (const Case& c : kGpuCases) expect_cuda_matches_cpu(c, DType::Float64, 1e-12, 601);

  // Deterministic algorithms: two backward passes give the same bits.
  const Case c = kGpuCases[4];
  Inputs in = make_inputs(c, DType::Float32, Device::CUDA, 701);
  const Conv2dOptions opt{c.stride, c.padding};
  Tensor dy = Tensor::randn({c.N, c.Cout, out_size(c.H, c.kH, 1, 0), out_size(c.W, c.kW, 1, 0)},
                            702, DType::Float32, Device::CUDA);
  expect_backward_bitwise_repeatable(dy, in, opt);
}

TEST(Conv2dCuda, InputGradientOnlyWhenNeeded) {
  TG_SKIP_WITHOUT_GPU();
  const Case c{3, 4, 15, 12, 6, 3, 3, 1, 0, true};
  Inputs ref = make_inputs(c, DType::Float64, Device::CPU, 801);
  Tensor x = ref.x.cuda(), w = ref.w.cuda(), b = ref.b.cuda();
  w.set_requires_grad();
  b.set_requires_grad();
  Tensor y = ops::conv2d(x, w, b);
  Tensor dy_ref = Tensor::randn(y.shape(), 802, DType::Float64);
  y.backward(dy_ref.cuda());
  EXPECT_FALSE(x.grad().defined());
  auto g_ref = ops::conv2d_backward(dy_ref, ref.x, ref.w, {}, false, true, true);
  ASSERT_TRUE(w.grad().defined() && b.grad().defined());
  EXPECT_LT(testing::rel_l2(w.grad(), g_ref.dweight), 1e-12);
  EXPECT_LT(testing::rel_l2(b.grad(), g_ref.dbias), 1e-13);
}

// A bias reduction bigger than one chunk per channel (several partials) and many channels.
TEST(Conv2dCuda, LargeBiasGradient) {
  TG_SKIP_WITHOUT_GPU();
  const Case c{6, 2, 61, 67, 33, 1, 1, 1, 0, true};  // M = 6*61*67 = 24522 -> 3 partials
  expect_cuda_matches_cpu(c, DType::Float64, 1e-12, 901);
}

TEST(Conv2dCuda, GradcheckFloat64) {
  TG_SKIP_WITHOUT_GPU();
  SwitchGuard guard;
  ops::conv::set_deterministic(true);  // gradcheck also demands bit-identical repeated backwards
  const Case c{2, 2, 6, 5, 3, 3, 2, 2, 1, true};
  Inputs in = make_inputs(c, DType::Float64, Device::CUDA, 1001);
  std::vector<Tensor> inputs{in.x.set_requires_grad(), in.w.set_requires_grad(),
                             in.b.set_requires_grad()};
  const Conv2dOptions opt{c.stride, c.padding};
  GradcheckResult r = gradcheck(
      [&](const std::vector<Tensor>& v) {
        return std::vector<Tensor>{ops::conv2d(v[0], v[1], v[2], opt)};
      },
      inputs);
  EXPECT_TRUE(r.passed) << r.message;
}

}  // namespace
}  // namespace tg
