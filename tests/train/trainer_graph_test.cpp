// --cuda-graph: how a run resolves it (auto is off on the CPU, under mpirun and with streamed
// batches; on is refused where it cannot be), tg-train's flag, and on a GPU a run with the step as
// a CUDA graph that matches --cuda-graph off bit for bit: losses, validation, checkpoints, resume.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "io/checkpoint.h"
#include "io/synthetic.h"
#include "nn/model.h"
#include "test_utils.h"
#include "train/config.h"
#include "train/trainer.h"

namespace tg {
namespace {

using train::resolve_cuda_graph;
using train::TrainerConfig;
using train::UsageError;

std::string usage_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const UsageError& e) {
    return e.what();
  }
  return "(no UsageError)";
}

TEST(CudaGraphFlag, ResolvesByDeviceProcessesAndData) {
  EXPECT_FALSE(resolve_cuda_graph("auto", Device::CPU, false, true));
  EXPECT_FALSE(resolve_cuda_graph("auto", Device::CPU, false, false));
  EXPECT_TRUE(resolve_cuda_graph("auto", Device::CUDA, false, true));
  EXPECT_FALSE(resolve_cuda_graph("auto", Device::CUDA, false, false));  // streamed batches
  EXPECT_FALSE(resolve_cuda_graph("auto", Device::CUDA, true, true));    // data-parallel
  EXPECT_FALSE(resolve_cuda_graph("off", Device::CUDA, false, true));
  EXPECT_TRUE(resolve_cuda_graph("on", Device::CUDA, false, false));
  EXPECT_CONTAINS(usage_of([] { resolve_cuda_graph("on", Device::CPU, false, true); }),
                  "--cuda-graph on needs CUDA training, but the run trains on cpu");
  EXPECT_CONTAINS(usage_of([] { resolve_cuda_graph("on", Device::CUDA, true, true); }),
                  "--cuda-graph on cannot be used under mpirun");
  EXPECT_CONTAINS(usage_of([] { resolve_cuda_graph("always", Device::CUDA, false, true); }),
                  "--cuda-graph 'always': expected one of auto, on, off");
}

TEST(CudaGraphFlag, ConfigValidationNamesTheFlag) {
  TrainerConfig c;
  EXPECT_EQ(c.cuda_graph, "auto");
  c.validate();
  c.cuda_graph = "sometimes";
  EXPECT_CONTAINS(usage_of([&] { c.validate(); }), "--cuda-graph 'sometimes'");
  c.cuda_graph = "on";
  c.device = "cpu";
  EXPECT_CONTAINS(usage_of([&] { c.validate(); }), "--cuda-graph on needs CUDA training");
  c.device = "cuda";
  c.validate();
}

class TrainerGraph : public ::testing::Test {
 protected:
  void SetUp() override {
    data_ = tmp_.file("data.h5");
    io::SyntheticOptions o;
    o.samples = 90;  // 72 training samples: 9 batches of 8 an epoch
    o.in_channels = 3;
    o.out_channels = 16;  // 3 -> 16, k3: the fused path
    o.height = o.width = 10;
    o.groups = 8;
    o.seed = 5;
    io::write_synthetic_dataset(data_, o);
  }
  TrainerConfig config(const std::string& out, const std::string& graph) const {
    TrainerConfig c;
    c.data = data_;
    c.device = cuda::is_available() ? "cuda" : "cpu";
    c.batch_size = 8;
    c.groups = 8;
    c.epochs = 2;
    c.log_every = 1;
    c.val_fraction = 0.2;
    c.verbose = false;
    c.data_cache = "device";
    c.cuda_graph = graph;
    c.output = tmp_.file(out);
    return c;
  }
  struct Run {
    std::vector<double> losses;        // every step's, from the callback
    std::vector<std::string> metrics;  // metrics.jsonl without the timing fields
    io::NamedTensors params;
    int64_t steps = 0;
  };
  Run train(const TrainerConfig& c, int64_t stop_at = 0) {
    Run r;
    train::Trainer t(c);
    t.on_step([&](const train::StepInfo& s) {
      r.losses.push_back(s.loss.item());
      if (s.step == stop_at) t.request_stop();
    });
    r.steps = t.run().steps;
    std::ifstream f(c.output + "/metrics.jsonl");
    std::string line;
    while (std::getline(f, line)) {
      nlohmann::json j = nlohmann::json::parse(line);
      for (const char* timing : {"samples_per_s", "gpu_peak_bytes"}) j.erase(timing);
      r.metrics.push_back(j.dump());
    }
    auto ck = io::load_checkpoint(c.output + "/last.h5");
    r.params = ck.params;
    return r;
  }
  testing::TempDir tmp_;
  std::string data_;
};

// The whole run folder's content but the timings, and every step's loss, equal bit for bit with
// the step as a CUDA graph and op by op; also a run stopped inside an epoch and resumed.
TEST_F(TrainerGraph, RunsAreBitIdenticalWithAndWithoutTheGraph) {
  TG_SKIP_WITHOUT_GPU();
  const Run off = train(config("off", "off"));
  const Run on = train(config("on", "auto"));
  ASSERT_EQ(off.losses.size(), 18u);
  EXPECT_EQ(on.losses, off.losses);
  EXPECT_EQ(on.metrics, off.metrics);
  testing::expect_same(on.params, off.params);
  const auto off_ck = io::load_checkpoint(tmp_.file("off") + "/last.h5");
  const auto on_ck = io::load_checkpoint(tmp_.file("on") + "/last.h5");
  ASSERT_TRUE(off_ck.state.has_value() && on_ck.state.has_value());
  testing::expect_same(on_ck.state->momentum_buffers, off_ck.state->momentum_buffers);
  EXPECT_EQ(on_ck.state->step, off_ck.state->step);

  train(config("resumed", "auto"), 12);
  TrainerConfig c = config("resumed", "auto");
  c.resume = tmp_.file("resumed") + "/last.h5";
  const Run resumed = train(c);
  testing::expect_same(resumed.params, off.params);

  // A batch size that leaves an uneven last batch: that one runs eagerly.
  TrainerConfig odd_off = config("odd_off", "off"), odd_on = config("odd_on", "on");
  odd_off.batch_size = odd_on.batch_size = 10;  // 72 = 7 x 10 + 2
  const Run a = train(odd_off), b = train(odd_on);
  ASSERT_EQ(a.losses.size(), 16u);
  EXPECT_EQ(b.losses, a.losses);
  testing::expect_same(b.params, a.params);
}

TEST_F(TrainerGraph, OnWithStreamedBatchesMatchesOff) {
  TG_SKIP_WITHOUT_GPU();
  TrainerConfig off = config("off", "off"), on = config("on", "on");
  off.data_cache = on.data_cache = "off";
  const Run a = train(off), b = train(on);
  EXPECT_EQ(b.losses, a.losses);
  testing::expect_same(b.params, a.params);
}

TEST(TgTrainCudaGraphFlag, BadValuesExitWith2) {
  const std::string train = std::string(TG_BINARY_DIR) + "/examples/tg-train";
  testing::TempDir tmp;
  auto r = testing::run_command(train + " --device cpu --cuda-graph sometimes --output " +
                                tmp.file("run"));
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_CONTAINS(r.output, "--cuda-graph");
  r = testing::run_command(train + " --device cpu --cuda-graph on --epochs 1 --output " +
                           tmp.file("run"));
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_CONTAINS(r.output, "--cuda-graph on needs CUDA training");
  EXPECT_FALSE(std::filesystem::exists(tmp.file("run/metrics.jsonl")));
}

}  // namespace
}  // namespace tg
