// Checked size arithmetic (core/size.h) and what the factories, views and allocations do with sizes
// that do not fit: a tg::Error naming the shape or the bytes, never a wrapped number.
#include "core/size.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>

#include "core/gradcheck.h"
#include "core/memory.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "test_ops.h"
#include "test_utils.h"

using namespace tg;

namespace {
constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAsan = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kAsan = true;
#else
constexpr bool kAsan = false;
#endif
#else
constexpr bool kAsan = false;
#endif
}  // namespace

TEST(CheckedSize, ProductsAndSumsThatFitAreExact) {
  EXPECT_EQ(checked_mul(int64_t(1) << 31, int64_t(1) << 31, "test"), int64_t(1) << 62);
  EXPECT_EQ(checked_mul(kMax, 1, "test"), kMax);
  EXPECT_EQ(checked_mul(0, kMax, "test"), 0);
  EXPECT_EQ(checked_add(kMax - 1, 1, "test"), kMax);
  EXPECT_EQ(checked_numel({}), 1);
  EXPECT_EQ(checked_numel({3, 0, int64_t(1) << 61}), 0);
  EXPECT_EQ(checked_nbytes({2, 3}, 8), 48u);
  EXPECT_EQ(checked_bytes(kMax / 8, 8, "test"), size_t(kMax / 8 * 8));
}

TEST(CheckedSize, OverflowsAndNegativesNameWhatWasComputed) {
  EXPECT_ERROR_HAS(checked_mul(int64_t(1) << 32, int64_t(1) << 31, "batch bytes"), "batch bytes",
                   "4294967296 * 2147483648", "does not fit in 64 bits");
  EXPECT_ERROR_HAS(checked_add(kMax, 1, "step count"), "step count", "does not fit in 64 bits");
  EXPECT_ERROR_HAS(checked_mul(-3, 2, "rows"), "rows", "non-negative", "-3");
  EXPECT_ERROR_HAS(checked_bytes(kMax / 8 + 1, 8, "row buffer"), "row buffer",
                   "1152921504606846976", "8 bytes");
  EXPECT_ERROR_HAS(checked_numel({5, -2}), "[5, -2]", "negative");
  EXPECT_ERROR_HAS(checked_nbytes({int64_t(1) << 61}, 4), "[2305843009213693952]", "4 bytes");
}

TEST(TensorSize, ZerosWhoseBytesOverflowIsAnErrorNamingTheShape) {
  // 2^61 float64 elements are 2^64 bytes: this used to wrap to 0 and then sum() wrote the heap.
  EXPECT_ERROR_HAS(Tensor::zeros({int64_t(1) << 61}, DType::Float64),
                   "tensor shape [2305843009213693952]", "8 bytes",
                   "more bytes than fit in 64 bits");
}

TEST(TensorSize, ZerosWhoseElementCountOverflowsIsAnErrorNamingTheShape) {
  EXPECT_ERROR_HAS(Tensor::zeros({int64_t(1) << 32, int64_t(1) << 32}),
                   "tensor shape [4294967296, 4294967296]", "more elements than fit in 64 bits");
  // Empty, but its sub-shapes (H * W here) would still overflow in every op's arithmetic.
  EXPECT_ERROR_HAS(Tensor::zeros({int64_t(1) << 40, 0, int64_t(1) << 40, int64_t(1) << 40}),
                   "[1099511627776, 0, 1099511627776, 1099511627776]", "non-zero dimensions");
}

TEST(TensorSize, EveryFactoryChecksTheShape) {
  const Shape big{int64_t(1) << 32, int64_t(1) << 32};
  const char* name = "[4294967296, 4294967296]";
  Generator gen(1);
  EXPECT_ERROR_HAS(Tensor::empty(big), name);
  EXPECT_ERROR_HAS(Tensor::empty_pinned(big), name);
  EXPECT_ERROR_HAS(Tensor::ones(big, DType::Float64), name);
  EXPECT_ERROR_HAS(Tensor::full(big, 2.0), name);
  EXPECT_ERROR_HAS(Tensor::rand(big, gen), name);
  EXPECT_ERROR_HAS(Tensor::randn(big, gen), name);
  EXPECT_ERROR_HAS(Tensor::rand(big, uint64_t(3)), name);
  EXPECT_ERROR_HAS(Tensor::randn(big, uint64_t(3)), name);
  EXPECT_ERROR_HAS(Tensor::from_vector<float>({1.0f}, big), name);
  EXPECT_ERROR_HAS(Tensor::empty({3, -1}), "[3, -1]", "negative");
  EXPECT_ERROR_HAS(Tensor::from_vector<double>({1.0, 2.0}, {3}), "[3]", "needs 3 values, got 2");
}

TEST(TensorSize, ViewChecksTheNewShape) {
  Tensor t = Tensor::zeros({4, 4});
  // 2^32 * 2^32 wraps to 0 in unchecked arithmetic; a zero-element tensor would then view as it.
  Tensor empty = Tensor::zeros({0});
  EXPECT_ERROR_HAS(empty.view({int64_t(1) << 32, int64_t(1) << 32}), "[4294967296, 4294967296]");
  EXPECT_ERROR_HAS(t.view({int64_t(1) << 62, 4}), "[4611686018427387904, 4]");
  EXPECT_ERROR_HAS(t.view({-4, -4}), "[-4, -4]", "negative");
  EXPECT_ERROR_HAS(t.view({3, 5}), "[4, 4]", "[3, 5]");
  EXPECT_EQ(t.view({2, 8}).shape(), (Shape{2, 8}));
  EXPECT_EQ(t.view({16}).nbytes(), 64u);
}

TEST(HostAllocation, ARequestBeyondPtrdiffMaxIsAnErrorNamingTheBytes) {
  // Rounding SIZE_MAX up to the 64-byte alignment used to wrap to a tiny buffer.
  const size_t huge = std::numeric_limits<size_t>::max();
  EXPECT_ERROR_HAS(allocate_storage(huge, Device::CPU), "18446744073709551615 bytes",
                   "more than PTRDIFF_MAX");
  EXPECT_ERROR_HAS(allocate_storage(size_t(kMax) + 1, Device::CPU, true),
                   "9223372036854775808 bytes");
}

TEST(HostAllocation, AFailedAllocationIsAnErrorNamingTheBytesAndTheShape) {
  if (kAsan)
    GTEST_SKIP() << "AddressSanitizer aborts on allocations this large instead of returning null";
  // 2^60 float32 elements: 2^62 bytes fit in the arithmetic, but no host can serve them.
  EXPECT_ERROR_HAS(Tensor::empty({int64_t(1) << 60}), "out of host memory",
                   "4611686018427387904 bytes", "for a tensor of shape [1152921504606846976]");
  EXPECT_ERROR_HAS(Tensor::zeros({int64_t(1) << 30, int64_t(1) << 28}, DType::Float64),
                   "out of host memory", "2305843009213693952 bytes", "[1073741824, 268435456]");
}

TEST(GradcheckSizes, AFunctionWhoseOutputSizeChangesIsAnErrorNotAnOverRead) {
  // The numeric pass used to index the cotangents of the first call with the later outputs' sizes.
  int calls = 0;
  Tensor x = Tensor::randn({3}, 7, DType::Float64).set_requires_grad();
  auto f = [&](const std::vector<Tensor>& in) {
    ++calls;
    if (calls <= 4) return std::vector<Tensor>{tg::testing::test_sin(in[0])};
    return std::vector<Tensor>{tg::testing::test_sin(Tensor::randn({5}, 8, DType::Float64))};
  };
  EXPECT_ERROR_HAS(gradcheck(f, {x}), "gradcheck: output 0 has shape [5]", "5 elements",
                   "3 elements on the first call");
  calls = 0;
  auto g = [&](const std::vector<Tensor>& in) {
    ++calls;
    if (calls <= 4) return std::vector<Tensor>{tg::testing::test_sin(in[0])};
    return std::vector<Tensor>{tg::testing::test_sin(in[0]), tg::testing::test_sin(in[0])};
  };
  EXPECT_ERROR_HAS(gradcheck(g, {x}), "returned 2 outputs, expected 1");
}
