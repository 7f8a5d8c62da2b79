// Tests of ops/elementwise.h: forward against naive loops, float64 gradient checks on the CPU (both
// broadcast orders, a tensor used twice), bad inputs, and CUDA against the CPU on odd shapes.
#include "ops/elementwise.h"

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/gradcheck.h"
#include "test_utils.h"
#ifdef TG_WITH_CUDA
#include "core/cuda_utils.h"
#endif

namespace tg {
namespace {

using testing::error_of;

const DType kDTypes[] = {DType::Float32, DType::Float64};

// Normal(0, stddev) on the CPU from a fresh generator.
Tensor randn_std(const Shape& shape, uint64_t seed, DType dt, double stddev) {
  Generator gen(seed);
  return Tensor::randn(shape, gen, dt, Device::CPU, 0.0, stddev);
}

double tol_for(DType dt) { return dt == DType::Float32 ? 2e-6 : 1e-13; }

// Every element within tol * (1 + |ref|); NaN fails.
void expect_all_near(const std::vector<double>& got, const std::vector<double>& ref, double tol,
                     const std::string& what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  int64_t bad = 0, first = -1;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!(std::fabs(got[i] - ref[i]) <= tol * (1.0 + std::fabs(ref[i])))) {
      if (first < 0) first = int64_t(i);
      ++bad;
    }
  }
  EXPECT_EQ(bad, 0) << what << ": first bad element " << first << ": got "
                    << (first >= 0 ? got[first] : 0.0) << ", expected "
                    << (first >= 0 ? ref[first] : 0.0);
}

// Naive a op b in double, with the (C,1,1)-against-NCHW rule.
std::vector<double> ref_binary(char op, const Tensor& a, const Tensor& b) {
  const auto av = a.to_vector<double>();
  const auto bv = b.to_vector<double>();
  auto f = [op](double x, double y) { return op == '+' ? x + y : op == '-' ? x - y : x * y; };
  const bool a_chan = a.dim() == 3 && b.dim() == 4;
  const bool b_chan = b.dim() == 3 && a.dim() == 4;
  if (!a_chan && !b_chan) {
    std::vector<double> out(av.size());
    for (size_t i = 0; i < av.size(); ++i) out[i] = f(av[i], bv[i]);
    return out;
  }
  const Tensor& x = a_chan ? b : a;
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  std::vector<double> out(size_t(x.numel()));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t w = 0; w < W; ++w) {
          const int64_t i = ((n * C + c) * H + h) * W + w;
          out[size_t(i)] =
              f(a_chan ? av[size_t(c)] : av[size_t(i)], b_chan ? bv[size_t(c)] : bv[size_t(i)]);
        }
  return out;
}

struct ShapePair {
  Shape a, b;
};

// Same shapes, both broadcast orders, N = 1, 1x1 spatial, C = 1, 0-dim and (C,1,1) + (C,1,1).
const std::vector<ShapePair> kShapePairs = {
    {{2, 3, 4, 5}, {2, 3, 4, 5}},
    {{7}, {7}},
    {{}, {}},
    {{3, 1, 1}, {3, 1, 1}},
    {{2, 3, 4, 5}, {3, 1, 1}},
    {{3, 1, 1}, {2, 3, 4, 5}},
    {{1, 4, 1, 1}, {4, 1, 1}},
    {{1, 1, 1}, {2, 1, 3, 3}},
    {{3, 5, 2, 7}, {5, 1, 1}},
};

using BinaryFn = Tensor (*)(const Tensor&, const Tensor&);
struct NamedBinary {
  const char* name;
  char op;
  BinaryFn fn;
};
const NamedBinary kBinaryOps[] = {
    {"add", '+', static_cast<BinaryFn>(&ops::add)},
    {"sub", '-', static_cast<BinaryFn>(&ops::sub)},
    {"mul", '*', static_cast<BinaryFn>(&ops::mul)},
};

GradcheckResult check_grads(const GradcheckFunction& f, std::vector<Tensor> inputs) {
  for (auto& t : inputs) t.set_requires_grad();
  return gradcheck(f, inputs);
}

// ---- forward against naive loops ----------------------------------------------------------------

TEST(ElementwiseForward, BinaryOpsMatchNaiveLoops) {
  uint64_t seed = 10;
  for (DType dt : kDTypes)
    for (const auto& op : kBinaryOps)
      for (const auto& sp : kShapePairs) {
        Tensor a = Tensor::randn(sp.a, seed++, dt);
        Tensor b = Tensor::randn(sp.b, seed++, dt);
        Tensor y = op.fn(a, b);
        const std::string what = std::string(op.name) + " " + shape_str(sp.a) + " " +
                                 shape_str(sp.b) + " " + dtype_name(dt);
        EXPECT_EQ(y.dtype(), dt) << what;
        EXPECT_EQ(y.shape(), sp.a.size() >= sp.b.size() ? sp.a : sp.b) << what;
        expect_all_near(y.to_vector<double>(), ref_binary(op.op, a, b), tol_for(dt), what);
      }
}

TEST(ElementwiseForward, OperatorsEqualTheOps) {
  Tensor a = Tensor::randn({2, 3, 4, 5}, 1, DType::Float64);
  Tensor b = Tensor::randn({3, 1, 1}, 2, DType::Float64);
  EXPECT_EQ((a + b).to_vector<double>(), ops::add(a, b).to_vector<double>());
  EXPECT_EQ((b - a).to_vector<double>(), ops::sub(b, a).to_vector<double>());
  EXPECT_EQ((a * b).to_vector<double>(), ops::mul(a, b).to_vector<double>());
  const auto av = a.to_vector<double>();
  std::vector<double> plus(av.size()), minus(av.size()), times(av.size()), rminus(av.size()),
      neg(av.size());
  for (size_t i = 0; i < av.size(); ++i) {
    plus[i] = av[i] + 1.5;
    minus[i] = av[i] - 1.5;
    times[i] = av[i] * 1.5;
    rminus[i] = 1.5 - av[i];
    neg[i] = -av[i];
  }
  expect_all_near((a + 1.5).to_vector<double>(), plus, 1e-15, "x + s");
  expect_all_near((1.5 + a).to_vector<double>(), plus, 1e-15, "s + x");
  expect_all_near((a - 1.5).to_vector<double>(), minus, 1e-15, "x - s");
  expect_all_near((a * 1.5).to_vector<double>(), times, 1e-15, "x * s");
  expect_all_near((1.5 * a).to_vector<double>(), times, 1e-15, "s * x");
  expect_all_near((1.5 - a).to_vector<double>(), rminus, 1e-15, "s - x");
  expect_all_near((-a).to_vector<double>(), neg, 1e-15, "-x");
}

TEST(ElementwiseForward, ScalarOpsMatchNaiveLoops) {
  for (DType dt : kDTypes) {
    Tensor x = Tensor::randn({3, 5, 7}, 3, dt);
    const auto xv = x.to_vector<double>();
    const double s = -0.7;
    std::vector<double> add(xv.size()), sub(xv.size()), mul(xv.size());
    for (size_t i = 0; i < xv.size(); ++i) {
      // float32: the scalar is rounded to float first, as the kernels do.
      const double sr = dt == DType::Float32 ? double(float(s)) : s;
      add[i] = xv[i] + sr;
      sub[i] = xv[i] - sr;
      mul[i] = xv[i] * sr;
    }
    expect_all_near(ops::add(x, s).to_vector<double>(), add, tol_for(dt), "add(x, s)");
    expect_all_near(ops::sub(x, s).to_vector<double>(), sub, tol_for(dt), "sub(x, s)");
    expect_all_near(ops::mul(x, s).to_vector<double>(), mul, tol_for(dt), "mul(x, s)");
    EXPECT_EQ(ops::mul(x, s).shape(), x.shape());
    EXPECT_EQ(ops::mul(x, s).dtype(), dt);
  }
}

TEST(ElementwiseForward, SigmoidSquareSumMeanMatchNaiveLoops) {
  for (DType dt : kDTypes) {
    Tensor x = randn_std({4, 3, 5, 7}, 4, dt, 3.0);
    const auto xv = x.to_vector<double>();
    std::vector<double> sig(xv.size()), sq(xv.size());
    double total = 0.0;
    for (size_t i = 0; i < xv.size(); ++i) {
      sig[i] = 1.0 / (1.0 + std::exp(-xv[i]));
      sq[i] = xv[i] * xv[i];
      total += xv[i];
    }
    expect_all_near(ops::sigmoid(x).to_vector<double>(), sig, tol_for(dt), "sigmoid");
    expect_all_near(ops::square(x).to_vector<double>(), sq, tol_for(dt), "square");
    Tensor s = ops::sum(x);
    Tensor m = ops::mean(x);
    EXPECT_EQ(s.shape(), Shape{});
    EXPECT_EQ(m.shape(), Shape{});
    EXPECT_EQ(s.dtype(), dt);
    expect_all_near({s.item()}, {total}, tol_for(dt), "sum");
    expect_all_near({m.item()}, {total / double(xv.size())}, tol_for(dt), "mean");
  }
}

TEST(ElementwiseForward, SigmoidSaturatesWithoutOverflow) {
  for (DType dt : kDTypes) {
    Tensor x =
        Tensor::from_vector<double>({-1000.0, -60.0, -1.0, 0.0, 1.0, 60.0, 1000.0}, {7}).to(dt);
    const auto y = ops::sigmoid(x).to_vector<double>();
    std::vector<double> ref;
    for (double v : x.to_vector<double>()) ref.push_back(1.0 / (1.0 + std::exp(-v)));
    expect_all_near(y, ref, tol_for(dt), "sigmoid at large |x|");
    EXPECT_EQ(y[3], 0.5);
    EXPECT_EQ(y[6], 1.0);
    EXPECT_GE(y[0], 0.0);
  }
}

TEST(ElementwiseForward, SumOfManyFloat32ElementsAccumulatesInDouble) {
  // 1 + 2^-24 * 2^20: naive float accumulation loses every small term.
  std::vector<float> v(size_t(1) << 20, 1.0f / 16777216.0f);
  v[0] = 1.0f;
  Tensor x = Tensor::from_vector<float>(v, {int64_t(v.size())});
  const double expected = double(float(1.0 + (double(v.size()) - 1) / 16777216.0));
  EXPECT_EQ(ops::sum(x).item(), expected);
}

// The raw CPU kernels write every element of a poisoned output.
TEST(ElementwiseForward, CpuKernelsWriteEveryOutputElement) {
  using namespace ops::detail;
  Tensor a = Tensor::randn({2, 3, 4, 5}, 5, DType::Float64);
  Tensor b = Tensor::randn({3, 1, 1}, 6, DType::Float64);
  Tensor g = Tensor::randn({}, 7, DType::Float64);
  const int64_t n = a.numel();
  Tensor out = Tensor::empty(a.shape(), DType::Float64);

  testing::poison(out);
  binary_cpu<double>(BinaryOp::Mul, a.data<double>(), b.data<double>(), out.data<double>(),
                     BinaryParams{n, 3, 20, false, true});
  expect_all_near(out.to_vector<double>(), ref_binary('*', a, b), 1e-15, "binary_cpu");

  testing::poison(out);
  binary_cpu<double>(BinaryOp::Sub, b.data<double>(), a.data<double>(), out.data<double>(),
                     BinaryParams{n, 3, 20, true, false});
  expect_all_near(out.to_vector<double>(), ref_binary('-', b, a), 1e-15, "binary_cpu");

  testing::poison(out);
  affine_cpu<double>(a.data<double>(), out.data<double>(), n, 2.0, 1.0);
  const auto av = a.to_vector<double>();
  std::vector<double> ref_affine(av.size()), ref_sigmoid(av.size());
  double ref_sum = 0;
  for (size_t i = 0; i < av.size(); ++i) {
    ref_affine[i] = 2.0 * av[i] + 1.0;
    ref_sigmoid[i] = 1.0 / (1.0 + std::exp(-av[i]));
    ref_sum += av[i];
  }
  expect_all_near(out.to_vector<double>(), ref_affine, 1e-15, "affine_cpu");

  testing::poison(out);
  sigmoid_forward_cpu<double>(a.data<double>(), out.data<double>(), n);
  expect_all_near(out.to_vector<double>(), ref_sigmoid, 1e-15, "sigmoid");

  testing::poison(out);
  fill_scaled_cpu<double>(g.data<double>(), out.data<double>(), n, 0.5);
  expect_all_near(out.to_vector<double>(), std::vector<double>(size_t(n), 0.5 * g.item()), 0,
                  "fill_scaled_cpu");

  Tensor s = Tensor::empty({}, DType::Float64);
  testing::poison(s);
  sum_cpu<double>(a.data<double>(), s.data<double>(), n, 1.0);
  expect_all_near({s.item()}, {ref_sum}, 1e-13, "sum_cpu");

  Tensor c = Tensor::empty({3, 1, 1}, DType::Float64);
  testing::poison(c);
  channel_sum_cpu<double>(a.data<double>(), nullptr, c.data<double>(), 2, 3, 20, 1.0);
  std::vector<double> ref(3, 0.0);
  for (size_t i = 0; i < av.size(); ++i) ref[(i / 20) % 3] += av[i];
  expect_all_near(c.to_vector<double>(), ref, 1e-14, "channel_sum_cpu");
}

// ---- gradients (float64, central differences) ---------------------------------------------------

TEST(ElementwiseGrad, BinaryOpsAllShapesAndBroadcastOrders) {
  uint64_t seed = 100;
  for (const auto& op : kBinaryOps)
    for (const auto& sp : kShapePairs) {
      BinaryFn fn = op.fn;
      auto r = check_grads(
          [fn](const std::vector<Tensor>& in) { return std::vector<Tensor>{fn(in[0], in[1])}; },
          {Tensor::randn(sp.a, seed, DType::Float64),
           Tensor::randn(sp.b, seed + 1, DType::Float64)});
      seed += 2;
      EXPECT_TRUE(r.passed) << op.name << " " << shape_str(sp.a) << " " << shape_str(sp.b) << "\n"
                            << r.message;
    }
}

TEST(ElementwiseGrad, OnlyOneOperandRequiresGrad) {
  for (const auto& op : kBinaryOps)
    for (int which = 0; which < 2; ++which) {
      Tensor a = Tensor::randn({2, 3, 4, 5}, 11, DType::Float64);
      Tensor b = Tensor::randn({3, 1, 1}, 12, DType::Float64);
      (which == 0 ? a : b).set_requires_grad();
      BinaryFn fn = op.fn;
      auto r = gradcheck(
          [fn](const std::vector<Tensor>& in) { return std::vector<Tensor>{fn(in[0], in[1])}; },
          {a, b});
      EXPECT_TRUE(r.passed) << op.name << " operand " << which << "\n" << r.message;
    }
}

TEST(ElementwiseGrad, ScalarOps) {
  Tensor x = Tensor::randn({3, 4, 5}, 20, DType::Float64);
  const std::vector<std::pair<const char*, GradcheckFunction>> fs = {
      {"add",
       [](const std::vector<Tensor>& in) { return std::vector<Tensor>{ops::add(in[0], 0.3)}; }},
      {"sub",
       [](const std::vector<Tensor>& in) { return std::vector<Tensor>{ops::sub(in[0], 0.3)}; }},
      {"mul",
       [](const std::vector<Tensor>& in) { return std::vector<Tensor>{ops::mul(in[0], -1.7)}; }},
      {"s - x", [](const std::vector<Tensor>& in) { return std::vector<Tensor>{2.0 - in[0]}; }},
      {"-x", [](const std::vector<Tensor>& in) { return std::vector<Tensor>{-in[0]}; }},
  };
  for (const auto& [name, f] : fs) {
    auto r = check_grads(f, {x.clone()});
    EXPECT_TRUE(r.passed) << name << "\n" << r.message;
  }
}

TEST(ElementwiseGrad, SigmoidSquareSumMean) {
  const std::vector<std::pair<const char*, GradcheckFunction>> fs = {
      {"sigmoid",
       [](const std::vector<Tensor>& in) { return std::vector<Tensor>{ops::sigmoid(in[0])}; }},
      {"square",
       [](const std::vector<Tensor>& in) { return std::vector<Tensor>{ops::square(in[0])}; }},
      {"sum", [](const std::vector<Tensor>& in) { return std::vector<Tensor>{ops::sum(in[0])}; }},
      {"mean", [](const std::vector<Tensor>& in) { return std::vector<Tensor>{ops::mean(in[0])}; }},
  };
  for (const auto& [name, f] : fs)
    for (const Shape& shape : {Shape{2, 3, 4, 5}, Shape{1}, Shape{}}) {
      auto r = check_grads(f, {randn_std(shape, 21, DType::Float64, 2.0)});
      EXPECT_TRUE(r.passed) << name << " " << shape_str(shape) << "\n" << r.message;
    }
}

TEST(ElementwiseGrad, TensorUsedTwice) {
  const std::vector<std::pair<const char*, GradcheckFunction>> unary = {
      {"x * x", [](const std::vector<Tensor>& in) { return std::vector<Tensor>{in[0] * in[0]}; }},
      {"x + x", [](const std::vector<Tensor>& in) { return std::vector<Tensor>{in[0] + in[0]}; }},
      {"x - x", [](const std::vector<Tensor>& in) { return std::vector<Tensor>{in[0] - in[0]}; }},
      {"x * sigmoid(x)",
       [](const std::vector<Tensor>& in) {
         return std::vector<Tensor>{in[0] * ops::sigmoid(in[0])};
       }},
  };
  for (const auto& [name, f] : unary) {
    auto r = check_grads(f, {Tensor::randn({2, 3, 4, 5}, 29, DType::Float64)});
    EXPECT_TRUE(r.passed) << name << "\n" << r.message;
  }
  // The (C,1,1) tensor on both sides of the NCHW one.
  const std::vector<std::pair<const char*, GradcheckFunction>> fs = {
      {"c * (x * c)",
       [](const std::vector<Tensor>& in) { return std::vector<Tensor>{in[1] * (in[0] * in[1])}; }},
      {"(c - x) + c",
       [](const std::vector<Tensor>& in) { return std::vector<Tensor>{(in[1] - in[0]) + in[1]}; }},
  };
  for (const auto& [name, f] : fs) {
    auto r = check_grads(f, {Tensor::randn({2, 3, 4, 5}, 30, DType::Float64),
                             Tensor::randn({3, 1, 1}, 31, DType::Float64)});
    EXPECT_TRUE(r.passed) << name << "\n" << r.message;
  }
  // x * x by hand: d sum(x * x) = 2 x.
  Tensor x = Tensor::randn({3, 4}, 32, DType::Float64);
  x.set_requires_grad();
  ops::sum(x * x).backward();
  ASSERT_TRUE(x.grad().defined());
  expect_all_near(x.grad().to_vector<double>(), ops::mul(x.detach(), 2.0).to_vector<double>(),
                  1e-15, "d sum(x*x)");
}

TEST(ElementwiseGrad, BiasScaleSigmoidMeanChain) {
  // The model's middle: mean(sigmoid((z + bias) * scale)), bias and scale (C,1,1).
  auto f = [](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{ops::mean(ops::sigmoid((in[0] + in[1]) * in[2]))};
  };
  auto r = check_grads(f, {Tensor::randn({2, 3, 5, 4}, 40, DType::Float64),
                           Tensor::randn({3, 1, 1}, 41, DType::Float64),
                           Tensor::randn({3, 1, 1}, 42, DType::Float64)});
  EXPECT_TRUE(r.passed) << r.message;
}

TEST(ElementwiseGrad, GradientsOfTwoPathsAccumulateIndependently) {
  // a + b hands the same upstream gradient to a and b; a later accumulation into a.grad must not
  // change b.grad.
  Tensor a = Tensor::randn({2, 3}, 50, DType::Float64);
  Tensor b = Tensor::randn({2, 3}, 51, DType::Float64);
  a.set_requires_grad();
  b.set_requires_grad();
  Tensor y2 = ops::mul(a, 3.0);
  Tensor y1 = ops::add(a, b);
  Tensor loss = ops::add(ops::sum(y2), ops::sum(y1));
  loss.backward();
  expect_all_near(a.grad().to_vector<double>(), std::vector<double>(6, 4.0), 0, "a.grad");
  expect_all_near(b.grad().to_vector<double>(), std::vector<double>(6, 1.0), 0, "b.grad");
}

TEST(ElementwiseGrad, RecordsOnlyWhenNeeded) {
  autograd::clear_tape();
  Tensor a = Tensor::randn({2, 3, 4, 5}, 60, DType::Float64);
  Tensor b = Tensor::randn({3, 1, 1}, 61, DType::Float64);
  Tensor y = ops::sigmoid(ops::sum(a * b + 1.0));
  EXPECT_EQ(autograd::tape_size(), 0u);
  EXPECT_FALSE(y.requires_grad());
  b.set_requires_grad();
  {
    autograd::NoGradGuard guard;
    Tensor z = ops::mean(ops::square(a * b));
    EXPECT_EQ(autograd::tape_size(), 0u);
  }
  Tensor z = ops::mean(ops::square(a * b));
  EXPECT_EQ(autograd::tape_size(), 3u);
  EXPECT_TRUE(z.requires_grad());
  z.backward();
  EXPECT_EQ(autograd::tape_size(), 0u);
  ASSERT_TRUE(b.grad().defined());
  EXPECT_EQ(b.grad().shape(), (Shape{3, 1, 1}));
  EXPECT_FALSE(a.grad().defined());
}

TEST(ElementwiseGrad, ModifyingASavedTensorMakesBackwardThrow) {
  Tensor x = Tensor::randn({4, 5}, 70, DType::Float64);
  x.set_requires_grad();
  Tensor y = ops::sigmoid(x);
  Tensor loss = ops::sum(y);
  y.detach().fill_(0.25);  // the saved output
  try {
    loss.backward();
    ADD_FAILURE() << "backward after an in-place change of a saved tensor did not throw";
  } catch (const Error& e) {
    EXPECT_CONTAINS(e.what(), "sigmoid");
  }
  autograd::clear_tape();
}

// ---- bad inputs ---------------------------------------------------------------------------------

TEST(ElementwiseErrors, BadBroadcastShapes) {
  Tensor x = Tensor::randn({2, 3, 5, 5}, 1);
  Tensor c4 = Tensor::randn({4, 1, 1}, 2);
  std::string m = error_of([&] { ops::add(x, c4); });
  EXPECT_CONTAINS(m, "add: cannot broadcast [4, 1, 1] against [2, 3, 5, 5]");
  EXPECT_CONTAINS(m, "sizes 3 and 4 at dimension -3");
  m = error_of([&] { ops::sub(c4, x); });
  EXPECT_CONTAINS(m, "sub: cannot broadcast [4, 1, 1] against [2, 3, 5, 5]");
  m = error_of([&] { ops::mul(x, Tensor::randn({3, 1}, 3)); });
  EXPECT_CONTAINS(m, "mul: cannot broadcast [3, 1] against [2, 3, 5, 5]");
  m = error_of([&] { ops::add(Tensor::randn({2, 3}, 4), Tensor::randn({3, 2}, 5)); });
  EXPECT_CONTAINS(m, "add: cannot broadcast");
  EXPECT_CONTAINS(m, "[3, 2]");
  EXPECT_CONTAINS(m, "[2, 3]");
  m = error_of([&] { ops::add(Tensor::randn({3, 1, 1}, 6), Tensor::randn({2, 3, 4}, 7)); });
  EXPECT_CONTAINS(m, "add: cannot broadcast");
  EXPECT_CONTAINS(m, "neither is 1");
}

TEST(ElementwiseErrors, DtypeMismatch) {
  Tensor a = Tensor::randn({2, 3}, 1, DType::Float32);
  Tensor b = Tensor::randn({2, 3}, 2, DType::Float64);
  const std::string m = error_of([&] { ops::mul(a, b); });
  EXPECT_CONTAINS(m, "mul");
  EXPECT_CONTAINS(m, "same dtype");
  EXPECT_CONTAINS(m, "float32");
  EXPECT_CONTAINS(m, "float64");
}

TEST(ElementwiseErrors, EmptyAndUndefinedTensors) {
  Tensor e = Tensor::empty({0, 3});
  Tensor x = Tensor::randn({0, 3}, 1);
  std::string m = error_of([&] { ops::add(e, x); });
  EXPECT_CONTAINS(m, "add: expected a non-empty tensor");
  EXPECT_CONTAINS(m, "[0, 3]");
  m = error_of([&] { ops::sigmoid(e); });
  EXPECT_CONTAINS(m, "sigmoid: expected a non-empty tensor");
  m = error_of([&] { ops::mean(e); });
  EXPECT_CONTAINS(m, "mean: expected a non-empty tensor");
  m = error_of([&] { ops::mul(e, 2.0); });
  EXPECT_CONTAINS(m, "mul: expected a non-empty tensor");
  m = error_of([&] { ops::sub(Tensor::randn({2}, 1), Tensor()); });
  EXPECT_CONTAINS(m, "sub: expected a defined tensor as b");
  m = error_of([&] { ops::sum(Tensor()); });
  EXPECT_CONTAINS(m, "sum: expected a defined tensor");
  m = error_of([&] { ops::square(Tensor()); });
  EXPECT_CONTAINS(m, "square: expected a defined tensor");
}

TEST(ElementwiseErrors, DeviceMismatch) {
  TG_SKIP_WITHOUT_GPU();
  Tensor a = Tensor::randn({2, 3}, 1);
  Tensor b = Tensor::randn({2, 3}, 2, DType::Float32, Device::CUDA);
  const std::string m = error_of([&] { ops::add(a, b); });
  EXPECT_CONTAINS(m, "add: expected operands on the same device");
  EXPECT_CONTAINS(m, "cpu");
  EXPECT_CONTAINS(m, "cuda");
}

// ---- CUDA against the CPU -----------------------------------------------------------------------

using TensorFn = std::function<Tensor(const std::vector<Tensor>&)>;

struct RunResult {
  Tensor out;
  std::vector<Tensor> grads;
};

// Runs f on copies of base (made leaves that require grad) on device, then backward with cot.
RunResult run_on(Device device, const TensorFn& f, const std::vector<Tensor>& base,
                 const Tensor& cot) {
  std::vector<Tensor> in;
  for (const auto& b : base) {
    Tensor t = device == Device::CPU ? b.clone() : b.to(device);
    t.set_requires_grad();
    in.push_back(t);
  }
  RunResult r;
  r.out = f(in);
  r.out.backward(device == Device::CPU ? cot.clone() : cot.to(device));
  for (const auto& t : in) r.grads.push_back(t.grad());
  return r;
}

// Tolerances (relative L2): float32 allows a few ulp (expf, FMA contraction); float64 allows for
// the different summation orders of the CPU (sequential) and CUDA (tree) reductions.
double cuda_tol(DType dt) { return dt == DType::Float32 ? 1e-6 : 1e-11; }

void expect_cuda_matches_cpu(const std::string& what, const TensorFn& f,
                             const std::vector<Tensor>& base) {
  const DType dt = base[0].dtype();
  const double tol = cuda_tol(dt);
  Tensor probe = f(base);
  Tensor cot = Tensor::randn(probe.shape(), 999, dt);
  RunResult cpu = run_on(Device::CPU, f, base, cot);
  RunResult gpu = run_on(Device::CUDA, f, base, cot);
  EXPECT_TRUE(gpu.out.is_cuda()) << what;
  EXPECT_EQ(gpu.out.shape(), cpu.out.shape()) << what;
  EXPECT_LE(testing::rel_l2(gpu.out, cpu.out), tol) << what << " forward";
  for (size_t i = 0; i < base.size(); ++i) {
    ASSERT_TRUE(gpu.grads[i].defined()) << what << " grad " << i;
    EXPECT_EQ(gpu.grads[i].shape(), base[i].shape()) << what << " grad " << i;
    EXPECT_LE(testing::rel_l2(gpu.grads[i], cpu.grads[i]), tol) << what << " grad " << i;
  }
}

TEST(ElementwiseCuda, BinaryOpsMatchCpuOnOddShapes) {
  TG_SKIP_WITHOUT_GPU();
  const std::vector<ShapePair> cases = {
      {{3, 5, 7, 9}, {3, 5, 7, 9}},  {{3, 5, 37, 41}, {5, 1, 1}}, {{5, 1, 1}, {3, 5, 37, 41}},
      {{1, 2, 300, 301}, {2, 1, 1}}, {{1, 1, 1, 1}, {1, 1, 1}},   {{}, {}},
      {{1000003}, {1000003}},
  };
  uint64_t seed = 500;
  for (DType dt : kDTypes)
    for (const auto& op : kBinaryOps)
      for (const auto& sp : cases) {
        BinaryFn fn = op.fn;
        expect_cuda_matches_cpu(std::string(op.name) + " " + shape_str(sp.a) + " " +
                                    shape_str(sp.b) + " " + dtype_name(dt),
                                [fn](const std::vector<Tensor>& in) { return fn(in[0], in[1]); },
                                {Tensor::randn(sp.a, seed, dt), Tensor::randn(sp.b, seed + 1, dt)});
        seed += 2;
      }
}

TEST(ElementwiseCuda, UnaryOpsAndReductionsMatchCpuOnOddShapes) {
  TG_SKIP_WITHOUT_GPU();
  const std::vector<std::pair<const char*, TensorFn>> fs = {
      {"add(x, s)", [](const std::vector<Tensor>& in) { return ops::add(in[0], 0.3); }},
      {"sub(x, s)", [](const std::vector<Tensor>& in) { return ops::sub(in[0], 0.3); }},
      {"mul(x, s)", [](const std::vector<Tensor>& in) { return ops::mul(in[0], -1.7); }},
      {"s - x", [](const std::vector<Tensor>& in) { return 2.0 - in[0]; }},
      {"sigmoid", [](const std::vector<Tensor>& in) { return ops::sigmoid(in[0]); }},
      {"square", [](const std::vector<Tensor>& in) { return ops::square(in[0]); }},
      {"sum", [](const std::vector<Tensor>& in) { return ops::sum(in[0]); }},
      {"mean", [](const std::vector<Tensor>& in) { return ops::mean(in[0]); }},
      {"x * x", [](const std::vector<Tensor>& in) { return in[0] * in[0]; }},
  };
  const std::vector<Shape> shapes = {{3, 5, 7, 9}, {1}, {}, {2, 3, 333, 257}, {4097}};
  uint64_t seed = 700;
  for (DType dt : kDTypes)
    for (const auto& [name, f] : fs)
      for (const auto& shape : shapes)
        expect_cuda_matches_cpu(std::string(name) + " " + shape_str(shape) + " " + dtype_name(dt),
                                f, {randn_std(shape, seed++, dt, 2.0)});
}

TEST(ElementwiseCuda, ReductionsAreDeterministic) {
  TG_SKIP_WITHOUT_GPU();
  for (DType dt : kDTypes) {
    Tensor x = Tensor::randn({3, 7, 211, 307}, 800, dt, Device::CUDA);
    Tensor c = Tensor::randn({7, 1, 1}, 801, dt, Device::CUDA);
    Tensor g = Tensor::randn(x.shape(), 802, dt, Device::CUDA);
    std::vector<std::vector<double>> runs;
    for (int rep = 0; rep < 2; ++rep) {
      Tensor xl = x.clone(), cl = c.clone();
      xl.set_requires_grad();
      cl.set_requires_grad();
      Tensor s = ops::sum(xl * cl);
      Tensor m = ops::mean(xl);
      (xl * cl).backward(g);
      std::vector<double> v = cl.grad().to_vector<double>();
      v.push_back(s.item());
      v.push_back(m.item());
      runs.push_back(v);
      autograd::clear_tape();
    }
    EXPECT_EQ(runs[0], runs[1]) << dtype_name(dt);
  }
}

#ifdef TG_WITH_CUDA
// The raw CUDA kernels write every element of a poisoned output.
TEST(ElementwiseCuda, KernelsWriteEveryOutputElement) {
  TG_SKIP_WITHOUT_GPU();
  using namespace ops::detail;
  for (DType dt : kDTypes) {
    dispatch_dtype(dt, [&](auto tag) {
      using T = decltype(tag);
      Tensor a = Tensor::randn({2, 3, 45, 51}, 900, dt);
      Tensor b = Tensor::randn({3, 1, 1}, 901, dt);
      Tensor g = Tensor::randn({}, 902, dt);
      Tensor ad = a.cuda(), bd = b.cuda(), gd = g.cuda();
      const int64_t n = a.numel();
      const double tol = cuda_tol(dt);
      Tensor out = Tensor::empty(a.shape(), dt, Device::CUDA);

      testing::poison(out);
      binary_cuda<T>(BinaryOp::Mul, ad.data<T>(), bd.data<T>(), out.data<T>(),
                     BinaryParams{n, 3, 45 * 51, false, true}, cuda::stream());
      expect_all_near(out.to_vector<double>(), ref_binary('*', a, b), tol, "binary_cuda");

      testing::poison(out);
      affine_cuda<T>(ad.data<T>(), out.data<T>(), n, 1.0, -0.5, cuda::stream());
      expect_all_near(out.to_vector<double>(), ops::sub(a, 0.5).to_vector<double>(), tol,
                      "affine_cuda");

      testing::poison(out);
      sigmoid_forward_cuda<T>(ad.data<T>(), out.data<T>(), n, cuda::stream());
      expect_all_near(out.to_vector<double>(), ops::sigmoid(a).to_vector<double>(), tol,
                      "sigmoid_forward_cuda");

      testing::poison(out);
      fill_scaled_cuda<T>(gd.data<T>(), out.data<T>(), n, 0.5, cuda::stream());
      expect_all_near(out.to_vector<double>(), std::vector<double>(size_t(n), 0.5 * g.item()), tol,
                      "fill_scaled_cuda");

      Tensor s = Tensor::empty({}, dt, Device::CUDA);
      Tensor partials = Tensor::empty({reduce_blocks(n)}, DType::Float64, Device::CUDA);
      testing::poison(s);
      sum_cuda<T>(ad.data<T>(), s.data<T>(), n, 1.0, partials.data<double>(), cuda::stream());
      expect_all_near({s.item()}, {ops::sum(a).item()}, tol, "sum_cuda");

      Tensor c = Tensor::empty({3, 1, 1}, dt, Device::CUDA);
      Tensor cpart =
          Tensor::empty({3 * channel_reduce_chunks(3, 2 * 45 * 51)}, DType::Float64, Device::CUDA);
      testing::poison(c);
      channel_sum_cuda<T>(ad.data<T>(), ad.data<T>(), c.data<T>(), 2, 3, 45 * 51, 1.0,
                          cpart.data<double>(), cuda::stream());
      Tensor cref = Tensor::empty({3, 1, 1}, dt);
      channel_sum_cpu<T>(a.data<T>(), a.data<T>(), cref.data<T>(), 2, 3, 45 * 51, 1.0);
      expect_all_near(c.to_vector<double>(), cref.to_vector<double>(), tol, "channel_sum_cuda");
    });
  }
}
#endif

}  // namespace
}  // namespace tg
