// Tests of tg::optim::SGD: literal hand-computed steps, every option against a plain reference over
// three steps, skipped parameters, invalid options and parameters, state save/load, and CUDA against
// the CPU (GPU tests skip without a device).
#include "optim/sgd.h"

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/memory.h"
#include "test_utils.h"

namespace tg::optim {
namespace {

using tg::testing::max_abs_diff;
using tg::testing::rel_l2;

/// A leaf parameter with N(0, 1) values (never zero in practice) that requires grad.
Tensor leaf(const Shape& shape, uint64_t seed, DType dtype = DType::Float64,
            Device device = Device::CPU) {
  Tensor t = Tensor::randn(shape, seed, dtype, device);
  t.set_requires_grad();
  return t;
}

Tensor scalar_leaf(double value) {
  Tensor t = Tensor::from_vector<double>({value}, {1});
  t.set_requires_grad();
  return t;
}

void set_scalar_grad(Tensor& p, double g) { p.set_grad(Tensor::from_vector<double>({g}, {1})); }

void expect_throw_with(const std::function<void()>& f, const std::vector<std::string>& words) {
  try {
    f();
    ADD_FAILURE() << "expected tg::Error containing '" << words.front() << "'";
  } catch (const Error& e) {
    for (const auto& w : words)
      EXPECT_NE(std::string(e.what()).find(w), std::string::npos)
          << "message '" << e.what() << "' lacks '" << w << "'";
  }
}

/// torch.optim.SGD written out plainly, in T, per parameter; a null gradient skips the parameter.
template <typename T>
struct ReferenceSgd {
  SGDOptions o;
  std::map<size_t, std::vector<T>> bufs;

  void step(std::vector<std::vector<T>>& params, const std::vector<const std::vector<T>*>& grads) {
    for (size_t i = 0; i < params.size(); ++i) {
      if (grads[i] == nullptr) continue;
      std::vector<T>& p = params[i];
      const bool first = bufs.count(i) == 0;
      if (o.momentum != 0 && first) bufs[i].assign(p.size(), T(0));
      for (size_t j = 0; j < p.size(); ++j) {
        T g = (*grads[i])[j];
        if (o.weight_decay != 0) g = g + T(o.weight_decay) * p[j];
        if (o.momentum != 0) {
          T& b = bufs[i][j];
          if (first) {
            b = g;
          } else {
            b = T(o.momentum) * b + T(1.0 - o.dampening) * g;
          }
          if (o.nesterov) {
            g = g + T(o.momentum) * b;
          } else {
            g = b;
          }
        }
        p[j] = p[j] - T(o.lr) * g;
      }
    }
  }
};

const std::vector<Shape> kShapes = {{3, 5}, {7}, {2, 3, 1, 3}};

Tensor find_buffer(const SGDState& s, const std::string& name) {
  for (const auto& [n, b] : s.momentum_buffers)
    if (n == name) return b;
  return Tensor();
}

// ---- literal, hand-computed steps ----------------------------------------------------------------

TEST(SGD, HandComputedPlain) {
  Tensor p = scalar_leaf(2.0);
  SGD opt({p}, SGDOptions{0.1});
  set_scalar_grad(p, 1.5);
  opt.step();  // 2 - 0.1 * 1.5
  EXPECT_DOUBLE_EQ(p.item(), 1.85);
  set_scalar_grad(p, -4.0);
  opt.step();  // 1.85 + 0.4
  EXPECT_DOUBLE_EQ(p.item(), 2.25);
  EXPECT_EQ(opt.step_count(), 2);
  EXPECT_TRUE(opt.state().momentum_buffers.empty());
}

// set_lr takes effect on the next step, and momentum buffers carry over unchanged.
TEST(SGD, SetLrChangesTheNextStep) {
  Tensor p = scalar_leaf(1.0);
  SGD opt({p}, SGDOptions{0.1, 0.5});
  set_scalar_grad(p, 2.0);
  opt.step();  // buf = 2; p = 1 - 0.1 * 2
  EXPECT_DOUBLE_EQ(p.item(), 0.8);
  opt.set_lr(0.25);
  set_scalar_grad(p, 1.0);
  opt.step();  // buf = 0.5 * 2 + 1 = 2; p = 0.8 - 0.25 * 2
  EXPECT_DOUBLE_EQ(p.item(), 0.3);
  opt.set_lr(0.0);
  opt.step();  // lr 0: nothing moves, though the buffer does (0.5 * 2 + 1 = 2)
  EXPECT_DOUBLE_EQ(p.item(), 0.3);
  EXPECT_DOUBLE_EQ(find_buffer(opt.state(), "0").item(), 2.0);
}

TEST(SGD, HandComputedWeightDecay) {
  Tensor p = scalar_leaf(2.0);
  SGDOptions o;
  o.lr = 0.1;
  o.weight_decay = 0.5;
  SGD opt({p}, o);
  set_scalar_grad(p, 1.0);
  opt.step();  // g = 1 + 0.5 * 2 = 2; p = 2 - 0.2
  EXPECT_DOUBLE_EQ(p.item(), 1.8);
}

TEST(SGD, HandComputedMomentumFirstAndSecondStep) {
  Tensor p = scalar_leaf(2.0);
  SGDOptions o;
  o.lr = 0.5;
  o.momentum = 0.9;
  SGD opt({p}, o);
  set_scalar_grad(p, 1.0);
  opt.step();  // buf = 1; p = 2 - 0.5
  EXPECT_DOUBLE_EQ(p.item(), 1.5);
  EXPECT_DOUBLE_EQ(find_buffer(opt.state(), "0").item(), 1.0);
  set_scalar_grad(p, 3.0);
  opt.step();  // buf = 0.9 + 3 = 3.9; p = 1.5 - 1.95
  EXPECT_DOUBLE_EQ(p.item(), -0.45);
  EXPECT_DOUBLE_EQ(find_buffer(opt.state(), "0").item(), 3.9);
}

TEST(SGD, HandComputedDampening) {
  Tensor p = scalar_leaf(1.0);
  SGDOptions o;
  o.lr = 1.0;
  o.momentum = 0.5;
  o.dampening = 0.5;
  SGD opt({p}, o);
  set_scalar_grad(p, 2.0);
  opt.step();  // first step: buf = g = 2 (no dampening); p = 1 - 2
  EXPECT_DOUBLE_EQ(p.item(), -1.0);
  set_scalar_grad(p, 4.0);
  opt.step();  // buf = 0.5 * 2 + 0.5 * 4 = 3; p = -1 - 3
  EXPECT_DOUBLE_EQ(p.item(), -4.0);
}

TEST(SGD, HandComputedNesterov) {
  Tensor p = scalar_leaf(1.0);
  SGDOptions o;
  o.lr = 0.1;
  o.momentum = 0.5;
  o.nesterov = true;
  SGD opt({p}, o);
  set_scalar_grad(p, 2.0);
  opt.step();  // buf = 2; g = 2 + 0.5 * 2 = 3; p = 1 - 0.3
  EXPECT_DOUBLE_EQ(p.item(), 0.7);
  set_scalar_grad(p, 1.0);
  opt.step();  // buf = 0.5 * 2 + 1 = 2; g = 1 + 0.5 * 2 = 2; p = 0.7 - 0.2
  EXPECT_DOUBLE_EQ(p.item(), 0.5);
}

TEST(SGD, HandComputedAllTogether) {
  Tensor p = scalar_leaf(2.0);
  SGDOptions o;
  o.lr = 0.25;
  o.momentum = 0.5;
  o.dampening = 0.5;
  o.weight_decay = 0.25;
  SGD opt({p}, o);
  set_scalar_grad(p, 1.0);
  opt.step();  // g = 1 + 0.5 = 1.5; buf = 1.5; p = 2 - 0.375
  EXPECT_DOUBLE_EQ(p.item(), 1.625);
  set_scalar_grad(p, 3.0);
  opt.step();  // g = 3 + 0.40625 = 3.40625; buf = 0.75 + 1.703125 = 2.453125; p = 1.625 - 0.61328125
  EXPECT_DOUBLE_EQ(p.item(), 1.01171875);
  EXPECT_DOUBLE_EQ(find_buffer(opt.state(), "0").item(), 2.453125);
}

// ---- every option against the reference, three steps ---------------------------------------------

struct OptionCase {
  const char* name;
  SGDOptions o;
};
void PrintTo(const OptionCase& c, std::ostream* os) { *os << c.name; }

SGDOptions make(double lr, double momentum, double dampening, bool nesterov, double wd) {
  SGDOptions o;
  o.lr = lr;
  o.momentum = momentum;
  o.dampening = dampening;
  o.nesterov = nesterov;
  o.weight_decay = wd;
  return o;
}

const OptionCase kCases[] = {
    {"plain", make(0.1, 0, 0, false, 0)},
    {"weight_decay", make(0.05, 0, 0, false, 0.3)},
    {"momentum", make(0.1, 0.9, 0, false, 0)},
    {"dampening", make(0.1, 0.8, 0.3, false, 0)},
    {"nesterov", make(0.07, 0.9, 0, true, 0)},
    {"momentum_dampening_weight_decay", make(0.03, 0.7, 0.2, false, 0.1)},
    {"nesterov_weight_decay", make(0.2, 0.6, 0, true, 0.05)},
};

class SGDOptionsTest : public ::testing::TestWithParam<OptionCase> {};

template <typename T>
void run_against_reference(const SGDOptions& o, DType dtype, double tol) {
  std::vector<Tensor> params;
  std::vector<std::vector<T>> ref_params;
  for (size_t i = 0; i < kShapes.size(); ++i) {
    params.push_back(leaf(kShapes[i], 10 + i, dtype));
    ref_params.push_back(params.back().template to_vector<T>());
  }
  SGD opt(params, o);
  ReferenceSgd<T> ref{o, {}};
  for (int s = 0; s < 3; ++s) {
    std::vector<std::vector<T>> grads;
    for (size_t i = 0; i < params.size(); ++i) {
      Tensor g = Tensor::randn(kShapes[i], 100 * (s + 1) + i, dtype);
      params[i].set_grad(g);
      grads.push_back(g.template to_vector<T>());
    }
    opt.step();
    ref.step(ref_params, {&grads[0], &grads[1], &grads[2]});
    SGDState st = opt.state();
    EXPECT_EQ(st.step, s + 1);
    EXPECT_EQ(st.momentum_buffers.size(), o.momentum != 0 ? params.size() : 0u);
    for (size_t i = 0; i < params.size(); ++i) {
      Tensor expected = Tensor::from_vector<T>(ref_params[i], kShapes[i]);
      EXPECT_LE(rel_l2(params[i], expected), tol) << "step " << s << ", param " << i;
      if (o.momentum != 0) {
        Tensor buf = find_buffer(st, std::to_string(i));
        ASSERT_TRUE(buf.defined()) << "param " << i;
        Tensor expected_buf = Tensor::from_vector<T>(ref.bufs[i], kShapes[i]);
        EXPECT_LE(rel_l2(buf, expected_buf), tol) << "buffer, step " << s << ", param " << i;
      }
    }
  }
}

TEST_P(SGDOptionsTest, MatchesReferenceFloat64) {
  run_against_reference<double>(GetParam().o, DType::Float64, 1e-14);
}

TEST_P(SGDOptionsTest, MatchesReferenceFloat32) {
  run_against_reference<float>(GetParam().o, DType::Float32, 1e-6);
}

INSTANTIATE_TEST_SUITE_P(AllOptions, SGDOptionsTest, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<OptionCase>& info) {
                           return std::string(info.param.name);
                         });

// ---- parameters without a gradient, versions, zero_grad ------------------------------------------

TEST(SGD, SkipsParamsWithoutGradAndStartsTheirBufferLater) {
  const SGDOptions o = make(0.1, 0.9, 0.1, false, 0.01);
  std::vector<Tensor> params;
  std::vector<std::vector<double>> ref_params;
  for (size_t i = 0; i < kShapes.size(); ++i) {
    params.push_back(leaf(kShapes[i], 20 + i));
    ref_params.push_back(params.back().to_vector<double>());
  }
  SGD opt(params, o);
  ReferenceSgd<double> ref{o, {}};
  for (int s = 0; s < 3; ++s) {
    std::vector<std::vector<double>> grads(params.size());
    std::vector<const std::vector<double>*> gp(params.size(), nullptr);
    std::vector<uint64_t> versions;
    for (size_t i = 0; i < params.size(); ++i) {
      versions.push_back(params[i].version());
      // Parameter 1 has no gradient at the first step.
      if (i == 1 && s == 0) {
        params[i].set_grad(Tensor());
        continue;
      }
      Tensor g = Tensor::randn(kShapes[i], 300 + 10 * s + i, DType::Float64);
      params[i].set_grad(g);
      grads[i] = g.to_vector<double>();
      gp[i] = &grads[i];
    }
    const std::vector<double> before1 = params[1].to_vector<double>();
    opt.step();
    ref.step(ref_params, gp);
    for (size_t i = 0; i < params.size(); ++i) {
      Tensor expected = Tensor::from_vector<double>(ref_params[i], kShapes[i]);
      EXPECT_LE(rel_l2(params[i], expected), 1e-14) << "step " << s << ", param " << i;
      const bool updated = !(i == 1 && s == 0);
      EXPECT_EQ(params[i].version() > versions[i], updated) << "step " << s << ", param " << i;
    }
    SGDState st = opt.state();
    if (s == 0) {
      EXPECT_EQ(params[1].to_vector<double>(), before1);
      EXPECT_EQ(st.momentum_buffers.size(), 2u);
      EXPECT_FALSE(find_buffer(st, "1").defined());
    } else {
      EXPECT_EQ(st.momentum_buffers.size(), 3u);
      Tensor expected_buf = Tensor::from_vector<double>(ref.bufs[1], kShapes[1]);
      EXPECT_LE(rel_l2(find_buffer(st, "1"), expected_buf), 1e-14) << "step " << s;
    }
  }
}

TEST(SGD, ZeroGradSetToNoneAndZeros) {
  Tensor a = leaf({4, 3}, 1), b = leaf({5}, 2);
  SGD opt({a, b}, make(0.1, 0.9, 0, false, 0));
  a.set_grad(Tensor::randn({4, 3}, 3, DType::Float64));
  b.set_grad(Tensor::randn({5}, 4, DType::Float64));

  Tensor bg = b.grad();
  opt.zero_grad(/*set_to_none=*/false);
  ASSERT_TRUE(a.grad().defined());
  EXPECT_TRUE(b.grad().same(bg));  // filled in place, not replaced
  EXPECT_EQ(max_abs_diff(a.grad(), Tensor::zeros({4, 3}, DType::Float64)), 0.0);
  EXPECT_EQ(max_abs_diff(b.grad(), Tensor::zeros({5}, DType::Float64)), 0.0);

  opt.zero_grad();
  EXPECT_FALSE(a.grad().defined());
  EXPECT_FALSE(b.grad().defined());
  const auto va = a.to_vector<double>();
  opt.step();  // nothing to update
  EXPECT_EQ(a.to_vector<double>(), va);
  EXPECT_TRUE(opt.state().momentum_buffers.empty());
}

TEST(SGD, MixedDtypesOnCpu) {
  const SGDOptions o = make(0.1, 0.9, 0.2, false, 0.01);
  Tensor a = leaf({6, 5}, 5, DType::Float32), b = leaf({9}, 6, DType::Float64);
  std::vector<std::vector<float>> ra = {a.to_vector<float>()};
  std::vector<std::vector<double>> rb = {b.to_vector<double>()};
  SGD opt({a, b}, o);
  ReferenceSgd<float> refa{o, {}};
  ReferenceSgd<double> refb{o, {}};
  for (int s = 0; s < 3; ++s) {
    Tensor ga = Tensor::randn({6, 5}, 40 + s, DType::Float32);
    Tensor gb = Tensor::randn({9}, 50 + s, DType::Float64);
    a.set_grad(ga);
    b.set_grad(gb);
    opt.step();
    auto va = ga.to_vector<float>();
    auto vb = gb.to_vector<double>();
    refa.step(ra, {&va});
    refb.step(rb, {&vb});
  }
  EXPECT_LE(rel_l2(a, Tensor::from_vector<float>(ra[0], {6, 5})), 1e-6);
  EXPECT_LE(rel_l2(b, Tensor::from_vector<double>(rb[0], {9})), 1e-14);
}

// ---- invalid options and parameters --------------------------------------------------------------

TEST(SGD, InvalidOptions) {
  Tensor p = leaf({3}, 1);
  expect_throw_with([&] { SGD({p}, make(-0.1, 0, 0, false, 0)); },
                    {"SGD", "invalid learning rate", "-0.1", "lr >= 0"});
  expect_throw_with([&] { SGD({p}, make(0.1, -1, 0, false, 0)); },
                    {"SGD", "invalid momentum", "-1", "momentum >= 0"});
  expect_throw_with([&] { SGD({p}, make(0.1, 0, 0, false, -0.5)); },
                    {"SGD", "invalid weight_decay", "-0.5", "weight_decay >= 0"});
  expect_throw_with([&] { SGD({p}, make(0.1, 0, 0, true, 0)); },
                    {"SGD", "nesterov", "momentum", "dampening"});
  expect_throw_with([&] { SGD({p}, make(0.1, 0.9, 0.1, true, 0)); },
                    {"SGD", "nesterov", "zero dampening", "0.1"});
  SGD ok({p}, make(0.1, 0.9, 0, true, 0));  // nesterov with momentum and no dampening is fine
  expect_throw_with([&] { ok.set_lr(-1); }, {"SGD", "learning rate", "lr >= 0"});
  ok.set_lr(0.5);
  EXPECT_EQ(ok.options().lr, 0.5);
}

struct PassThroughNode : autograd::Node {
  const char* name() const override { return "pass_through"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override { return {g[0]}; }
};

TEST(SGD, InvalidParams) {
  Tensor p = leaf({3}, 1);
  expect_throw_with([&] { SGD(std::vector<Tensor>{}, SGDOptions{}); }, {"SGD", "parameter", "empty"});
  Tensor frozen = Tensor::randn({3}, 2, DType::Float64);
  expect_throw_with([&] { SGD({p, frozen}, SGDOptions{}); }, {"SGD", "'1'", "require grad"});
  expect_throw_with([&] { SGD({p, Tensor()}, SGDOptions{}); }, {"SGD", "'1'", "undefined"});
  expect_throw_with([&] { SGD({p, p}, SGDOptions{}); }, {"SGD", "'1'", "same tensor"});
  Tensor q = leaf({2}, 3);
  expect_throw_with([&] { SGD({{"w", p}, {"w", q}}, SGDOptions{}); }, {"SGD", "'w'", "twice"});
  expect_throw_with([&] { SGD({{"w", p}, {"", q}}, SGDOptions{}); }, {"SGD", "empty name"});

  Tensor y = Tensor::zeros({3}, DType::Float64);
  autograd::record(std::make_shared<PassThroughNode>(), {p}, {y});
  expect_throw_with([&] { SGD({{"w", p}, {"y", y}}, SGDOptions{}); }, {"SGD", "'y'", "leaf"});
  autograd::clear_tape();
}

TEST(SGD, MismatchedGradientRefusedBeforeAnyUpdate) {
  Tensor a = leaf({4}, 1), b = leaf({2, 2}, 2);
  SGD opt({{"a", a}, {"b", b}}, SGDOptions{});
  a.set_grad(Tensor::randn({4}, 3, DType::Float64));
  // core's set_grad refuses a bad gradient; plant one directly, as a buggy backward could.
  b.impl()->grad = Tensor::randn({3}, 4, DType::Float64).impl();
  const auto va = a.to_vector<double>();
  expect_throw_with([&] { opt.step(); }, {"SGD", "gradient", "'b'", "[3]", "[2, 2]"});
  EXPECT_EQ(a.to_vector<double>(), va);
  EXPECT_EQ(opt.step_count(), 0);
}

// ---- state ---------------------------------------------------------------------------------------

/// Runs `steps` steps on params with gradients drawn from seed_base + 10 * step + i.
void run_steps(SGD& opt, std::vector<Tensor>& params, int first, int steps) {
  for (int s = first; s < first + steps; ++s) {
    for (size_t i = 0; i < params.size(); ++i)
      params[i].set_grad(Tensor::randn(params[i].shape(), 1000 + 10 * s + i, params[i].dtype(),
                                       params[i].device()));
    opt.step();
  }
}

std::vector<Tensor> copy_params(const std::vector<Tensor>& params, Device device) {
  std::vector<Tensor> out;
  for (const Tensor& p : params) {
    Tensor c = p.detach().to(device).clone();
    c.set_requires_grad();
    out.push_back(c);
  }
  return out;
}

TEST(SGD, StateRoundTripContinuesIdentically) {
  const SGDOptions o = make(0.05, 0.9, 0.1, false, 0.02);
  std::vector<Tensor> a;
  for (size_t i = 0; i < kShapes.size(); ++i) a.push_back(leaf(kShapes[i], 60 + i));
  const std::vector<std::string> names = {"conv.weight", "bias", "scale"};
  std::vector<std::pair<std::string, Tensor>> named;
  for (size_t i = 0; i < a.size(); ++i) named.emplace_back(names[i], a[i]);
  SGD opt_a(named, o);
  run_steps(opt_a, a, 0, 2);

  SGDState saved = opt_a.state();
  EXPECT_EQ(saved.step, 2);
  ASSERT_EQ(saved.momentum_buffers.size(), 3u);
  for (size_t i = 0; i < names.size(); ++i) EXPECT_EQ(saved.momentum_buffers[i].first, names[i]);
  // state() hands out copies.
  const auto buf0 = saved.momentum_buffers[0].second.to_vector<double>();
  saved.momentum_buffers[0].second.fill_(7.0);
  EXPECT_EQ(opt_a.state().momentum_buffers[0].second.to_vector<double>(), buf0);
  saved = opt_a.state();

  std::vector<Tensor> b = copy_params(a, Device::CPU);
  std::vector<std::pair<std::string, Tensor>> named_b;
  for (size_t i = 0; i < b.size(); ++i) named_b.emplace_back(names[i], b[i]);
  SGD opt_b(named_b, o);
  opt_b.load_state(saved);
  EXPECT_EQ(opt_b.step_count(), 2);

  run_steps(opt_a, a, 2, 2);
  run_steps(opt_b, b, 2, 2);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(max_abs_diff(a[i], b[i]), 0.0) << names[i];

  // Without loading, the continuation would differ (the test can fail).
  std::vector<Tensor> c = copy_params(b, Device::CPU);
  SGD opt_c(c, o);
  run_steps(opt_a, a, 4, 1);
  run_steps(opt_c, c, 4, 1);
  EXPECT_GT(max_abs_diff(a[0], c[0]), 1e-6);
}

TEST(SGD, LoadStateWithoutBuffersRestartsMomentum) {
  const SGDOptions o = make(0.1, 0.9, 0.5, false, 0);
  Tensor p = leaf({5}, 70);
  SGD opt({p}, o);
  p.set_grad(Tensor::randn({5}, 71, DType::Float64));
  opt.step();
  opt.load_state(SGDState{});
  EXPECT_TRUE(opt.state().momentum_buffers.empty());
  EXPECT_EQ(opt.step_count(), 0);
  // The next step is a first step again: buf = g, p -= lr * g.
  Tensor g = Tensor::randn({5}, 72, DType::Float64);
  p.set_grad(g);
  std::vector<std::vector<double>> ref = {p.to_vector<double>()};
  auto gv = g.to_vector<double>();
  ReferenceSgd<double> r{o, {}};
  r.step(ref, {&gv});
  opt.step();
  EXPECT_LE(rel_l2(p, Tensor::from_vector<double>(ref[0], {5})), 1e-14);
  EXPECT_EQ(max_abs_diff(find_buffer(opt.state(), "0"), g), 0.0);
}

TEST(SGD, LoadStateConvertsDtype) {
  const SGDOptions o = make(0.1, 0.9, 0, false, 0);
  Tensor p = leaf({4}, 80, DType::Float32);
  SGD opt({{"w", p}}, o);
  SGDState s;
  s.step = 3;
  s.momentum_buffers.emplace_back("w", Tensor::from_vector<double>({1, 2, 3, 4}, {4}));
  opt.load_state(s);
  Tensor buf = find_buffer(opt.state(), "w");
  EXPECT_EQ(buf.dtype(), DType::Float32);
  EXPECT_EQ(buf.to_vector<float>(), (std::vector<float>{1, 2, 3, 4}));
}

TEST(SGD, LoadStateRefusesMismatchesAndKeepsState) {
  const SGDOptions o = make(0.1, 0.9, 0, false, 0);
  Tensor w = leaf({2, 3}, 90), v = leaf({4}, 91);
  SGD opt({{"w", w}, {"v", v}}, o);
  w.set_grad(Tensor::randn({2, 3}, 92, DType::Float64));
  v.set_grad(Tensor::randn({4}, 93, DType::Float64));
  opt.step();
  const SGDState before = opt.state();

  SGDState unknown = before;
  unknown.momentum_buffers[1].first = "u";
  expect_throw_with([&] { opt.load_state(unknown); },
                    {"SGD::load_state", "'u'", "names no parameter", "'w'", "'v'"});

  SGDState wrong_shape = before;
  wrong_shape.momentum_buffers[0].second = Tensor::zeros({3, 2}, DType::Float64);
  expect_throw_with([&] { opt.load_state(wrong_shape); },
                    {"SGD::load_state", "'w'", "[3, 2]", "[2, 3]"});

  SGDState twice = before;
  twice.momentum_buffers.push_back(twice.momentum_buffers[0]);
  expect_throw_with([&] { opt.load_state(twice); }, {"SGD::load_state", "'w'", "twice"});

  SGDState negative = before;
  negative.step = -1;
  expect_throw_with([&] { opt.load_state(negative); }, {"SGD::load_state", "step", "-1"});

  // Nothing changed by the refused loads.
  const SGDState after = opt.state();
  EXPECT_EQ(after.step, before.step);
  ASSERT_EQ(after.momentum_buffers.size(), before.momentum_buffers.size());
  for (size_t i = 0; i < after.momentum_buffers.size(); ++i) {
    EXPECT_EQ(after.momentum_buffers[i].first, before.momentum_buffers[i].first);
    EXPECT_EQ(max_abs_diff(after.momentum_buffers[i].second, before.momentum_buffers[i].second),
              0.0);
  }
}

// ---- CUDA ----------------------------------------------------------------------------------------

/// Odd sizes; the first spans several 4096-element chunks and ends mid-chunk.
const std::vector<Shape> kCudaShapes = {{3, 4097}, {1}, {33, 7}, {4096}, {5, 1, 3}};

void expect_cuda_matches_cpu(const SGDOptions& o, const std::vector<DType>& dtypes) {
  std::vector<Tensor> cpu, gpu;
  for (size_t i = 0; i < kCudaShapes.size(); ++i) {
    cpu.push_back(leaf(kCudaShapes[i], 200 + i, dtypes[i % dtypes.size()]));
  }
  gpu = copy_params(cpu, Device::CUDA);
  SGD opt_cpu(cpu, o), opt_gpu(gpu, o);
  for (int s = 0; s < 3; ++s) {
    for (size_t i = 0; i < cpu.size(); ++i) {
      // Parameter 2 has no gradient at the first step.
      if (i == 2 && s == 0) continue;
      Tensor g = Tensor::randn(kCudaShapes[i], 500 + 10 * s + i, cpu[i].dtype());
      cpu[i].set_grad(g);
      gpu[i].set_grad(g.to(Device::CUDA));
    }
    opt_cpu.step();
    opt_gpu.step();
    SGDState sc = opt_cpu.state(), sg = opt_gpu.state();
    ASSERT_EQ(sc.momentum_buffers.size(), sg.momentum_buffers.size());
    for (size_t i = 0; i < cpu.size(); ++i) {
      const double tol = cpu[i].dtype() == DType::Float32 ? 1e-6 : 1e-12;
      EXPECT_TRUE(gpu[i].is_cuda());
      EXPECT_LE(rel_l2(gpu[i], cpu[i]), tol) << "step " << s << ", param " << i;
    }
    for (size_t k = 0; k < sc.momentum_buffers.size(); ++k) {
      const Tensor& bc = sc.momentum_buffers[k].second;
      const Tensor& bg = sg.momentum_buffers[k].second;
      EXPECT_EQ(sc.momentum_buffers[k].first, sg.momentum_buffers[k].first);
      EXPECT_TRUE(bg.is_cuda());
      const double tol = bc.dtype() == DType::Float32 ? 1e-6 : 1e-12;
      EXPECT_LE(rel_l2(bg, bc), tol) << "buffer " << sc.momentum_buffers[k].first;
    }
  }
}

TEST(SGDCuda, MatchesCpuFloat32) {
  TG_SKIP_WITHOUT_GPU();
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.name);
    expect_cuda_matches_cpu(c.o, {DType::Float32});
  }
}

TEST(SGDCuda, MatchesCpuFloat64) {
  TG_SKIP_WITHOUT_GPU();
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.name);
    expect_cuda_matches_cpu(c.o, {DType::Float64});
  }
}

TEST(SGDCuda, MixedDtypesMatchCpu) {
  TG_SKIP_WITHOUT_GPU();
  expect_cuda_matches_cpu(make(0.03, 0.7, 0.2, false, 0.1), {DType::Float32, DType::Float64});
}

TEST(SGDCuda, ManySmallParamsMatchCpu) {
  TG_SKIP_WITHOUT_GPU();
  const SGDOptions o = make(0.05, 0.9, 0, true, 0.01);
  std::vector<Tensor> cpu;
  for (int i = 0; i < 70; ++i) cpu.push_back(leaf({1 + (i * 37) % 301}, 700 + i));
  cpu.push_back(leaf({2 * 4096 + 1}, 800));
  std::vector<Tensor> gpu = copy_params(cpu, Device::CUDA);
  SGD opt_cpu(cpu, o), opt_gpu(gpu, o);
  run_steps(opt_cpu, cpu, 0, 3);
  run_steps(opt_gpu, gpu, 0, 3);
  for (size_t i = 0; i < cpu.size(); ++i) EXPECT_LE(rel_l2(gpu[i], cpu[i]), 1e-12) << i;
}

TEST(SGDCuda, WarmStepUploadsAndAllocatesNothing) {
  TG_SKIP_WITHOUT_GPU();
  const SGDOptions o = make(0.01, 0.9, 0, false, 0.001);
  std::vector<Tensor> gpu;
  for (size_t i = 0; i < kCudaShapes.size(); ++i)
    gpu.push_back(leaf(kCudaShapes[i], 900 + i, DType::Float32, Device::CUDA));
  for (size_t i = 0; i < gpu.size(); ++i)
    gpu[i].set_grad(Tensor::randn(kCudaShapes[i], 950 + i, DType::Float32, Device::CUDA));
  SGD opt(gpu, o);
  opt.step();  // creates buffers, uploads the table with the first-update flags
  opt.step();  // flags cleared: one more upload
  const uint64_t uploads = opt.descriptor_uploads();
  EXPECT_EQ(uploads, 2u);
  tg::cuda::synchronize();
  const auto before = tg::cuda::memory_stats();
  for (int s = 0; s < 5; ++s) opt.step();
  tg::cuda::synchronize();
  const auto after = tg::cuda::memory_stats();
  EXPECT_EQ(opt.descriptor_uploads(), uploads);
  EXPECT_EQ(after.cuda_mallocs, before.cuda_mallocs);
  EXPECT_EQ(after.cache_hits, before.cache_hits);
  EXPECT_EQ(after.bytes_in_use, before.bytes_in_use);

  // A new gradient tensor (new pointer) makes the next step upload again, and use it.
  Tensor g0 = Tensor::randn(kCudaShapes[0], 999, DType::Float32, Device::CUDA);
  Tensor keep_old = gpu[0].grad();  // keeps the old block alive, so the pointer must differ
  gpu[0].set_grad(g0);
  std::vector<Tensor> cpu = copy_params(gpu, Device::CPU);
  SGDState st = opt.state();
  SGD opt_cpu(cpu, o);
  SGDState st_cpu;
  st_cpu.step = st.step;
  for (auto& [n, b] : st.momentum_buffers) st_cpu.momentum_buffers.emplace_back(n, b.cpu());
  opt_cpu.load_state(st_cpu);
  for (size_t i = 0; i < cpu.size(); ++i) cpu[i].set_grad(gpu[i].grad().cpu());
  opt.step();
  opt_cpu.step();
  EXPECT_EQ(opt.descriptor_uploads(), uploads + 1);
  for (size_t i = 0; i < cpu.size(); ++i) EXPECT_LE(rel_l2(gpu[i], cpu[i]), 1e-6) << i;
}

TEST(SGDCuda, StateMovesBetweenDevices) {
  TG_SKIP_WITHOUT_GPU();
  const SGDOptions o = make(0.05, 0.8, 0.1, false, 0.01);
  std::vector<Tensor> gpu;
  for (size_t i = 0; i < kCudaShapes.size(); ++i)
    gpu.push_back(leaf(kCudaShapes[i], 1100 + i, DType::Float64, Device::CUDA));
  SGD opt_gpu(gpu, o);
  run_steps(opt_gpu, gpu, 0, 2);
  std::vector<Tensor> cpu = copy_params(gpu, Device::CPU);
  SGD opt_cpu(cpu, o);
  opt_cpu.load_state(opt_gpu.state());  // CUDA buffers copied to the CPU
  EXPECT_FALSE(find_buffer(opt_cpu.state(), "0").is_cuda());
  run_steps(opt_gpu, gpu, 2, 2);
  run_steps(opt_cpu, cpu, 2, 2);
  for (size_t i = 0; i < cpu.size(); ++i) EXPECT_LE(rel_l2(gpu[i], cpu[i]), 1e-12) << i;
}

TEST(SGDCuda, RefusesParamsOnDifferentDevices) {
  TG_SKIP_WITHOUT_GPU();
  Tensor a = leaf({3}, 1), b = leaf({3}, 2, DType::Float64, Device::CUDA);
  expect_throw_with([&] { SGD({a, b}, SGDOptions{}); }, {"SGD", "'1'", "cuda", "cpu"});
}

}  // namespace
}  // namespace tg::optim
