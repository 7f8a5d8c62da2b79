// The Trainer through the library: training, a stop from a callback, exact resume, the run folder
// (refusal of an existing run, lock, stale temporaries), the checks of --resume, non-finite losses
// and parameters that never reach a checkpoint, and write failures.
#include "train/trainer.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/checkpoint.h"
#include "io/synthetic.h"
#include "nn/model.h"
#include "test_utils.h"
#include "train/checkpointing.h"
#include "train/loss_monitor.h"
#include "train/metrics.h"
#include "train/run_dir.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using tg::train::Trainer;
using tg::train::TrainerConfig;

namespace {

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

std::vector<json> records(const std::string& dir, const std::string& type) {
  std::vector<json> out;
  std::ifstream f(dir + "/metrics.jsonl");
  std::string line;
  while (std::getline(f, line)) {
    json r = json::parse(line);
    if (r["type"] == type) out.push_back(r);
  }
  return out;
}

// A process id that no process has: a child that has already been reaped.
pid_t dead_pid() {
  const pid_t pid = fork();
  if (pid == 0) _exit(0);
  int status = 0;
  waitpid(pid, &status, 0);
  return pid;
}

class TrainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_ = tmp_.file("data.h5");
    tg::io::SyntheticOptions o;
    o.samples = 96;  // 86 training samples: 11 batches of 8 per epoch, the last of 6
    o.in_channels = 2;
    o.out_channels = 4;
    o.height = o.width = 9;
    o.groups = 2;
    o.seed = 3;
    tg::io::write_synthetic_dataset(data_, o);
  }
  TrainerConfig config(const std::string& out) const {
    TrainerConfig c;
    c.data = data_;
    c.device = "cpu";
    c.batch_size = 8;
    c.lr = 0.05;
    c.momentum = 0.9;
    c.groups = 2;
    c.epochs = 3;
    c.log_every = 1;
    c.verbose = false;
    c.output = tmp_.file(out);
    return c;
  }
  // The loss of every step (read on the host in the callback) and the epochs' records.
  struct Run {
    std::vector<double> losses;
    std::vector<tg::train::EpochInfo> epochs;
    tg::train::TrainResult result;
  };
  Run train(const TrainerConfig& c, int64_t stop_at = 0) {
    Run r;
    Trainer t(c);
    t.on_step([&](const tg::train::StepInfo& s) {
      r.losses.push_back(s.loss.item());
      if (s.step == stop_at) t.request_stop();
    });
    t.on_epoch([&](const tg::train::EpochInfo& e) { r.epochs.push_back(e); });
    r.result = t.run();
    return r;
  }
  tg::testing::TempDir tmp_;
  std::string data_;
};

}  // namespace

TEST_F(TrainerTest, TrainsAndWritesTheRunFolder) {
  const TrainerConfig c = config("run");
  Run r = train(c);
  EXPECT_EQ(r.result.steps, 33);
  EXPECT_EQ(r.result.epochs_completed, 3);
  EXPECT_FALSE(r.result.stopped);
  ASSERT_EQ(r.losses.size(), 33u);
  EXPECT_LT(r.losses.back(), 0.5 * r.losses.front());
  ASSERT_EQ(r.epochs.size(), 3u);
  EXPECT_TRUE(std::isfinite(r.epochs.back().val_loss));
  EXPECT_EQ(r.result.best_val_loss,
            std::min({r.epochs[0].val_loss, r.epochs[1].val_loss, r.epochs[2].val_loss}));
  for (const char* f : {"last.h5", "best.h5", "loss.svg", "metrics.jsonl", "tg-train.lock"})
    EXPECT_TRUE(fs::exists(fs::path(c.output) / f)) << f;
  EXPECT_EQ(records(c.output, "step").size(), 33u);
  auto ck = tg::io::load_checkpoint(c.output + "/last.h5");
  ASSERT_TRUE(ck.state.has_value());
  EXPECT_EQ(ck.state->step, 33);
  EXPECT_EQ(ck.state->epoch, 3);
}

// The epoch's train loss is the mean of all of its steps, also when none of them was logged.
TEST_F(TrainerTest, EpochTrainLossIsTheMeanOfEveryStep) {
  TrainerConfig c = config("run");
  c.epochs = 2;
  c.log_every = 1000;
  Run r = train(c);
  ASSERT_EQ(r.losses.size(), 22u);
  ASSERT_EQ(r.epochs.size(), 2u);
  for (int e = 0; e < 2; ++e) {
    double sum = 0;
    for (int i = 0; i < 11; ++i) sum += r.losses[size_t(e * 11 + i)];
    EXPECT_DOUBLE_EQ(r.epochs[size_t(e)].train_loss, sum / 11) << "epoch " << e;
  }
  auto epochs = records(c.output, "epoch");
  ASSERT_EQ(epochs.size(), 2u);
  EXPECT_EQ(epochs[0]["train_loss"].get<double>(), r.epochs[0].train_loss);
  EXPECT_EQ(records(c.output, "step").size(), 1u);  // the last step only
}

// Stopped by a callback mid-epoch, then resumed: every loss, the epochs' train losses and the final
// parameters equal the uninterrupted run's bit for bit; metrics.jsonl holds each step once.
TEST_F(TrainerTest, StopFromACallbackThenResumeIsBitIdentical) {
  Run full = train(config("full"));
  TrainerConfig part = config("part");
  Run first = train(part, 7);
  EXPECT_TRUE(first.result.stopped);
  EXPECT_EQ(first.result.steps, 7);
  ASSERT_EQ(first.losses.size(), 7u);
  auto ck = tg::io::load_checkpoint(part.output + "/last.h5");
  ASSERT_TRUE(ck.state.has_value());
  EXPECT_EQ(ck.state->step, 7);
  EXPECT_EQ(ck.state->batch_in_epoch, 7);

  part.resume = part.output + "/last.h5";
  Run rest = train(part);
  EXPECT_FALSE(rest.result.stopped);
  std::vector<double> joined = first.losses;
  joined.insert(joined.end(), rest.losses.begin(), rest.losses.end());
  ASSERT_EQ(joined.size(), full.losses.size());
  for (size_t i = 0; i < joined.size(); ++i)
    EXPECT_EQ(joined[i], full.losses[i]) << "step " << i + 1;
  ASSERT_EQ(rest.epochs.size(), full.epochs.size());
  for (size_t e = 0; e < full.epochs.size(); ++e) {
    EXPECT_EQ(rest.epochs[e].train_loss, full.epochs[e].train_loss) << "epoch " << e;
    EXPECT_EQ(rest.epochs[e].val_loss, full.epochs[e].val_loss) << "epoch " << e;
  }
  auto a = tg::io::load_checkpoint(config("full").output + "/last.h5");
  auto b = tg::io::load_checkpoint(part.output + "/last.h5");
  ASSERT_EQ(a.params.size(), b.params.size());
  for (size_t i = 0; i < a.params.size(); ++i)
    EXPECT_EQ(a.params[i].second.to_vector<float>(), b.params[i].second.to_vector<float>())
        << a.params[i].first;
  auto sa = records(config("full").output, "step"), sb = records(part.output, "step");
  ASSERT_EQ(sb.size(), sa.size());
  for (size_t i = 0; i < sa.size(); ++i)
    for (const char* k : {"step", "epoch", "loss"}) EXPECT_EQ(sa[i][k], sb[i][k]) << i << " " << k;
}

// A stop right after an epoch's last batch resumes with that epoch's end (validation, records).
TEST_F(TrainerTest, StopAtTheEndOfAnEpochResumesExactly) {
  Run full = train(config("full"));
  TrainerConfig part = config("part");
  Run first = train(part, 11);
  EXPECT_TRUE(first.result.stopped);
  EXPECT_TRUE(first.epochs.empty());
  part.resume = part.output + "/last.h5";
  Run rest = train(part);
  ASSERT_EQ(rest.epochs.size(), 3u);
  EXPECT_EQ(rest.epochs[0].train_loss, full.epochs[0].train_loss);
  EXPECT_EQ(rest.losses.back(), full.losses.back());
}

// The metrics log is cut back to the checkpoint's step (records a killed run wrote after its last
// save, and a torn last line, go).
TEST_F(TrainerTest, ResumeCutsTheMetricsLogToTheCheckpointsStep) {
  TrainerConfig part = config("part");
  train(part, 7);
  {
    std::ofstream f(part.output + "/metrics.jsonl", std::ios::app);
    f << R"({"type":"step","step":8,"epoch":0,"loss":1.0,"samples_per_s":1,"lr":0.05})"
      << "\n";
    f << R"({"type":"step","step":9,"epoch":0,"lo)";
  }
  const tg::train::MetricsHistory h =
      tg::train::truncate_metrics(part.output + "/metrics.jsonl", 7);
  EXPECT_EQ(h.kept, 7);
  EXPECT_EQ(h.dropped, 2);
  ASSERT_EQ(h.train.size(), 7u);
  EXPECT_EQ(h.train.back().step, 7.0);
  EXPECT_EQ(records(part.output, "step").size(), 7u);
  part.resume = part.output + "/last.h5";
  train(part);
  auto steps = records(part.output, "step");
  ASSERT_EQ(steps.size(), 33u);
  for (size_t i = 0; i < steps.size(); ++i)
    EXPECT_EQ(steps[i]["step"].get<int64_t>(), int64_t(i) + 1);
}

TEST_F(TrainerTest, AnExistingRunIsRefusedUnlessResumeOrOverwrite) {
  TrainerConfig c = config("run");
  c.epochs = 1;
  train(c);
  const std::string best = read_file(c.output + "/best.h5");
  const std::string metrics = read_file(c.output + "/metrics.jsonl");
  try {
    train(c);
    ADD_FAILURE() << "expected a UsageError";
  } catch (const tg::train::UsageError& e) {
    EXPECT_CONTAINS(e.what(), "already holds a run");
    EXPECT_CONTAINS(e.what(), "--resume " + c.output + "/last.h5");
    EXPECT_CONTAINS(e.what(), "--overwrite");
  }
  EXPECT_EQ(read_file(c.output + "/best.h5"), best);
  EXPECT_EQ(read_file(c.output + "/metrics.jsonl"), metrics);
  {  // a checkpoint of another folder resumed into this run would cut its metrics: refused
    TrainerConfig other = config("other");
    other.epochs = 1;
    train(other);
    TrainerConfig k = c;
    k.resume = other.output + "/last.h5";
    k.epochs = 2;
    EXPECT_CONTAINS(tg::testing::error_of([&] { train(k); }), "is not one of its checkpoints");
    EXPECT_EQ(read_file(c.output + "/metrics.jsonl"), metrics);
  }
  c.overwrite = true;
  c.lr = 0.01;
  train(c);
  EXPECT_EQ(records(c.output, "step").size(), 11u);
  EXPECT_EQ(records(c.output, "step")[0]["lr"].get<double>(), 0.01);
}

TEST_F(TrainerTest, ALockedOutputFolderIsRefused) {
  TrainerConfig c = config("run");
  tg::train::RunDir held(c.output);  // as another process running there would
  const std::string msg = tg::testing::error_of([&] { train(c); });
  EXPECT_CONTAINS(msg, "is in use by another run (process " + std::to_string(getpid()));
  EXPECT_CONTAINS(msg, "tg-train.lock");
  EXPECT_FALSE(fs::exists(c.output + "/metrics.jsonl"));
}

TEST_F(TrainerTest, StaleTemporariesOfDeadProcessesAreRemoved) {
  const std::string out = tmp_.file("run");
  fs::create_directories(out);
  const std::string dead = "last.h5.tmp-" + std::to_string(dead_pid()) + "-3";
  const std::string live = "best.h5.tmp-1-0";  // pid 1 always runs
  tg::testing::write_bytes(out + "/" + dead, "partial");
  tg::testing::write_bytes(out + "/" + live, "partial");
  tg::testing::write_bytes(out + "/notes.tmp-x", "kept");
  {
    tg::train::RunDir d(out);
    EXPECT_EQ(d.removed_temporaries(), std::vector<std::string>{dead});
  }
  EXPECT_FALSE(fs::exists(out + "/" + dead));
  EXPECT_TRUE(fs::exists(out + "/" + live));
  EXPECT_TRUE(fs::exists(out + "/notes.tmp-x"));
}

TEST_F(TrainerTest, AnUnwritableOutputFolderIsReportedBeforeTraining) {
  TrainerConfig c = config("run");
  c.output = "/proc";  // a folder nobody can create files in, root included
  int steps = 0;
  Trainer t(c);
  t.on_step([&](const tg::train::StepInfo&) { ++steps; });
  EXPECT_ERROR_HAS(t.run(), "the output folder /proc is not writable");
  EXPECT_EQ(steps, 0);
}

TEST_F(TrainerTest, OutputsThatAreNotFilesAreReportedAtStart) {
  TrainerConfig c = config("run");
  c.epochs = 1;
  train(c);
  c.resume = c.output + "/last.h5";
  c.epochs = 2;
  fs::remove(c.output + "/loss.svg");
  fs::create_directory(c.output + "/loss.svg");
  EXPECT_ERROR_HAS(train(c), "loss.svg is a folder");
  fs::remove(c.output + "/loss.svg");
  fs::remove(c.output + "/metrics.jsonl");
  fs::create_symlink("/dev/full", c.output + "/metrics.jsonl");
  EXPECT_ERROR_HAS(train(c), "metrics.jsonl is not a regular file");
}

TEST_F(TrainerTest, AWriteFailureOfTheMetricsLogIsAnError) {
  tg::train::MetricsLog log("/dev/full");
  EXPECT_ERROR_HAS(log.step(1, 0, 0.5, 100, 0.05), "could not write the metrics log /dev/full",
                   "No space left on device");
  EXPECT_ERROR_HAS(tg::train::write_file_atomically(tmp_.file("missing/dir/plot.svg"), "x"),
                   "missing/dir/plot.svg");
}

// --lr 1e30 makes the run diverge: it stops with the step where the loss first became non-finite
// (or the parameter that did), and last.h5 stays the good one of the earlier run.
TEST_F(TrainerTest, ANonFiniteRunNeverOverwritesTheGoodCheckpoint) {
  TrainerConfig c = config("run");
  c.epochs = 1;
  train(c);
  const std::string good = read_file(c.output + "/last.h5");
  c.resume = c.output + "/last.h5";
  c.epochs = 3;
  c.lr = 1e30;
  c.log_every = 100;
  const std::string msg = tg::testing::error_of([&] { train(c); });
  EXPECT_CONTAINS(msg, "non-finite");
  EXPECT_CONTAINS(msg, "step");
  EXPECT_CONTAINS(msg, "lower --lr (now 1e+30)");
  EXPECT_EQ(read_file(c.output + "/last.h5"), good);
  EXPECT_EQ(read_file(c.output + "/best.h5").empty(), false);
}

TEST(LossMonitor, RecordsTheFirstNonFiniteStepAndSumsTheFiniteLosses) {
  tg::train::LossMonitor m(tg::Device::CPU);
  m.record(tg::Tensor::full({}, 0.5), 1);
  m.record(tg::Tensor::full({}, 0.25, tg::DType::Float64), 2, 2.0);
  m.record(tg::Tensor::full({}, NAN), 3);
  m.record(tg::Tensor::full({}, INFINITY), 4);
  auto s = m.read();
  EXPECT_EQ(s.sum, 1.0);
  EXPECT_EQ(s.count, 2);
  EXPECT_EQ(s.first_nonfinite_step, 3);
  EXPECT_TRUE(std::isnan(s.first_nonfinite_loss));
  m.reset_epoch();
  s = m.read();
  EXPECT_EQ(s.count, 0);
  EXPECT_EQ(s.first_nonfinite_step, 3);
}

TEST(LossMonitor, CudaMatchesCpu) {
  TG_SKIP_WITHOUT_GPU();
  tg::train::LossMonitor m(tg::Device::CUDA);
  m.record(tg::Tensor::full({}, 0.5).cuda(), 1);
  m.record(tg::Tensor::full({}, 0.25, tg::DType::Float64).cuda(), 2, 2.0);
  m.record(tg::Tensor::full({}, INFINITY).cuda(), 3);
  m.record(tg::Tensor::full({}, NAN).cuda(), 4);
  auto s = m.read();
  EXPECT_EQ(s.sum, 1.0);
  EXPECT_EQ(s.count, 2);
  EXPECT_EQ(s.first_nonfinite_step, 3);
  EXPECT_EQ(s.first_nonfinite_loss, INFINITY);
}

TEST_F(TrainerTest, ResumeRefusesAnotherSettingThatDecidesTheDataOrderOrTheModel) {
  TrainerConfig c = config("run");
  train(c, 5);
  c.resume = c.output + "/last.h5";
  const std::string other = tmp_.file("other.h5");
  fs::copy_file(data_, other);
  struct Case {
    std::function<void(TrainerConfig&)> change;
    std::vector<std::string> words;
  };
  const std::vector<Case> cases = {
      {[](TrainerConfig& k) { k.batch_size = 16; },
       {"--batch-size is 16", "but 8", "pass --batch-size 8"}},
      {[](TrainerConfig& k) { k.val_fraction = 0.2; }, {"--val-fraction is 0.2", "but 0.1"}},
      {[](TrainerConfig& k) { k.seed = 9; }, {"--seed is 9", "but 0", "pass --seed 0"}},
      {[](TrainerConfig& k) { k.shuffle = false; },
       {"shuffling is false", "run without --no-shuffle"}},
      {[](TrainerConfig& k) { k.dtype = "float64"; }, {"--dtype is float64", "but float32"}},
      {[](TrainerConfig& k) { k.groups = 4; }, {"--groups is 4", "but 2"}},
      {[&](TrainerConfig& k) { k.data = other; }, {"--data is " + other, "pass --data " + data_}},
  };
  for (const Case& k : cases) {
    TrainerConfig changed = c;
    k.change(changed);
    try {
      train(changed);
      ADD_FAILURE() << "expected a UsageError for " << k.words[0];
    } catch (const tg::train::UsageError& e) {
      for (const std::string& w : k.words) EXPECT_CONTAINS(e.what(), w);
      EXPECT_CONTAINS(e.what(), "--init " + c.resume);
    }
  }
}

// Checkpoints with damaged or missing training state: each an error naming what is wrong.
TEST_F(TrainerTest, ResumeValidatesTheSavedState) {
  TrainerConfig c = config("run");
  train(c, 5);
  const auto good = tg::io::load_checkpoint(c.output + "/last.h5");
  auto resume_from = [&](const std::function<void(tg::io::TrainState&)>& damage) {
    tg::io::TrainState s = *good.state;
    damage(s);
    const std::string path = c.output + "/damaged.h5";  // in the run folder
    tg::io::save_checkpoint(path, good.params, &s);
    TrainerConfig k = c;
    k.resume = path;
    return tg::testing::error_of([&] { train(k); });
  };
  std::string m = resume_from([](tg::io::TrainState& s) { s.config_json = "{\"data\": \"x.h5\""; });
  EXPECT_CONTAINS(m, "config_json is not a valid JSON object");
  m = resume_from(
      [](tg::io::TrainState& s) { s.momentum_buffers.erase(s.momentum_buffers.begin()); });
  EXPECT_CONTAINS(
      m, "train_state/momentum_buffer/" + good.state->momentum_buffers[0].first + " is missing");
  EXPECT_CONTAINS(m, "--init");
  m = resume_from([](tg::io::TrainState& s) { s.momentum_buffers.clear(); });
  EXPECT_CONTAINS(m, "is missing");
  m = resume_from([](tg::io::TrainState& s) { s.step = int64_t(1) << 62; });
  EXPECT_CONTAINS(m, "train_state says step 4611686018427387904");
  m = resume_from([](tg::io::TrainState& s) { s.epoch = 1000000; });
  EXPECT_CONTAINS(m, "epoch 1000000");
  m = resume_from([](tg::io::TrainState& s) { s.batch_in_epoch = 12; });
  EXPECT_CONTAINS(m, "an epoch of this run has 11 batches");
  m = resume_from([](tg::io::TrainState& s) { s.scalars["best_val_loss"] = NAN; });
  EXPECT_CONTAINS(m, "best_val_loss is NaN");
  m = resume_from([](tg::io::TrainState& s) {
    tg::Tensor inf = s.momentum_buffers[0].second.clone();
    inf.data<float>()[0] = INFINITY;
    s.momentum_buffers[0].second = inf;
  });
  EXPECT_CONTAINS(m, "momentum buffer '" + good.state->momentum_buffers[0].first + "'");
  EXPECT_CONTAINS(m, "has a non-finite value (inf)");
  {  // a NaN parameter given to --init is named
    auto params = good.params;
    tg::Tensor nan = params[0].second.clone();
    nan.data<float>()[1] = NAN;
    params[0].second = nan;
    tg::io::save_checkpoint(tmp_.file("nan.h5"), params);
    TrainerConfig k = config("init");
    k.init = tmp_.file("nan.h5");
    const std::string e = tg::testing::error_of([&] { train(k); });
    EXPECT_CONTAINS(e, "parameter '" + params[0].first + "'");
    EXPECT_CONTAINS(e, "non-finite value (nan) at flat index 1");
  }
}

TEST_F(TrainerTest, SettingsOutOfBoundsAreUsageErrors) {
  auto usage = [&](const std::function<void(TrainerConfig&)>& change) {
    TrainerConfig c = config("run");
    change(c);
    try {
      Trainer t(c);
    } catch (const tg::train::UsageError& e) {
      return std::string(e.what());
    }
    return std::string("(no UsageError)");
  };
  EXPECT_CONTAINS(usage([](TrainerConfig& c) { c.batch_size = INT64_MAX; }),
                  "--batch-size 9223372036854775807 is out of range");
  EXPECT_CONTAINS(usage([](TrainerConfig& c) { c.epochs = INT64_MAX; }), "--epochs");
  EXPECT_CONTAINS(usage([](TrainerConfig& c) { c.dampening = NAN; }),
                  "--dampening nan: expected a finite number");
  EXPECT_CONTAINS(usage([](TrainerConfig& c) { c.lr = INFINITY; }), "--lr inf");
  EXPECT_CONTAINS(usage([](TrainerConfig& c) { c.val_fraction = 0.95; }), "--val-fraction");
  EXPECT_CONTAINS(usage([](TrainerConfig& c) {
                    c.resume = "a.h5";
                    c.overwrite = true;
                  }),
                  "--overwrite and --resume");
}

// The largest --epochs with a small --steps runs exactly --steps steps.
TEST_F(TrainerTest, ManyEpochsWithFewStepsRunTheSteps) {
  TrainerConfig c = config("run");
  c.epochs = tg::train::kMaxEpochs;
  c.steps = 3;
  Run r = train(c);
  EXPECT_EQ(r.result.steps, 3);
  ASSERT_EQ(r.epochs.size(), 1u);
  EXPECT_FALSE(r.epochs[0].complete);
}
