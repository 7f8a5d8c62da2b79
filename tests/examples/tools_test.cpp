// tg-bench and tg-gradcheck run as processes, as users run them: bad arguments exit 2 with a
// message that names the flag, before anything is measured; good ones run.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "ops/op_list.h"
#include "test_utils.h"

namespace {

const std::string kBench = std::string(TG_BINARY_DIR) + "/examples/tg-bench";
const std::string kGradcheck = std::string(TG_BINARY_DIR) + "/examples/tg-gradcheck";

tg::testing::CommandResult bench(const std::string& args) {
  return tg::testing::run_command(kBench + " --device cpu " + args);
}
tg::testing::CommandResult gradcheck(const std::string& args) {
  return tg::testing::run_command(kGradcheck + " " + args);
}

// A bad argument: exit 2, a message with every part, and no measurement printed.
void expect_usage_error(const tg::testing::CommandResult& r,
                        const std::vector<std::string>& parts) {
  EXPECT_EQ(r.code, 2) << r.output;
  for (const auto& p : parts) EXPECT_CONTAINS(r.output, p);
  EXPECT_EQ(r.output.find("median ms"), std::string::npos) << "measured before refusing:\n"
                                                           << r.output;
}

// The smallest custom size, one rep: a run takes a fraction of a second on the CPU.
const std::string kTiny =
    "--batch 1 --in-channels 1 --out-channels 2 --size 5 --kernel 3 --groups 1 --reps 1 --warmup 0";

}  // namespace

TEST(ToolsBench, ABatchThatIsNotPositiveIsRefused) {
  // --batch 0 and -3 used to run the full reference size silently.
  expect_usage_error(bench("--batch 0"), {"--batch", "0 not in range", "65536"});
  expect_usage_error(bench("--batch -3"), {"--batch", "-3 not in range"});
  expect_usage_error(bench("--batch 100000"), {"--batch", "not in range", "65536"});
}

TEST(ToolsBench, UnknownItemsAndSizesAreRefused) {
  expect_usage_error(bench("--items bogus"), {"--items", "unknown name 'bogus'", "train_step"});
  expect_usage_error(bench("--items forward,bogus"), {"'bogus'"});
  expect_usage_error(bench("--items forward,"), {"--items", "unknown name ''"});
  expect_usage_error(bench("--sizes huge"), {"--sizes", "unknown name 'huge'", "reference, small"});
  expect_usage_error(bench("--sizes small,hug"), {"'hug'"});
}

TEST(ToolsBench, AnUnwritableJsonPathIsRefusedBeforeMeasuring) {
  tg::testing::TempDir tmp;
  expect_usage_error(
      bench(kTiny + " --json /nonexistent/dir/out.json"),
      {"--json /nonexistent/dir/out.json", "the folder /nonexistent/dir does not exist"});
  expect_usage_error(bench(kTiny + " --json " + tmp.dir.string()), {"is a directory"});
  EXPECT_TRUE(tmp.entries().empty());
}

TEST(ToolsBench, SizesThatOverflowOrDoNotFitTheModelAreClearErrors) {
  // --size 3037000500: its square overflowed 64 bits in the byte counts.
  expect_usage_error(bench("--batch 1 --size 3037000500"),
                     {"--size", "3037000500 not in range", "65536"});
  expect_usage_error(bench("--size 3037000500"), {"--size"});
  expect_usage_error(bench("--batch 65536 --in-channels 65536 --out-channels 65536 --size 65536"),
                     {"[65536, 65536, 65536, 65536]", "more elements than fit in 64 bits"});
  expect_usage_error(bench("--batch 2 --size 4 --kernel 9"), {"--kernel 9 exceeds --size 4"});
  expect_usage_error(bench("--batch 2 --groups 3"), {"--groups 3 must divide --out-channels 32"});
  expect_usage_error(bench("--size 64"), {"--size requires --batch"});
  expect_usage_error(bench("--batch 2 --sizes small"), {"--sizes excludes --batch"});
  expect_usage_error(bench("--reps 0"), {"--reps"});
  expect_usage_error(bench("--reps 1000000"), {"--reps", "not in range", "100000"});
}

TEST(ToolsBench, ACustomSizeRunsAndWritesItsJson) {
  tg::testing::TempDir tmp;
  const std::string out = tmp.file("bench.json");
  auto r = bench(kTiny + " --items forward,tail_forward --json " + out);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_CONTAINS(r.output, "median ms");
  std::ifstream f(out);
  const nlohmann::json j = nlohmann::json::parse(f);
  EXPECT_EQ(j["device"], "cpu");
  const auto& res = j["results"]["custom"];
  EXPECT_TRUE(res.contains("forward")) << j.dump();
  EXPECT_TRUE(res.contains("tail_forward")) << j.dump();
  EXPECT_FALSE(res.contains("train_step")) << "an item that was not asked for ran";
  EXPECT_GT(res["forward"]["median_ms"].get<double>(), 0.0);
}

TEST(ToolsBench, PrintsWhichPathTheBlockTakes) {
  tg::testing::TempDir tmp;
  const std::string out = tmp.file("bench.json");
  auto r = bench(kTiny + " --items forward --json " + out);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_CONTAINS(r.output, "custom     path: fused-cpu");
  std::ifstream f(out);
  const nlohmann::json j = nlohmann::json::parse(f);
  const auto& res = j["results"]["custom"];
  EXPECT_EQ(res["path"], "fused-cpu") << j.dump();
  EXPECT_EQ(res["shape"]["out_channels"], 2) << j.dump();
  EXPECT_EQ(res["shape"]["kernel"], 3) << j.dump();
}

TEST(ToolsBench, OpsTimesTheModelsOpsAndEveryOpOfTheOpList) {
  tg::testing::TempDir tmp;
  const std::string out = tmp.file("bench.json");
  auto r = bench(kTiny + " --items ops --op-elements 256 --json " + out);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_CONTAINS(r.output, "inputs of about 256 elements");
  std::ifstream f(out);
  const nlohmann::json j = nlohmann::json::parse(f);
  // The model's three ops, as before, under the size's name.
  const auto& model_ops = j["results"]["custom"];
  for (const char* item : {"bias_scale_sigmoid_fwd", "group_norm_fwd_bwd", "mse_loss_fwd_bwd"})
    EXPECT_TRUE(model_ops.contains(item)) << item << ": " << model_ops.dump();
  EXPECT_FALSE(model_ops.contains("forward")) << "an item that was not asked for ran";
  const auto& list = j["results"]["op_list"];
  ASSERT_FALSE(list.empty()) << j.dump();
  for (const tg::ops::OpEntry& e : tg::ops::op_list()) {
    for (const std::string item : {e.name + "_fwd", e.name + "_fwd_bwd"}) {
      ASSERT_TRUE(list.contains(item)) << item << " is missing: " << list.dump();
      EXPECT_GT(list[item]["median_ms"].get<double>(), 0.0) << item;
      EXPECT_GT(list[item]["floor_bytes"].get<double>(), 0.0) << item;
      EXPECT_CONTAINS(r.output, "op_list    " + item + " ");
    }
    EXPECT_DOUBLE_EQ(list[e.name + "_fwd_bwd"]["floor_bytes"].get<double>(),
                     2 * list[e.name + "_fwd"]["floor_bytes"].get<double>())
        << e.name;
    EXPECT_FALSE(list[e.name + "_inputs"].empty()) << e.name;
  }
  // Benchmark sizes, not gradcheck's: an elementwise op's input has the requested 256 elements.
  int64_t numel = 1;
  for (const auto& d : list["exp_inputs"][0]) numel *= d.get<int64_t>();
  EXPECT_EQ(numel, 256) << list["exp_inputs"].dump();
}

TEST(ToolsBench, OpElementsOutOfRangeAreRefused) {
  expect_usage_error(bench("--items ops --op-elements 10"),
                     {"--op-elements", "10 not in range", "64"});
  expect_usage_error(bench("--items ops --op-elements 4294967296"),
                     {"--op-elements", "not in range", "2147483648"});
}

TEST(ToolsGradcheck, AHugeBatchIsAClearError) {
  auto r = gradcheck("--batch 2305843009213693952");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_CONTAINS(r.output, "--batch");
  EXPECT_CONTAINS(r.output, "2305843009213693952 not in range");
  EXPECT_CONTAINS(r.output, "1024");
}

TEST(ToolsGradcheck, OnlyTheFlagsTheOpUsesAreValidated) {
  // Cout 3 is not divisible by the default 2 groups, but conv2d has no groups.
  auto r = gradcheck("--op conv2d --out-channels 3");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_CONTAINS(r.output, "all gradients pass");
  EXPECT_CONTAINS(r.output, "[3, 3, 3, 3]");  // the weight (Cout, Cin, k, k)
  // bias_scale_sigmoid has no kernel: a 1x1 input is fine.
  r = gradcheck("--op bias_scale_sigmoid --height 1 --width 1");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_CONTAINS(r.output, "[2, 4, 1, 1]");
  EXPECT_CONTAINS(r.output, "all gradients pass");
  // An unused flag is noted, not fatal.
  r = gradcheck("--op mse_loss --kernel 9 --height 2 --width 3");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_CONTAINS(r.output, "note: --op mse_loss does not use --kernel");
}

TEST(ToolsGradcheck, TheFlagsAnOpUsesAreValidatedWithTheOpNamed) {
  auto r = gradcheck("--op group_norm --out-channels 3");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_CONTAINS(r.output,
                  "invalid shape for --op group_norm: --groups 2 must divide --out-channels 3");
  r = gradcheck("--op conv2d --kernel 7");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_CONTAINS(r.output, "--op conv2d: --kernel 7 exceeds --height 6 or --width 5");
  r = gradcheck("--op all --height 1 --width 1");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_CONTAINS(r.output, "--op conv2d");
  r = gradcheck("--op model --kernel 300");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_CONTAINS(r.output, "--kernel");
  EXPECT_CONTAINS(r.output, "not in range");
  EXPECT_CONTAINS(r.output, "255");
}
