// tg-train as a process, for what only a process shows: exit codes and messages of refused runs, a
// second process on a locked folder, Ctrl-C during make-data, a diverging run, bad numbers.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "dist/process_group.h"
#include "io/checkpoint.h"
#include "io/synthetic.h"
#include "test_utils.h"

namespace fs = std::filesystem;

namespace {

const std::string kTrain = std::string(TG_BINARY_DIR) + "/examples/tg-train";

tg::testing::CommandResult run(const std::string& args) {
  return tg::testing::run_command(kTrain + " " + args);
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// Starts tg-train with args (stderr to /dev/null); returns its pid.
pid_t spawn(const std::vector<std::string>& args) {
  const pid_t pid = fork();
  if (pid == 0) {
    freopen("/dev/null", "w", stderr);
    freopen("/dev/null", "w", stdout);
    std::vector<char*> argv{const_cast<char*>(kTrain.c_str())};
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(kTrain.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

int wait_exit(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

template <typename F>
bool wait_for(F&& cond, double seconds = 30) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

class TgTrainProcess : public ::testing::Test {
 protected:
  void SetUp() override {
    data_ = tmp_.file("data.h5");
    tg::io::SyntheticOptions o;
    o.samples = 96;
    o.in_channels = 2;
    o.out_channels = 4;
    o.height = o.width = 9;
    o.groups = 2;
    o.seed = 3;
    tg::io::write_synthetic_dataset(data_, o);
  }
  std::string common(const std::string& out) const {
    return "--data " + data_ + " --device cpu --batch-size 8 --groups 2 --output " +
           tmp_.file(out) + " ";
  }
  tg::testing::TempDir tmp_;
  std::string data_;
};

}  // namespace

TEST_F(TgTrainProcess, ASecondRunIntoAnExistingRunIsRefusedWithExit2) {
  ASSERT_EQ(run(common("run") + "--epochs 1").code, 0);
  const std::string best = read_file(tmp_.file("run/best.h5"));
  const std::string metrics = read_file(tmp_.file("run/metrics.jsonl"));
  auto r = run(common("run") + "--epochs 2 --lr 0.01");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_CONTAINS(r.output, "already holds a run");
  EXPECT_CONTAINS(r.output, "--resume " + tmp_.file("run/last.h5"));
  EXPECT_CONTAINS(r.output, "--overwrite");
  EXPECT_EQ(read_file(tmp_.file("run/best.h5")), best);
  EXPECT_EQ(read_file(tmp_.file("run/metrics.jsonl")), metrics);
  r = run(common("run") + "--epochs 1 --lr 0.01 --overwrite");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_NE(read_file(tmp_.file("run/metrics.jsonl")), metrics);
  r = run(common("run") + "--overwrite --resume " + tmp_.file("run/last.h5"));
  EXPECT_EQ(r.code, 2) << r.output;
}

TEST_F(TgTrainProcess, ASecondProcessOnALockedFolderExitsWithAClearError) {
  const std::string out = tmp_.file("run");
  const pid_t first = spawn({"--data", data_, "--device", "cpu", "--batch-size", "8", "--groups",
                             "2", "--epochs", "100000", "--log-every", "1", "--output", out});
  ASSERT_TRUE(wait_for([&] { return fs::exists(out + "/metrics.jsonl"); })) << "no run started";
  ASSERT_TRUE(wait_for([&] { return fs::exists(out + "/last.h5"); }, 60));
  auto r = run(common("run") + "--resume " + out + "/last.h5 --epochs 100000");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_CONTAINS(r.output, "is in use by another run (process " + std::to_string(first));
  kill(first, SIGINT);
  EXPECT_EQ(wait_exit(first), 130);
  r = run(common("run") + "--resume " + out + "/last.h5 --epochs 1");  // free again
  EXPECT_EQ(r.code, 0) << r.output;
}

TEST_F(TgTrainProcess, TemporariesOfKilledRunsAreRemovedAtTheNextStart) {
  const std::string out = tmp_.file("run");
  fs::create_directories(out);
  const pid_t child = fork();
  if (child == 0) _exit(0);
  wait_exit(child);
  const std::string stale = out + "/last.h5.tmp-" + std::to_string(child) + "-0";
  tg::testing::write_bytes(stale, "partial checkpoint");
  auto r = run(common("run") + "--epochs 1");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_CONTAINS(r.output, "removed 1 temporary file(s) of ended processes");
}

TEST_F(TgTrainProcess, CtrlCDuringMakeDataLeavesNoFile) {
  const std::string dir = tmp_.file("made");
  fs::create_directories(dir);
  const std::string path = dir + "/big.h5";
  const pid_t pid = spawn({"make-data", "--output", path, "--samples", "2000000", "--in-channels",
                           "3", "--out-channels", "8", "--height", "16", "--width", "16"});
  auto has_temp = [&] {
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().filename().string().find(".tmp-") != std::string::npos) return true;
    return false;
  };
  ASSERT_TRUE(wait_for(has_temp)) << "make-data wrote no temporary file";
  kill(pid, SIGINT);
  EXPECT_EQ(wait_exit(pid), 130);
  EXPECT_TRUE(fs::is_empty(dir)) << "left: "
                                 << (fs::is_empty(dir)
                                         ? ""
                                         : fs::directory_iterator(dir)->path().string());
}

// The case: --resume with --lr 1e30 --log-every 100 saved NaN parameters over last.h5.
TEST_F(TgTrainProcess, ADivergingRunStopsAndKeepsTheGoodCheckpoint) {
  ASSERT_EQ(run(common("run") + "--epochs 1").code, 0);
  const std::string good = read_file(tmp_.file("run/last.h5"));
  auto r = run(common("run") + "--epochs 3 --lr 1e30 --log-every 100 --resume " +
               tmp_.file("run/last.h5"));
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_CONTAINS(r.output, "non-finite");
  EXPECT_CONTAINS(r.output, "lower --lr");
  EXPECT_EQ(read_file(tmp_.file("run/last.h5")), good);
  auto ck = tg::io::load_checkpoint(tmp_.file("run/last.h5"));
  ASSERT_TRUE(ck.state.has_value());
  EXPECT_EQ(ck.state->step, 11);
}

TEST_F(TgTrainProcess, BadNumbersAreBadArguments) {
  for (const char* bad :
       {"--batch-size 9223372036854775807", "--epochs 9223372036854775807 --steps 3",
        "--dampening nan", "--lr inf", "--momentum nan", "--weight-decay -inf",
        "--val-fraction nan", "--steps -1", "--log-every 0"}) {
    auto r = run(common("run") + bad);
    EXPECT_EQ(r.code, 2) << bad << ": " << r.output;
    const std::string flag = std::string(bad).substr(0, std::string(bad).find(' '));
    EXPECT_CONTAINS(r.output, flag);
  }
  auto r = run("make-data --output " + tmp_.file("x.h5") + " --noise nan");
  EXPECT_EQ(r.code, 2) << r.output;
  r = run("make-data --output " + tmp_.file("x.h5") + " --samples 9223372036854775807");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_CONTAINS(r.output, "--samples");
  EXPECT_FALSE(fs::exists(tmp_.file("run/metrics.jsonl")));
}

TEST_F(TgTrainProcess, ResumeWithAnotherBatchSizeIsRefused) {
  ASSERT_EQ(run(common("run") + "--epochs 1 --steps 5").code, 0);
  auto r = run("--data " + data_ + " --device cpu --batch-size 16 --groups 2 --output " +
               tmp_.file("run") + " --resume " + tmp_.file("run/last.h5"));
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_CONTAINS(r.output, "--batch-size is 16 in this run but 8 in the run being resumed");
  EXPECT_CONTAINS(r.output, "pass --batch-size 8");
}

TEST_F(TgTrainProcess, AMetricsLogThatCannotBeWrittenIsAnError) {
  ASSERT_EQ(run(common("run") + "--epochs 1").code, 0);
  fs::remove(tmp_.file("run/metrics.jsonl"));
  fs::create_symlink("/dev/full", tmp_.file("run/metrics.jsonl"));
  auto r = run(common("run") + "--epochs 2 --resume " + tmp_.file("run/last.h5"));
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_CONTAINS(r.output, "metrics.jsonl is not a regular file");
  r = run("--data " + data_ + " --device cpu --groups 2 --epochs 1 --output /proc");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_CONTAINS(r.output, "the output folder /proc is not writable");
}

TEST_F(TgTrainProcess, ResumeUnderAnotherNumberOfRanksIsRefused) {
  if (!tg::dist::built()) GTEST_SKIP() << "built without MPI (TG_WITH_DIST)";
  if (std::system("command -v mpirun > /dev/null 2>&1") != 0) GTEST_SKIP() << "no mpirun";
  ASSERT_EQ(run(common("run") + "--epochs 1 --steps 5").code, 0);
  auto r = tg::testing::run_command(
      "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
      "OMPI_MCA_rmaps_base_oversubscribe=1 "
      "OMPI_MCA_btl_vader_single_copy_mechanism=none mpirun -np 2 " +
      kTrain + " " + common("run") + "--resume " + tmp_.file("run/last.h5") + " 2>&1");
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_CONTAINS(r.output, "the number of ranks (mpirun -np) is 2 in this run but 1");
  EXPECT_CONTAINS(r.output, "run with mpirun -np 1 (or without mpirun)");
}
