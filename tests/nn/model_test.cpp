#include <gtest/gtest.h>

#include "core/autograd.h"
#include "core/gradcheck.h"
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
  EXPECT_THROW(nn::Model(8, 32, 3, 5), Error);  // 5 does not divide 32
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
  try {
    b.load_state_dict(sd);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("conv.weight"), std::string::npos) << e.what();
  }
  auto missing = a.state_dict();
  missing.pop_back();
  EXPECT_THROW(b.load_state_dict(missing), Error);
  auto extra = a.state_dict();
  extra.emplace_back("foo", Tensor::zeros({1}));
  EXPECT_THROW(b.load_state_dict(extra), Error);
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
