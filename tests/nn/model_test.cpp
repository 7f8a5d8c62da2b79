#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "core/autograd.h"
#include "core/gradcheck.h"
#include "core/rng.h"
#include "io/dataset.h"
#include "io/synthetic.h"
#include "nn/model.h"
#include "ops/mse_loss.h"
#include "test_utils.h"

using namespace tg;

namespace {
std::vector<std::string> names(const nn::Module& m) {
  std::vector<std::string> out;
  for (auto& [n, t] : m.named_parameters()) out.push_back(n);
  return out;
}
}  // namespace

TEST(Model, ParameterNamesShapesAndInitMatchPyTorch) {
  nn::Model m(8, 32, 3, 8, /*seed=*/1);
  EXPECT_EQ(names(m), (std::vector<std::string>{"bias", "scale", "conv.weight", "conv.bias",
                                                "group_norm.weight", "group_norm.bias"}));
  auto p = m.named_parameters();
  EXPECT_EQ(p[0].second.shape(), (Shape{32, 1, 1}));
  EXPECT_EQ(p[2].second.shape(), (Shape{32, 8, 3, 3}));
  EXPECT_EQ(p[3].second.shape(), (Shape{32}));
  const double bound = 1.0 / std::sqrt(72.0);
  double wmax = 0;
  for (float v : m.conv->weight.to_vector<float>()) wmax = std::max(wmax, std::fabs(double(v)));
  EXPECT_LE(wmax, bound);
  EXPECT_GT(wmax, 0.9 * bound);  // 2304 uniform draws reach close to the bound
  for (float v : m.group_norm->weight.to_vector<float>()) EXPECT_EQ(v, 1.0f);
  for (float v : m.group_norm->bias.to_vector<float>()) EXPECT_EQ(v, 0.0f);
  for (auto& [n, t] : p) EXPECT_TRUE(t.requires_grad()) << n;
  // conv.bias: U(-bound, bound) too, both signs reached
  const auto cb = m.conv->bias.to_vector<float>();
  const double bmin = *std::min_element(cb.begin(), cb.end());
  const double bmax = *std::max_element(cb.begin(), cb.end());
  EXPECT_GE(bmin, -bound);
  EXPECT_LE(bmax, bound);
  EXPECT_LT(bmin, -0.5 * bound);  // 32 draws: each side's extreme is past half the bound
  EXPECT_GT(bmax, 0.5 * bound);
  double wmin = 0;
  for (float v : m.conv->weight.to_vector<float>()) wmin = std::min(wmin, double(v));
  EXPECT_LT(wmin, -0.9 * bound);
  // bias and scale: N(0, 1), 32 draws each
  for (const Tensor* t : {&m.bias, &m.scale}) {
    const auto v = t->to_vector<double>();
    double mean = 0, var = 0;
    for (double x : v) mean += x / double(v.size());
    for (double x : v) var += (x - mean) * (x - mean) / double(v.size());
    EXPECT_LT(std::fabs(mean), 0.6);
    EXPECT_GT(var, 0.4);
    EXPECT_LT(var, 2.0);
  }
}

// The draws, in PyTorch's order (conv.weight, conv.bias, bias, scale), from the seeded generator.
TEST(Model, ParametersAreTheSeededDrawsInPyTorchOrder) {
  nn::Model m(3, 4, 3, 2, /*seed=*/7);
  Generator gen(7);
  const double bound = 1.0 / std::sqrt(27.0);
  std::vector<double> expected;
  for (int i = 0; i < 4 * 3 * 3 * 3 + 4; ++i) expected.push_back(gen.uniform(-bound, bound));
  for (int i = 0; i < 8; ++i) expected.push_back(gen.normal());
  std::vector<double> got;
  for (const Tensor* t : {&m.conv->weight, &m.conv->bias, &m.bias, &m.scale})
    for (float v : t->to_vector<float>()) got.push_back(v);
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], expected[i], 1e-7) << i;
  EXPECT_EQ(nn::Model(3, 4, 3, 2, 7).conv->bias.to_vector<float>(), m.conv->bias.to_vector<float>());
  EXPECT_NE(nn::Model(3, 4, 3, 2, 8).conv->bias.to_vector<float>(), m.conv->bias.to_vector<float>());
}

TEST(Model, ConstructorChecksItsArguments) {
  EXPECT_ERROR_HAS(nn::Model(8, 32, 3, 5), "GroupNorm", "num_groups to divide num_channels",
                   "num_groups 5", "num_channels 32");
  EXPECT_ERROR_HAS(nn::Model(8, 32, 0, 8), "Conv2d", "positive", "8, 32, 0");
  EXPECT_ERROR_HAS(nn::Model(0, 32, 3, 8), "Conv2d", "positive", "0, 32, 3");
  Generator gen(1);
  EXPECT_ERROR_HAS(nn::Model(8, 32, 3, 8, {32}, {32, 1, 1}, gen), "Model",
                   "bias_shape (32, 1, 1)", "got [32]");
  EXPECT_ERROR_HAS(nn::Model(8, 32, 3, 8, {32, 1, 1}, {16, 1, 1}, gen), "Model",
                   "scale_shape (32, 1, 1)", "got [16, 1, 1]");
  nn::Model ok(8, 32, 3, 8, {32, 1, 1}, {32, 1, 1}, gen, DType::Float64);
  EXPECT_EQ(ok.conv->weight.dtype(), DType::Float64);
  EXPECT_EQ(ok.in_channels(), 8);
  EXPECT_EQ(ok.out_channels(), 32);
  EXPECT_EQ(ok.kernel_size(), 3);
  EXPECT_EQ(ok.num_groups(), 8);
}

// Model::loss (the fused training forward) against mse_loss of the op-by-op reference, with every
// gradient; in float64 the two agree to rounding.
TEST(Model, LossMatchesTheReferenceCompositionWithGradients) {
  for (DType dt : {DType::Float64, DType::Float32}) {
    nn::Model m(3, 6, 3, 3, /*seed=*/12, dt);
    Tensor x = Tensor::rand({3, 3, 8, 9}, 13, dt);
    Tensor t = Tensor::randn({3, 6, 6, 7}, 14, dt);
    Tensor l1 = m.loss(x, t);
    EXPECT_EQ(l1.numel(), 1);
    l1.backward();
    std::vector<Tensor> g1;
    for (auto& p : m.parameters()) g1.push_back(p.grad().clone());
    m.zero_grad();
    Tensor l2 = ops::mse_loss(m.forward_reference(x), t);
    l2.backward();
    const double tol = dt == DType::Float64 ? 1e-10 : 1e-5;
    EXPECT_NEAR(l1.item(), l2.item(), tol * l2.item());
    EXPECT_GT(l2.item(), 0.1);  // a target of N(0, 1) is far from a GroupNorm output
    auto params = m.named_parameters();
    for (size_t i = 0; i < params.size(); ++i)
      EXPECT_LT(tg::testing::rel_l2(g1[i], params[i].second.grad()), tol) << params[i].first;
  }
}

TEST(Model, FusedAndReferenceAgreeWithGradients) {
  for (DType dt : {DType::Float64, DType::Float32}) {
    nn::Model m(3, 6, 3, 3, /*seed=*/2, dt);
    Tensor x = Tensor::rand({2, 3, 9, 7}, 3, dt);
    Tensor t = Tensor::randn({2, 6, 7, 5}, 4, dt);
    Tensor y1 = m.forward(x);
    ops::mse_loss(y1, t).backward();
    std::vector<Tensor> g1;
    for (auto& p : m.parameters()) g1.push_back(p.grad().clone());
    m.zero_grad();
    Tensor y2 = m.forward_reference(x);
    ops::mse_loss(y2, t).backward();
    const double tol = dt == DType::Float64 ? 1e-10 : 1e-5;
    EXPECT_LT(tg::testing::rel_l2(y1, y2), tol);
    auto params = m.named_parameters();
    for (size_t i = 0; i < params.size(); ++i)
      EXPECT_LT(tg::testing::rel_l2(g1[i], params[i].second.grad()), tol) << params[i].first;
  }
}

TEST(Model, GradcheckThroughTheWholeModel) {
  nn::Model m(2, 4, 2, 2, /*seed=*/5, DType::Float64);
  Tensor x = Tensor::rand({2, 2, 5, 4}, 6, DType::Float64);
  Tensor t = Tensor::randn({2, 4, 4, 3}, 7, DType::Float64);
  auto params = m.parameters();
  auto r = gradcheck(
      [&](const std::vector<Tensor>& in) {
        // Rebind the module's parameters to the checker's copies.
        nn::Model& mm = m;
        mm.bias = in[0];
        mm.scale = in[1];
        mm.conv->weight = in[2];
        mm.conv->bias = in[3];
        mm.group_norm->weight = in[4];
        mm.group_norm->bias = in[5];
        return std::vector<Tensor>{ops::mse_loss(mm.forward(x), t)};
      },
      params);
  EXPECT_TRUE(r.passed) << r.message;
}

TEST(Module, StateDictChecksNamesAndShapes) {
  nn::Model a(2, 4, 3, 2, 1), b(2, 4, 3, 2, 2);
  b.load_state_dict(a.state_dict());
  EXPECT_EQ(a.conv->weight.to_vector<float>(), b.conv->weight.to_vector<float>());
  auto sd = a.state_dict();
  sd[2].second = Tensor::zeros({4, 2, 2, 2});
  EXPECT_ERROR_HAS(b.load_state_dict(sd), "load_state_dict", "parameter 'conv.weight'",
                   "expected shape [4, 2, 3, 3]", "got [4, 2, 2, 2]");
  auto missing = a.state_dict();
  missing.pop_back();
  EXPECT_ERROR_HAS(b.load_state_dict(missing), "load_state_dict",
                   "missing parameter 'group_norm.bias' (expected shape [4])");
  auto extra = a.state_dict();
  extra.emplace_back("foo", Tensor::zeros({1}));
  EXPECT_ERROR_HAS(b.load_state_dict(extra), "load_state_dict", "unexpected parameter 'foo'");
  // a failed load changes nothing, not even the parameters that matched
  nn::Model d(2, 4, 3, 2, 9);
  const auto d_scale = d.scale.to_vector<float>();
  EXPECT_ERROR_HAS(d.load_state_dict(extra), "unexpected parameter 'foo'");
  EXPECT_EQ(d.scale.to_vector<float>(), d_scale);
  // dtype is converted on load
  nn::Model c(2, 4, 3, 2, 3, DType::Float64);
  c.load_state_dict(a.state_dict());
  EXPECT_EQ(c.conv->weight.dtype(), DType::Float64);
  EXPECT_EQ(c.scale.to_vector<float>(), a.scale.to_vector<float>());
}

namespace {
struct TwoParams : nn::Module {
  Tensor a, b;
  TwoParams() {
    a = register_parameter("a", Tensor::zeros({2}));
    b = register_parameter("b", Tensor::ones({3}));
  }
  void add_again(const std::string& name) { register_parameter(name, Tensor::zeros({1})); }
};
}  // namespace

TEST(Module, RegisterParameterRefusesADuplicateName) {
  TwoParams m;
  EXPECT_TRUE(m.a.requires_grad());
  EXPECT_ERROR_HAS(m.add_again("b"), "register_parameter", "'b' already exists");
  EXPECT_EQ(names(m), (std::vector<std::string>{"a", "b"}));
  m.add_again("c");
  EXPECT_EQ(names(m), (std::vector<std::string>{"a", "b", "c"}));
}

TEST(Module, ToDropsGradientsAndZeroGradDropsThem) {
  nn::Model m(2, 4, 3, 2, 1);
  ops::mse_loss(m.forward(Tensor::rand({1, 2, 5, 5}, 2)), Tensor::randn({1, 4, 3, 3}, 3)).backward();
  for (auto& [n, t] : m.named_parameters()) ASSERT_TRUE(t.grad().defined()) << n;
  m.to(DType::Float64);
  for (auto& [n, t] : m.named_parameters()) EXPECT_FALSE(t.grad().defined()) << n;
  ops::mse_loss(m.forward(Tensor::rand({1, 2, 5, 5}, 2, DType::Float64)),
                Tensor::randn({1, 4, 3, 3}, 3, DType::Float64))
      .backward();
  for (auto& [n, t] : m.named_parameters()) ASSERT_TRUE(t.grad().defined()) << n;
  m.zero_grad();
  for (auto& [n, t] : m.named_parameters()) EXPECT_FALSE(t.grad().defined()) << n;
}

TEST(Module, ToDeviceAndDtypeKeepHandles) {
  nn::Model m(2, 4, 3, 2, 1);
  Tensor w = m.conv->weight;
  auto before = w.to_vector<double>();
  m.to(DType::Float64);
  EXPECT_EQ(w.dtype(), DType::Float64);  // the handle held outside sees the conversion
  EXPECT_EQ(m.conv->weight.to_vector<double>(), before);
  EXPECT_TRUE(w.requires_grad());
  if (cuda::is_available()) {
    m.to(Device::CUDA);
    EXPECT_EQ(w.device(), Device::CUDA);
  }
}

TEST(ModelCuda, FusedMatchesCpu) {
  TG_SKIP_WITHOUT_GPU();
  for (DType dt : {DType::Float64, DType::Float32}) {
    nn::Model cpu(3, 8, 3, 4, 9, dt), gpu(3, 8, 3, 4, 9, dt);
    gpu.to(Device::CUDA);
    Tensor x = Tensor::rand({3, 3, 17, 13}, 10, dt);
    Tensor t = Tensor::randn({3, 8, 15, 11}, 11, dt);
    ops::conv::set_allow_tf32(false);
    ops::mse_loss(cpu.forward(x), t).backward();
    ops::mse_loss(gpu.forward(x.cuda()), t.cuda()).backward();
    ops::conv::set_allow_tf32(true);
    const double tol = dt == DType::Float64 ? 1e-10 : 1e-4;
    auto pc = cpu.named_parameters(), pg = gpu.named_parameters();
    for (size_t i = 0; i < pc.size(); ++i)
      EXPECT_LT(tg::testing::rel_l2(pg[i].second.grad(), pc[i].second.grad()), tol) << pc[i].first;
  }
}

// The synthetic teacher-student set is what io/synthetic.h says: x ~ U[0, 1), y = teacher(x) +
// noise * N(0, 1), the teacher being the seed's model drawn from the same generator first.
TEST(SyntheticData, IsTheTeachersOutputPlusNoise) {
  tg::testing::TempDir tmp;
  io::SyntheticOptions o;
  o.samples = 7;
  o.in_channels = 2;
  o.out_channels = 4;
  o.height = 6;
  o.width = 5;
  o.groups = 2;
  o.noise = 0.1;
  o.seed = 11;
  o.batch = 3;  // three appends: 3, 3, 1
  io::write_synthetic_dataset(tmp.file("s.h5"), o);
  io::DatasetReaderOptions ro;
  ro.path = tmp.file("s.h5");
  io::DatasetReader r(ro);
  ASSERT_EQ(r.num_samples(), 7);
  io::Batch b = r.read({0, 1, 2, 3, 4, 5, 6});
  ASSERT_EQ(b.x.shape(), (Shape{7, 2, 6, 5}));
  ASSERT_EQ(b.y.shape(), (Shape{7, 4, 4, 3}));

  autograd::NoGradGuard no_grad;
  Generator gen(11);
  nn::Model teacher(2, 4, 3, 2, {4, 1, 1}, {4, 1, 1}, gen);
  std::vector<float> xs, ys;
  for (int64_t done = 0; done < 7; done += 3) {
    const int64_t n = std::min<int64_t>(3, 7 - done);
    Tensor x = Tensor::rand({n, 2, 6, 5}, gen);
    Tensor y = teacher.forward(x);
    Tensor noise = Tensor::randn(y.shape(), gen, DType::Float32, Device::CPU, 0.0, 0.1);
    for (float v : x.to_vector<float>()) xs.push_back(v);
    const auto yv = y.to_vector<float>(), nv = noise.to_vector<float>();
    for (size_t i = 0; i < yv.size(); ++i) ys.push_back(yv[i] + nv[i]);
  }
  EXPECT_EQ(b.x.to_vector<float>(), xs);
  const auto got_y = b.y.to_vector<float>();
  ASSERT_EQ(got_y.size(), ys.size());
  for (size_t i = 0; i < ys.size(); ++i) EXPECT_NEAR(got_y[i], ys[i], 1e-6) << i;
  for (float v : xs) {
    EXPECT_GE(v, 0.0f);
    EXPECT_LT(v, 1.0f);
  }
  // the noise is there and of the asked size: y - teacher(x) has std ~0.1
  Tensor clean = teacher.forward(b.x);
  double sq = 0;
  const auto cv = clean.to_vector<float>();
  for (size_t i = 0; i < cv.size(); ++i) sq += (got_y[i] - cv[i]) * (got_y[i] - cv[i]);
  EXPECT_NEAR(std::sqrt(sq / double(cv.size())), 0.1, 0.02);
}
