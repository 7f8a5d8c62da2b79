// The tape never keeps dead graphs alive: forwards whose results are dropped (an evaluation loop
// without NoGradGuard) leave a handful of nodes and no memory behind, on the CPU and on CUDA. Also
// the tape's thread rules (a clear error, not silently missing gradients) and gradcheck's refusal
// to "pass" when nothing requires grad.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/autograd.h"
#include "core/cuda_context.h"
#include "core/gradcheck.h"
#include "core/memory.h"
#include "nn/model.h"
#include "ops/elementwise.h"
#include "ops/mse_loss.h"
#include "test_ops.h"
#include "test_utils.h"

using namespace tg;

namespace {

constexpr int kPasses = 2000;
// With dropped results, the tape prunes whenever it has grown past a small fixed size; more than
// this many nodes at any time means dead graphs are accumulating.
constexpr size_t kTapeBound = 32;

class Tape : public ::testing::Test {
 protected:
  void SetUp() override { autograd::clear_tape(); }
  void TearDown() override { autograd::clear_tape(); }
};

// Runs pass() kPasses times, each returning the result the caller drops. Checks that the tape never
// holds more than kTapeBound nodes, that the dropped results' memory is freed (at most a few
// results' storage alive at any time) and that one prune at the end leaves an empty tape.
template <typename Pass>
void expect_bounded(const char* what, Pass pass) {
  std::vector<std::weak_ptr<Storage>> results;
  size_t max_tape = 0;
  for (int i = 0; i < kPasses; ++i) {
    results.push_back(pass().impl()->storage);
    max_tape = std::max(max_tape, autograd::tape_size());
  }
  size_t alive = 0;
  for (const auto& r : results) alive += r.expired() ? 0 : 1;
  EXPECT_LE(max_tape, kTapeBound) << what << ": the tape grew to " << max_tape << " nodes";
  EXPECT_LE(alive, kTapeBound) << what << ": " << alive << " of " << kPasses
                               << " dropped results are still in memory";
  autograd::prune_tape();
  EXPECT_EQ(autograd::tape_size(), 0u) << what;
  alive = 0;
  for (const auto& r : results) alive += r.expired() ? 0 : 1;
  EXPECT_EQ(alive, 0u) << what << ": dropped results outlive the prune";
}

void model_passes_stay_bounded(Device device) {
  nn::Model model(2, 4, 3, 2, 11);
  model.to(device);
  Tensor x = Tensor::rand({1, 2, 5, 5}, 1, DType::Float32, device);
  Tensor target = Tensor::randn({1, 4, 3, 3}, 2, DType::Float32, device);
  expect_bounded("Model::forward", [&] { return model.forward(x); });
  expect_bounded("Model::forward_reference", [&] { return model.forward_reference(x); });
  expect_bounded("Model::loss", [&] { return model.loss(x, target); });
}

}  // namespace

TEST_F(Tape, DroppedOpChainsLeaveAHandfulOfNodes) {
  Tensor w = Tensor::randn({64}, 3).set_requires_grad();
  // sigmoid saves its output: it used to keep its own node, and everything above it, alive.
  expect_bounded("sigmoid chain", [&] { return ops::sigmoid(ops::mul(w, 2.0)); });
  expect_bounded("sigmoid of sigmoid", [&] { return ops::sum(ops::sigmoid(ops::sigmoid(w))); });
  expect_bounded("mse_loss(sigmoid(w), w * 2)",
                 [&] { return ops::mse_loss(ops::sigmoid(w), ops::mul(w, 2.0)); });
  expect_bounded("mse_loss(w, w * 2)", [&] { return ops::mse_loss(w, ops::mul(w, 2.0)); });
}

TEST_F(Tape, UpstreamNodesGoInTheSamePrune) {
  Tensor w = Tensor::randn({16}, 4).set_requires_grad();
  {
    Tensor loss = ops::mse_loss(w, ops::mul(w, 2.0));  // mse_loss saves w * 2
    EXPECT_EQ(autograd::tape_size(), 2u);
  }
  autograd::prune_tape();
  EXPECT_EQ(autograd::tape_size(), 0u)
      << "mul's node must go with the mse_loss node that saved its output";
  {
    // A longer chain of saved inputs: square saves its input, which the node before produced.
    Tensor y = ops::square(ops::square(ops::square(ops::sigmoid(w))));
    EXPECT_EQ(autograd::tape_size(), 4u);
  }
  autograd::prune_tape();
  EXPECT_EQ(autograd::tape_size(), 0u);
}

TEST_F(Tape, ALiveResultKeepsItsGraphAndItsGradientIsRight) {
  Tensor w = Tensor::randn({5}, 5, DType::Float64).set_requires_grad();
  Tensor kept = ops::sigmoid(ops::mul(w, 2.0));
  for (int i = 0; i < 100; ++i) ops::sigmoid(ops::mul(w, 3.0));
  autograd::prune_tape();
  EXPECT_EQ(autograd::tape_size(), 2u);
  ops::sum(kept).backward();
  const auto wv = w.to_vector<double>();
  const auto g = w.grad().to_vector<double>();
  for (size_t i = 0; i < wv.size(); ++i) {
    const double s = 1.0 / (1.0 + std::exp(-2.0 * wv[i]));
    EXPECT_NEAR(g[i], 2.0 * s * (1.0 - s), 1e-14) << i;
  }
  EXPECT_EQ(autograd::tape_size(), 0u);
}

TEST_F(Tape, ASavedOutputStillDetectsAnInPlaceChange) {
  Tensor w = Tensor::randn({4}, 6, DType::Float64).set_requires_grad();
  Tensor y = ops::sigmoid(w);
  y.fill_(0.5);  // sigmoid's backward reads y
  EXPECT_ERROR_HAS(ops::sum(y).backward(), "sigmoid backward", "modified in place");
}

TEST_F(Tape, SavedTensorOutputKeepsTheDataButNotTheNode) {
  Tensor x = Tensor::from_vector<double>({1.0, 2.0}, {2}).set_requires_grad();
  Tensor y = tg::testing::test_sin(x);
  autograd::SavedTensor saved = autograd::SavedTensor::output(y);
  std::weak_ptr<TensorImpl> impl = y.impl();
  std::weak_ptr<autograd::Node> node = y.impl()->grad_fn;
  y = Tensor();
  EXPECT_TRUE(impl.expired()) << "the saved output holds the tensor's handle";
  autograd::prune_tape();
  EXPECT_TRUE(node.expired());
  const Tensor& data = saved.get("test");
  EXPECT_FALSE(data.requires_grad());
  EXPECT_NEAR(data.to_vector<double>()[1], std::sin(2.0), 1e-15);
}

TEST_F(Tape, ModelForwardsWithDroppedResultsStayBoundedOnCpu) {
  model_passes_stay_bounded(Device::CPU);
}

TEST_F(Tape, ModelForwardsWithDroppedResultsStayBoundedOnCuda) {
  TG_SKIP_WITHOUT_GPU();
  cuda::synchronize();
  const size_t before = cuda::memory_stats().bytes_in_use;
  model_passes_stay_bounded(Device::CUDA);
  // After the final prune only what the test itself holds is left: the model and x, target.
  cuda::synchronize();
  const size_t after = cuda::memory_stats().bytes_in_use;
  EXPECT_LE(after, before + (size_t(1) << 20))
      << "CUDA bytes in use grew from " << before << " to " << after;
  // And during the loop: a few passes' activations at most, not 2,000.
  nn::Model model(2, 4, 3, 2, 11);
  model.to(Device::CUDA);
  Tensor x = Tensor::rand({1, 2, 5, 5}, 1, DType::Float32, Device::CUDA);
  model.forward_reference(x);
  autograd::prune_tape();
  cuda::synchronize();
  const size_t base = cuda::memory_stats().bytes_in_use;
  size_t peak = base;
  for (int i = 0; i < kPasses; ++i) {
    model.forward_reference(x);
    peak = std::max(peak, cuda::memory_stats().bytes_in_use);
  }
  const size_t one_pass = 8 * size_t(1 * 4 * 3 * 3) * sizeof(float);  // generous per-pass bound
  EXPECT_LE(peak - base, size_t(kTapeBound) * std::max<size_t>(one_pass, 4096))
      << "peak CUDA bytes in use " << peak << " against " << base << " at the start";
}

// ---- threads ------------------------------------------------------------------------------------

TEST_F(Tape, BackwardOnAnotherThreadIsAClearError) {
  Tensor x = Tensor::from_vector<double>({1.0, 2.0}, {2}).set_requires_grad();
  Tensor loss = tg::testing::test_sum(tg::testing::test_sin(x));
  std::string msg;
  std::thread worker([&] { msg = tg::testing::error_of([&] { loss.backward(); }); });
  worker.join();
  EXPECT_CONTAINS(msg, "recorded on another thread");
  EXPECT_CONTAINS(msg, "thread-local");
  EXPECT_CONTAINS(msg, "call backward() on the thread that ran the forward");
  EXPECT_FALSE(x.grad().defined());
  // On the forward's own thread it still works.
  loss.backward();
  EXPECT_NEAR(x.grad().to_vector<double>()[0], std::cos(1.0), 1e-15);
}

TEST_F(Tape, BackwardAfterTheForwardThreadEndedNamesTheThread) {
  Tensor x = Tensor::from_vector<double>({1.0, 2.0}, {2}).set_requires_grad();
  Tensor loss;
  std::thread worker([&] { loss = tg::testing::test_sum(tg::testing::test_sin(x)); });
  worker.join();  // its tape, and the graph on it, are gone
  EXPECT_ERROR_HAS(loss.backward(), "already freed", "the thread that ran its forward has ended");
}

TEST_F(Tape, AnOpOnAnotherThreadsGraphIsAClearError) {
  Tensor x = Tensor::from_vector<double>({1.0, 2.0}, {2}).set_requires_grad();
  Tensor y = tg::testing::test_sin(x);
  std::string msg, detached_ok;
  std::thread worker([&] {
    msg = tg::testing::error_of([&] { tg::testing::test_sin(y); });
    detached_ok =
        tg::testing::error_of([&] { tg::testing::test_sum(tg::testing::test_sin(y.detach())); });
  });
  worker.join();
  EXPECT_CONTAINS(msg, "test_sin");
  EXPECT_CONTAINS(msg, "produced on another thread");
  EXPECT_CONTAINS(msg, "detach()");
  EXPECT_EQ(detached_ok, "(no tg::Error thrown)");
}

// ---- gradcheck ----------------------------------------------------------------------------------

TEST_F(Tape, GradcheckWithNoInputRequiringGradIsAnError) {
  Tensor x = Tensor::randn({3}, 9, DType::Float64);
  Tensor w = Tensor::randn({3}, 10, DType::Float64);
  auto f = [](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{tg::testing::test_mul(in[0], in[1])};
  };
  EXPECT_ERROR_HAS(gradcheck(f, {x, w}), "gradcheck", "none of the 2 inputs requires grad",
                   "set_requires_grad()");
  EXPECT_ERROR_HAS(gradcheck(f, {}), "none of the 0 inputs requires grad");
  w.set_requires_grad();
  EXPECT_TRUE(gradcheck(f, {x, w}).passed);
}
