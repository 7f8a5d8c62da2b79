// Every op of ops/op_list.h: a float64 gradcheck on random odd shapes (what tg-gradcheck --op all
// runs), and CUDA against the CPU in float32 and float64.
#include "ops/op_list.h"

#include <set>
#include <string>

#include "ops/op_check.h"

namespace tg {
namespace {

TEST(OpList, NamesAreUniqueAndLookedUp) {
  std::set<std::string> names;
  for (const auto& e : ops::op_list()) EXPECT_TRUE(names.insert(e.name).second) << e.name;
  for (const char* n : {"add", "div", "maximum", "exp", "clamp", "amax", "cat", "narrow", "matmul", "l1_loss"})
    EXPECT_TRUE(names.count(n)) << n;
  EXPECT_EQ(ops::find_op("relu").name, "relu");
  EXPECT_ERROR_HAS(ops::find_op("softmax"), "unknown op 'softmax'", "expected one of add, sub");
}

TEST(OpList, EveryOpGradchecksInFloat64) {
  Generator gen(2024);
  for (const auto& e : ops::op_list())
    for (int trial = 0; trial < 3; ++trial) {
      ops::OpCase c = e.make(gen, DType::Float64, Device::CPU);
      testing::expect_gradcheck(c.fn, c.inputs, e.name + " trial " + std::to_string(trial));
    }
}

TEST(OpList, EveryOpOnCudaMatchesCpu) {
  TG_SKIP_WITHOUT_GPU();
  for (DType dt : {DType::Float32, DType::Float64}) {
    Generator gen(7);
    for (const auto& e : ops::op_list()) {
      ops::OpCase c = e.make(gen, dt, Device::CPU);
      testing::expect_cuda_matches_cpu(c.fn, c.inputs, dt == DType::Float32 ? 1e-5 : 1e-12, e.name);
    }
  }
}

TEST(OpList, EveryOpGradchecksOnCuda) {
  TG_SKIP_WITHOUT_GPU();
  Generator gen(11);
  for (const auto& e : ops::op_list()) {
    ops::OpCase c = e.make(gen, DType::Float64, Device::CUDA);
    testing::expect_gradcheck(c.fn, c.inputs, e.name + " cuda");
  }
}

}  // namespace
}  // namespace tg
