// End-to-end tests of the tg-train program: it runs as a separate process, as users run it.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "io/checkpoint.h"
#include "io/dataset.h"
#include "io/synthetic.h"
#include "test_utils.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const std::string kTrain = std::string(TG_BINARY_DIR) + "/examples/tg-train";

using Result = tg::testing::CommandResult;

Result run(const std::string& args) { return tg::testing::run_command(kTrain + " " + args); }

std::vector<json> records(const fs::path& dir, const std::string& type) {
  std::vector<json> out;
  std::ifstream f(dir / "metrics.jsonl");
  std::string line;
  while (std::getline(f, line)) {
    json r = json::parse(line);
    if (r["type"] == type) out.push_back(r);
  }
  return out;
}

class TrainProgram : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("tg-train-test-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    data_ = (dir_ / "data.h5").string();
    tg::io::SyntheticOptions o;
    o.samples = 96;
    o.in_channels = 2;
    o.out_channels = 4;
    o.height = o.width = 9;
    o.groups = 2;
    o.seed = 3;
    tg::io::write_synthetic_dataset(data_, o);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string common() const {
    return "--data " + data_ + " --device cpu --batch-size 8 --lr 0.05 --momentum 0.9 --groups 2 ";
  }
  fs::path dir_;
  std::string data_;
};

}  // namespace

TEST_F(TrainProgram, ShortTrainingLowersTheLoss) {
  Result r = run(common() + "--epochs 4 --log-every 1 --output " + (dir_ / "out").string());
  ASSERT_EQ(r.code, 0) << r.output;
  auto steps = records(dir_ / "out", "step");
  ASSERT_GE(steps.size(), 20u);
  double first = steps.front()["loss"], last = steps.back()["loss"];
  EXPECT_LT(last, 0.5 * first) << r.output;
  auto epochs = records(dir_ / "out", "epoch");
  ASSERT_EQ(epochs.size(), 4u);
  EXPECT_TRUE(epochs.back().contains("val_loss"));
  for (const char* f : {"last.h5", "best.h5", "loss.svg", "metrics.jsonl"})
    EXPECT_TRUE(fs::exists(dir_ / "out" / f)) << f;
  auto ck = tg::io::load_checkpoint((dir_ / "out" / "last.h5").string());
  EXPECT_TRUE(ck.has_param("conv.weight"));
  ASSERT_TRUE(ck.state.has_value());
  EXPECT_EQ(ck.state->step, int64_t(steps.back()["step"]));
  // --momentum 0.9 reached the optimizer: a buffer per parameter, and the run differs from plain SGD
  // from the third step on (the first update uses buf = g in both)
  EXPECT_EQ(ck.state->momentum_buffers.size(), ck.params.size());
  EXPECT_NE(ck.state->config_json.find("0.9"), std::string::npos) << ck.state->config_json;
  Result plain = run("--data " + data_ + " --device cpu --batch-size 8 --lr 0.05 --momentum 0 " +
                     "--groups 2 --epochs 1 --steps 4 --log-every 1 --output " + (dir_ / "plain").string());
  ASSERT_EQ(plain.code, 0) << plain.output;
  auto ps = records(dir_ / "plain", "step");
  ASSERT_EQ(ps.size(), 4u);
  EXPECT_EQ(ps[0]["loss"].get<double>(), steps[0]["loss"].get<double>());
  EXPECT_NE(ps[3]["loss"].get<double>(), steps[3]["loss"].get<double>());
}

TEST_F(TrainProgram, ResumeReproducesTheUninterruptedRun) {
  const std::string a = (dir_ / "a").string(), b = (dir_ / "b").string();
  ASSERT_EQ(run(common() + "--epochs 3 --steps 17 --log-every 1 --output " + a).code, 0);
  // the same run, stopped mid-epoch after 7 steps, then resumed to 17
  ASSERT_EQ(run(common() + "--epochs 3 --steps 7 --log-every 1 --output " + b).code, 0);
  Result r = run(common() + "--epochs 3 --steps 17 --log-every 1 --output " + b + " --resume " +
                 b + "/last.h5");
  ASSERT_EQ(r.code, 0) << r.output;
  auto sa = records(a, "step"), sb = records(b, "step");
  ASSERT_EQ(sa.size(), 17u);
  ASSERT_EQ(sb.size(), 17u);
  for (size_t i = 0; i < sa.size(); ++i) {
    EXPECT_EQ(sa[i]["step"], sb[i]["step"]);
    EXPECT_EQ(sa[i]["loss"].get<double>(), sb[i]["loss"].get<double>()) << "step " << i + 1;
  }
  auto pa = tg::io::load_checkpoint(a + "/last.h5"), pb = tg::io::load_checkpoint(b + "/last.h5");
  for (size_t i = 0; i < pa.params.size(); ++i)
    EXPECT_EQ(pa.params[i].second.to_vector<float>(), pb.params[i].second.to_vector<float>())
        << pa.params[i].first;
}

TEST_F(TrainProgram, CtrlCSavesACheckpointAndExitsCleanly) {
  const std::string out = (dir_ / "int").string();
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    freopen("/dev/null", "w", stderr);
    execl(kTrain.c_str(), kTrain.c_str(), "--data", data_.c_str(), "--device", "cpu", "--epochs",
          "100000", "--batch-size", "8", "--groups", "2", "--output", out.c_str(), (char*)nullptr);
    _exit(127);
  }
  // wait until training has produced a step record, then interrupt
  for (int i = 0; i < 200 && records(out, "step").empty(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  kill(pid, SIGINT);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 130);
  auto ck = tg::io::load_checkpoint(out + "/last.h5");
  ASSERT_TRUE(ck.state.has_value());
  EXPECT_GT(ck.state->step, 0);
}

TEST_F(TrainProgram, BadInputGivesAClearErrorAndNonZeroExit) {
  const std::string out = " --output " + (dir_ / "bad").string();
  Result r = run("--data " + (dir_ / "missing.h5").string() + out);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("missing.h5"), std::string::npos) << r.output;

  r = run("--data " + data_ + " --device cpu --groups 3" + out);  // 3 does not divide 4
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.output.find("--groups 3"), std::string::npos) << r.output;

  r = run(common() + "--lr -1" + out);
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("--lr"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("-1"), std::string::npos) << r.output;
  r = run(common() + "--device tpu" + out);
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("tpu"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--device"), std::string::npos) << r.output;

  {  // garbage file
    std::ofstream((dir_ / "garbage.h5").string()) << "not hdf5";
    r = run("--data " + (dir_ / "garbage.h5").string() + out);
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.output.find("garbage.h5"), std::string::npos) << r.output;
  }
  {  // NaN in the data
    tg::Tensor x = tg::Tensor::rand({8, 2, 9, 9}, 1);
    tg::Tensor y = tg::Tensor::randn({8, 4, 7, 7}, 2);
    y.data<float>()[5 * 196 + 3] = NAN;
    tg::io::DatasetWriterOptions wo;
    wo.check_finite = false;
    tg::io::write_dataset((dir_ / "nan.h5").string(), x, y, wo);
    r = run("--data " + (dir_ / "nan.h5").string() + " --device cpu --groups 2 --val-fraction 0" + out);
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.output.find("non-finite"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("sample 5"), std::string::npos) << r.output;
  }
  {  // --init from a model of other shapes
    tg::io::save_checkpoint((dir_ / "wrong.h5").string(),
                            {{"conv.weight", tg::Tensor::zeros({4, 3, 3, 3})}});
    r = run(common() + "--init " + (dir_ / "wrong.h5").string() + out);
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.output.find("conv.weight"), std::string::npos) << r.output;
  }
}

TEST_F(TrainProgram, MakeDataWritesADatasetOfTheAskedShape) {
  const std::string path = (dir_ / "made.h5").string();
  Result r = run("make-data --output " + path +
                 " --samples 10 --in-channels 3 --out-channels 6 --height 12 --width 10 --kernel 3 --groups 3");
  ASSERT_EQ(r.code, 0) << r.output;
  auto info = tg::io::inspect_dataset(path);
  EXPECT_EQ(info.x_shape, (tg::Shape{10, 3, 12, 10}));
  EXPECT_EQ(info.y_shape, (tg::Shape{10, 6, 10, 8}));
}
