// train::CapturedStep: argument checks and the CPU's eager steps everywhere; on a GPU, captured
// steps bit-identical to eager ones for SGD and AdamW (a learning-rate change and an uneven batch
// in between, fused and unfused paths), a capture that syncs fails clearly, and the graph's memory
// goes with it.
#include "train/captured_step.h"

#include <gtest/gtest.h>

#include "core/cuda_graph.h"
#include "nn/model.h"
#include "optim/adamw.h"
#include "optim/sgd.h"
#include "test_utils.h"

namespace tg {
namespace {

using train::CapturedStep;

struct Sizes {
  int64_t cin, cout, k, groups, n, hw;
};

// One batch per step: (x, target) drawn from the step's seed; step `uneven` has n - 1 rows.
std::vector<Tensor> batch(const Sizes& s, int step, Device device, int uneven = -1) {
  const int64_t n = step == uneven ? s.n - 1 : s.n, ho = s.hw - s.k + 1;
  return {Tensor::rand({n, s.cin, s.hw, s.hw}, uint64_t(100 + step), DType::Float32, device),
          Tensor::randn({n, s.cout, ho, ho}, uint64_t(200 + step), DType::Float32, device)};
}

Tensor forward_backward(const nn::Model& m, optim::Optimizer& opt, const std::vector<Tensor>& in) {
  Tensor loss = m.loss(in[0], in[1]);
  opt.zero_grad();
  loss.backward();
  return loss;
}

struct Result {
  std::vector<float> losses;
  std::vector<std::vector<float>> params;
  int64_t replays = 0, captures = 0, eager = 0;
};

// steps steps of the model with opt_kind ("sgd" or "adamw"), through a CapturedStep (graphs on or
// off) or a plain loop; the learning rate changes before step lr_change_at.
Result train(const Sizes& s, Device device, const std::string& opt_kind, int steps,
             const std::string& mode, int uneven, int lr_change_at) {
  nn::Model model(s.cin, s.cout, s.k, s.groups, 7);
  model.to(device);
  std::unique_ptr<optim::Optimizer> opt;
  if (opt_kind == "sgd") {
    opt = std::make_unique<optim::SGD>(model.named_parameters(),
                                       optim::SGDOptions{0.05, 0.9, 0, false, 1e-4});
  } else {
    opt = std::make_unique<optim::AdamW>(model.named_parameters(), optim::AdamWOptions{});
  }
  Result r;
  train::CapturedStepOptions o;
  o.enabled = mode == "graph";
  CapturedStep step(
      {Tensor::empty(batch(s, 0, device)[0].shape(), DType::Float32, device),
       Tensor::empty(batch(s, 0, device)[1].shape(), DType::Float32, device)},
      [&](const std::vector<Tensor>& in) { return forward_backward(model, *opt, in); }, opt.get(),
      model.parameters(), o);
  for (int i = 0; i < steps; ++i) {
    if (i == lr_change_at) opt->set_group_lr(0, opt->group_lr(0) * 0.5);
    const std::vector<Tensor> in = batch(s, i, device, uneven);
    Tensor loss;
    if (mode == "plain") {
      loss = forward_backward(model, *opt, in);
      opt->step();
    } else {
      loss = step.run(in);
    }
    r.losses.push_back(loss.to_vector<float>()[0]);
  }
  for (const Tensor& p : model.parameters()) r.params.push_back(p.to_vector<float>());
  r.replays = step.replays();
  r.captures = step.captures();
  r.eager = step.eager_steps();
  return r;
}

TEST(CapturedStep, ChecksItsArguments) {
  Tensor x = Tensor::zeros({2, 3});
  auto fn = [](const std::vector<Tensor>& in) { return in[0]; };
  EXPECT_ERROR_HAS((CapturedStep({x}, nullptr, nullptr, {})), "expected a step function");
  EXPECT_ERROR_HAS((CapturedStep({}, fn, nullptr, {})), "at least one static input");
  EXPECT_ERROR_HAS((CapturedStep({x, x.view({3, 2})}, fn, nullptr, {})), "static input 1",
                   "shares its storage");
  EXPECT_ERROR_HAS((CapturedStep({Tensor::zeros({2}).set_requires_grad()}, fn, nullptr, {})),
                   "static input 0", "requires grad");
  EXPECT_ERROR_HAS((CapturedStep({x}, fn, nullptr, {Tensor::zeros({2})})), "parameter 0",
                   "leaf that requires grad");
  train::CapturedStepOptions o;
  o.warmup = 0;
  EXPECT_ERROR_HAS((CapturedStep({x}, fn, nullptr, {}, o)), "warmup >= 1", "got 0");
  CapturedStep ok({x}, fn, nullptr, {});
  EXPECT_ERROR_HAS(ok.run({x, x}), "expected 1 inputs", "got 2");
  EXPECT_FALSE(ok.captured());
}

// On the CPU every step is eager, and equals the plain loop bit for bit, the uneven batch and the
// learning-rate change included.
TEST(CapturedStep, OnTheCpuEveryStepIsEagerAndEqualsThePlainLoop) {
  const Sizes s{2, 4, 3, 2, 4, 7};
  for (const char* opt : {"sgd", "adamw"}) {
    const Result plain = train(s, Device::CPU, opt, 6, "plain", 3, 4);
    const Result stepped = train(s, Device::CPU, opt, 6, "graph", 3, 4);
    EXPECT_EQ(stepped.losses, plain.losses) << opt;
    EXPECT_EQ(stepped.params, plain.params) << opt;
    EXPECT_EQ(stepped.eager, 6) << opt;
    EXPECT_EQ(stepped.replays, 0) << opt;
    EXPECT_EQ(stepped.captures, 0) << opt;
  }
}

// Captured steps give the eager steps' losses and parameters bit for bit, for SGD (momentum,
// weight decay) and AdamW, on the fused path (3 -> 16, k3) and the unfused one (cuDNN), with a
// learning-rate change after the capture and an uneven batch (eager) between replays.
TEST(CapturedStepCuda, ReplaysAreBitIdenticalToEagerSteps) {
  TG_SKIP_WITHOUT_GPU();
  const int steps = 8, uneven = 4, lr_change = 6;
  for (const Sizes& s : {Sizes{3, 16, 3, 8, 4, 12}, Sizes{2, 4, 3, 2, 3, 9}}) {
    for (const char* opt : {"sgd", "adamw"}) {
      SCOPED_TRACE(std::string(opt) + ", cin " + std::to_string(s.cin));
      const Result plain = train(s, Device::CUDA, opt, steps, "plain", uneven, lr_change);
      const Result eager = train(s, Device::CUDA, opt, steps, "eager", uneven, lr_change);
      const Result graph = train(s, Device::CUDA, opt, steps, "graph", uneven, lr_change);
      EXPECT_EQ(eager.losses, plain.losses);
      EXPECT_EQ(graph.losses, plain.losses);
      EXPECT_EQ(graph.params, plain.params);
      EXPECT_EQ(eager.params, plain.params);
      // step 0 warms up, step 1 is captured (and replayed), step 4 is uneven: eager
      EXPECT_EQ(graph.captures, 1);
      EXPECT_EQ(graph.eager, 2);
      EXPECT_EQ(graph.replays, steps - 2);
      EXPECT_EQ(eager.replays, 0);
    }
  }
}

TEST(CapturedStepCuda, AStepThatReadsTheDeviceFailsToCaptureClearly) {
  TG_SKIP_WITHOUT_GPU();
  const Sizes s{3, 16, 3, 8, 4, 12};
  nn::Model model(s.cin, s.cout, s.k, s.groups, 7);
  model.to(Device::CUDA);
  optim::SGD opt(model.named_parameters(), {0.05, 0.9});
  const std::vector<Tensor> in = batch(s, 0, Device::CUDA);
  CapturedStep step(
      {in[0].clone(), in[1].clone()},
      [&](const std::vector<Tensor>& b) {
        Tensor loss = forward_backward(model, opt, b);
        if (loss.item() > 1e9) loss = loss.detach();  // a loss check on the host
        return loss;
      },
      &opt, model.parameters());
  step.run(in);  // the eager warm-up may read the device
  EXPECT_ERROR_HAS(step.run(in), "while capturing a CUDA graph", "from the device to the host",
                   "item()");
  EXPECT_FALSE(step.captured());
  EXPECT_EQ(opt.step_count(), 1);  // the failed step did not update anything
  EXPECT_FALSE(cuda::is_capturing());
}

TEST(CapturedStepCuda, TheGraphsMemoryIsReleasedWithIt) {
  TG_SKIP_WITHOUT_GPU();
  const Sizes s{3, 16, 3, 8, 4, 12};
  nn::Model model(s.cin, s.cout, s.k, s.groups, 7);
  model.to(Device::CUDA);
  optim::SGD opt(model.named_parameters(), {0.05, 0.9});
  const std::vector<Tensor> in = batch(s, 0, Device::CUDA);
  ASSERT_EQ(cuda::graph_pool_bytes(), 0u);
  {
    CapturedStep step(
        {in[0].clone(), in[1].clone()},
        [&](const std::vector<Tensor>& b) { return forward_backward(model, opt, b); }, &opt,
        model.parameters());
    for (int i = 0; i < 4; ++i) step.run(in);
    EXPECT_TRUE(step.captured());
    EXPECT_GT(step.graph_nodes(), 3u);
    EXPECT_GT(cuda::graph_pool_bytes(), 0u);
    step.invalidate();  // drops the graph; the parameters' gradients still hold pool blocks
    step.run(in);
    step.run(in);
    EXPECT_TRUE(step.captured());
    EXPECT_EQ(step.captures(), 2);
  }
  opt.zero_grad();  // the last pool blocks, held by the gradients
  EXPECT_EQ(cuda::graph_pool_bytes(), 0u);
}

}  // namespace
}  // namespace tg
