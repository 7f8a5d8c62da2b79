// Tests of ops/reduce.h: sum, mean and amax over dimensions (keepdim or not) against naive loops,
// float64 gradchecks, ties in amax, bad dimensions, CUDA against CPU on odd shapes.
#include "ops/reduce.h"

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "ops/elementwise.h"
#include "ops/op_check.h"

namespace tg {
namespace {

using testing::expect_cuda_matches_cpu;
using testing::expect_gradcheck;
using testing::expect_values_near;
using testing::randn_t;

enum class Kind { Sum, Mean, Max };

// Naive reduction of x over the dims listed (normalised, sorted), keepdim shape.
std::vector<double> naive(const Tensor& x, const std::vector<int64_t>& dims, Kind kind) {
  const Shape& s = x.shape();
  const auto v = x.to_vector<double>();
  Shape out = s;
  for (int64_t d : dims) out[d] = 1;
  int64_t n_out = 1;
  for (int64_t e : out) n_out *= e;
  std::vector<double> acc(size_t(n_out), kind == Kind::Max ? -INFINITY : 0.0);
  std::vector<double> cnt(size_t(n_out), 0.0);
  for (int64_t i = 0; i < x.numel(); ++i) {
    int64_t rest = i, o = 0, mul = 1;
    for (int64_t d = int64_t(s.size()) - 1; d >= 0; --d) {
      const int64_t c = rest % s[d];
      rest /= s[d];
      o += (out[d] == 1 ? 0 : c) * mul;
      mul *= out[d];
    }
    if (kind == Kind::Max) acc[o] = std::max(acc[o], v[i]);
    else acc[o] += v[i];
    cnt[o] += 1;
  }
  if (kind == Kind::Mean)
    for (size_t k = 0; k < acc.size(); ++k) acc[k] /= cnt[k];
  return acc;
}

Tensor run(Kind k, const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  if (k == Kind::Sum) return ops::sum(x, dims, keepdim);
  if (k == Kind::Mean) return ops::mean(x, dims, keepdim);
  return ops::amax(x, dims, keepdim);
}

const std::vector<std::vector<int64_t>> kDims = {{0}, {1}, {-1}, {0, 2}, {1, 2}, {0, 1, 2}, {}, {2, 0}};

TEST(ReduceForward, MatchesNaiveLoops) {
  uint64_t seed = 1;
  for (DType dt : {DType::Float32, DType::Float64})
    for (Kind k : {Kind::Sum, Kind::Mean, Kind::Max})
      for (const auto& dims : kDims) {
        Tensor x = randn_t({3, 4, 5}, seed++, dt);
        std::vector<int64_t> nd = ops::detail::normalize_dims("test", dims, x.shape());
        Tensor y = run(k, x, dims, true);
        Shape ks = x.shape();
        for (int64_t d : nd) ks[d] = 1;
        EXPECT_EQ(y.shape(), ks);
        expect_values_near(y.to_vector<double>(), naive(x, nd, k), 1e-6, 1e-6, "reduce");
        Tensor z = run(k, x, dims, false);
        EXPECT_EQ(int64_t(z.dim()), 3 - int64_t(nd.size()));
        EXPECT_EQ(z.to_vector<double>(), y.to_vector<double>());
      }
}

TEST(ReduceForward, MeanOverHWOfNCHW) {
  Tensor x = randn_t({2, 3, 4, 5}, 7, DType::Float64);
  Tensor m = ops::mean(x, {2, 3});
  EXPECT_EQ(m.shape(), (Shape{2, 3}));
  expect_values_near(m.to_vector<double>(), naive(x, {2, 3}, Kind::Mean), 1e-15, 1e-14, "mean hw");
}

TEST(ReduceGrad, Gradcheck) {
  uint64_t seed = 30;
  for (Kind k : {Kind::Sum, Kind::Mean, Kind::Max})
    for (const auto& dims : kDims)
      for (bool keep : {false, true}) {
        Tensor x = randn_t({3, 4, 5}, seed++, DType::Float64).set_requires_grad(true);
        expect_gradcheck(
            [&](const std::vector<Tensor>& in) { return std::vector<Tensor>{run(k, in[0], dims, keep)}; },
            {x}, "reduce");
      }
}

TEST(ReduceGrad, AmaxSplitsTheGradientAmongTies) {
  Tensor x = Tensor::from_vector<double>({1, 3, 3, 2, 0, -1}, {2, 3}).set_requires_grad(true);
  ops::sum(ops::amax(x, {1})).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{0, 0.5, 0.5, 1, 0, 0}));
}

TEST(ReduceErrors, BadDimensions) {
  Tensor x = Tensor::randn({2, 3}, 1);
  EXPECT_ERROR_HAS(ops::sum(x, {2}), "sum: dimension 2 is out of range", "[2, 3]");
  EXPECT_ERROR_HAS(ops::mean(x, {-3}), "mean: dimension -3 is out of range");
  EXPECT_ERROR_HAS(ops::amax(x, {1, -1}), "amax: dimension -1 appears more than once");
  EXPECT_ERROR_HAS(ops::amax(Tensor::empty({0, 3}), {1}), "amax: expected a non-empty tensor");
}

TEST(ReduceCuda, MatchesCpuOnOddShapes) {
  TG_SKIP_WITHOUT_GPU();
  uint64_t seed = 1;
  for (DType dt : {DType::Float32, DType::Float64})
    for (Kind k : {Kind::Sum, Kind::Mean, Kind::Max})
      for (const auto& dims : std::vector<std::vector<int64_t>>{{0}, {1}, {2}, {0, 2}, {}, {1, 2}}) {
        Tensor x = randn_t({7, 3001, 3}, seed++, dt).set_requires_grad(true);
        expect_cuda_matches_cpu(
            [&](const std::vector<Tensor>& in) { return std::vector<Tensor>{run(k, in[0], dims, false)}; },
            {x}, dt == DType::Float32 ? 1e-6 : 1e-13, "reduce");
        Tensor w = randn_t({5, 4099}, seed++, dt).set_requires_grad(true);  // block path
        expect_cuda_matches_cpu(
            [&](const std::vector<Tensor>& in) { return std::vector<Tensor>{run(k, in[0], {1}, true)}; },
            {w}, dt == DType::Float32 ? 1e-6 : 1e-13, "reduce long rows");
      }
}

}  // namespace
}  // namespace tg
