// Data-parallel training: tg-train under `mpirun -np 2` on CPU tensors (the all-reduce goes through
// MPI), against one process with the whole batch.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "dist/process_group.h"
#include "io/checkpoint.h"
#include "io/dataset.h"
#include "io/synthetic.h"
#include "test_utils.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const std::string kTrain = std::string(TG_BINARY_DIR) + "/examples/tg-train";
// Root may run mpirun in CI containers; shared-memory single-copy needs ptrace, which containers
// often forbid.
const std::string kMpirun =
    "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 "
    "OMPI_MCA_btl_vader_single_copy_mechanism=none mpirun -np 2 ";

using Result = tg::testing::CommandResult;
using tg::testing::run_command;

std::vector<double> step_losses(const fs::path& dir) {
  std::vector<double> out;
  std::ifstream f(dir / "metrics.jsonl");
  std::string line;
  while (std::getline(f, line)) {
    json r = json::parse(line);
    if (r["type"] == "step") out.push_back(r["loss"]);
  }
  return out;
}

class DataParallel : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!tg::dist::built()) GTEST_SKIP() << "built without MPI (TG_WITH_DIST)";
    if (std::system("command -v mpirun > /dev/null 2>&1") != 0) GTEST_SKIP() << "no mpirun";
    dir_ = fs::temp_directory_path() /
           ("tg-dist-test-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    data_ = (dir_ / "data.h5").string();
    tg::io::SyntheticOptions o;
    o.samples = 61;  // with 8 per global batch the last batch has 5 rows: shards of 2 and 3
    o.in_channels = 2;
    o.out_channels = 4;
    o.height = o.width = 9;
    o.groups = 2;
    o.seed = 5;
    tg::io::write_synthetic_dataset(data_, o);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string args(const std::string& dtype, int64_t batch, const std::string& out) const {
    return " --data " + data_ + " --device cpu --dtype " + dtype + " --batch-size " +
           std::to_string(batch) + " --lr 0.05 --momentum 0.9 --nesterov --weight-decay 0.01" +
           " --groups 2 --val-fraction 0 --epochs 2 --log-every 1 --output " + (dir_ / out).string();
  }

  // Two ranks with 4 samples each against one process with 8: same losses and parameters.
  void compare(const std::string& dtype, double tol) {
    Result one = run_command(kTrain + args(dtype, 8, "one"));
    ASSERT_EQ(one.code, 0) << one.output;
    Result two = run_command(kMpirun + kTrain + args(dtype, 4, "two"));
    ASSERT_EQ(two.code, 0) << two.output;
    auto l1 = step_losses(dir_ / "one"), l2 = step_losses(dir_ / "two");
    ASSERT_EQ(l1.size(), 16u);  // 8 batches per epoch (the last of 5 rows), 2 epochs
    ASSERT_EQ(l2.size(), l1.size()) << "rank 0 alone writes metrics";
    for (size_t i = 0; i < l1.size(); ++i) EXPECT_NEAR(l2[i], l1[i], tol * std::fabs(l1[i])) << i;
    auto p1 = tg::io::load_checkpoint((dir_ / "one" / "last.h5").string());
    auto p2 = tg::io::load_checkpoint((dir_ / "two" / "last.h5").string());
    ASSERT_EQ(p1.params.size(), p2.params.size());
    for (size_t i = 0; i < p1.params.size(); ++i)
      EXPECT_LT(tg::testing::rel_l2(p2.params[i].second, p1.params[i].second), tol) << p1.params[i].first;
  }

  fs::path dir_;
  std::string data_;
};

}  // namespace

TEST_F(DataParallel, TwoRanksMatchOneRankWithTheWholeBatchFloat64) { compare("float64", 1e-12); }

// float32: the ranks' partial sums round differently from one process's; 1e-5 relative.
TEST_F(DataParallel, TwoRanksMatchOneRankWithTheWholeBatchFloat32) { compare("float32", 1e-5); }

TEST_F(DataParallel, ResumeUnderMpirunContinuesExactly) {
  Result full = run_command(kMpirun + kTrain + args("float64", 4, "full") + " --steps 11");
  ASSERT_EQ(full.code, 0) << full.output;
  Result part = run_command(kMpirun + kTrain + args("float64", 4, "part") + " --steps 5");
  ASSERT_EQ(part.code, 0) << part.output;
  Result rest = run_command(kMpirun + kTrain + args("float64", 4, "part") + " --steps 11 --resume " +
                    (dir_ / "part" / "last.h5").string());
  ASSERT_EQ(rest.code, 0) << rest.output;
  const auto full_losses = step_losses(dir_ / "full");
  ASSERT_EQ(full_losses.size(), 11u);
  EXPECT_EQ(step_losses(dir_ / "part"), full_losses);
}

TEST_F(DataParallel, AHangingRankEndsTheJobWithAClearErrorWithinTheTimeout) {
  Result r = run_command("TG_DEBUG_HANG_RANK=1 TG_DEBUG_HANG_STEP=3 " + kMpirun + kTrain +
                 args("float64", 4, "hang") + " --dist-timeout 3");
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("did not complete within 3 s"), std::string::npos) << r.output;
  EXPECT_LT(r.seconds, 60.0);
  // the checkpoint of the last finished epoch (none here) is never half-written: no temp files
  for (const auto& e : fs::directory_iterator(dir_ / "hang"))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
}

// The reader's sharding, without MPI: shard r of K gets positions [floor(r*b/K), floor((r+1)*b/K))
// of each batch's b rows in the epoch order; together the shards read each batch exactly once, and a
// last batch with fewer rows than shards is dropped.
TEST(DataParallelShards, ShardsPartitionEveryBatch) {
  tg::testing::TempDir tmp;
  const std::string path = tmp.file("shards.h5");
  const int64_t N = 14;  // batches of 5: 5, 5, 4 rows; with 5 shards the last batch (4 rows) drops
  tg::Tensor x = tg::Tensor::randn({N, 1, 2, 2}, 41), y = tg::Tensor::randn({N, 1, 1, 1}, 42);
  tg::io::write_dataset(path, x, y);
  const auto xv = x.to_vector<float>();
  for (bool shuffle : {false, true}) {
    for (int K : {2, 3, 4, 5}) {
      SCOPED_TRACE("shuffle " + std::to_string(shuffle) + ", " + std::to_string(K) + " shards");
      tg::io::DatasetReaderOptions o;
      o.path = path;
      o.batch_size = 5;
      o.shuffle = shuffle;
      o.seed = 9;
      tg::io::DatasetReader whole(o);
      const auto order = whole.epoch_order(1);
      const int64_t expected_batches = K <= 4 ? 3 : 2;
      std::vector<std::vector<int64_t>> seen(size_t(whole.num_train_batches()));
      for (int r = 0; r < K; ++r) {
        o.shard_index = r;
        o.shard_count = K;
        tg::io::DatasetReader part(o);
        EXPECT_EQ(part.num_train_batches(), expected_batches);
        part.start_epoch(1);
        tg::io::Batch b;
        int64_t nb = 0;
        while (part.next(b)) {
          const int64_t rows = whole.global_batch_rows(nb);
          const int64_t lo = nb * 5 + r * rows / K, hi = nb * 5 + (r + 1) * rows / K;
          std::vector<int64_t> expected(order.begin() + lo, order.begin() + hi);
          std::sort(expected.begin(), expected.end());
          EXPECT_EQ(b.indices, expected) << "batch " << nb << " shard " << r;
          const auto bx = b.x.to_vector<float>();
          for (size_t j = 0; j < b.indices.size(); ++j)
            for (int e = 0; e < 4; ++e)
              EXPECT_EQ(bx[j * 4 + size_t(e)], xv[size_t(b.indices[j]) * 4 + size_t(e)]);
          seen[size_t(nb)].insert(seen[size_t(nb)].end(), b.indices.begin(), b.indices.end());
          ++nb;
        }
        EXPECT_EQ(nb, expected_batches);
      }
      for (int64_t nb = 0; nb < expected_batches; ++nb) {
        std::vector<int64_t> batch(order.begin() + nb * 5,
                                   order.begin() + nb * 5 + whole.global_batch_rows(nb));
        std::sort(batch.begin(), batch.end());
        std::sort(seen[size_t(nb)].begin(), seen[size_t(nb)].end());
        EXPECT_EQ(seen[size_t(nb)], batch) << "batch " << nb << ": each row exactly once";
      }
    }
  }
}

// The shards follow epoch_order, so its shuffle must be a uniform permutation (Fisher-Yates): over
// many epochs each sample lands in each position about equally often, itself included (a biased
// shuffle such as Sattolo's never leaves a sample in place).
TEST(DataParallelShards, EpochOrderIsAUniformPermutation) {
  tg::testing::TempDir tmp;
  const std::string path = tmp.file("order.h5");
  tg::io::write_dataset(path, tg::Tensor::randn({6, 1, 1, 1}, 51), tg::Tensor::randn({6, 1, 1, 1}, 52));
  tg::io::DatasetReaderOptions o;
  o.path = path;
  o.batch_size = 2;
  o.seed = 3;
  tg::io::DatasetReader r(o);
  const int epochs = 3000;
  std::vector<std::vector<int>> count(6, std::vector<int>(6, 0));  // [sample][position]
  for (int e = 0; e < epochs; ++e) {
    const auto order = r.epoch_order(e);
    ASSERT_EQ(order.size(), 6u);
    for (size_t pos = 0; pos < 6; ++pos) ++count[size_t(order[pos])][pos];
  }
  // expected 500 per cell, standard deviation ~20: +-100 is five of them
  for (int s = 0; s < 6; ++s)
    for (int pos = 0; pos < 6; ++pos)
      EXPECT_NEAR(count[size_t(s)][size_t(pos)], epochs / 6, 100) << "sample " << s << " at " << pos;
}
