// Tests of ops/matmul.h: 2-D, batched 3-D and the two broadcast forms against a naive triple loop,
// float64 gradchecks, bad shapes, CUDA (cuBLAS) against CPU (Eigen) on odd sizes.
#include "ops/matmul.h"

#include <string>
#include <vector>

#include "ops/op_check.h"

namespace tg {
namespace {

using testing::expect_cuda_matches_cpu;
using testing::expect_gradcheck;
using testing::expect_values_near;
using testing::randn_t;

// Naive (batch of) products with a 2-D operand shared by the batch.
std::vector<double> naive(const Tensor& a, const Tensor& b) {
  const auto av = a.to_vector<double>(), bv = b.to_vector<double>();
  const int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
  const int64_t B = a.dim() == 3 ? a.size(0) : (b.dim() == 3 ? b.size(0) : 1);
  std::vector<double> c(size_t(B * M * N), 0.0);
  for (int64_t z = 0; z < B; ++z)
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double acc = 0;
        for (int64_t k = 0; k < K; ++k)
          acc += av[size_t((a.dim() == 3 ? z * M * K : 0) + i * K + k)] *
                 bv[size_t((b.dim() == 3 ? z * K * N : 0) + k * N + j)];
        c[size_t((z * M + i) * N + j)] = acc;
      }
  return c;
}

const std::vector<std::vector<Shape>> kCases = {
    {{3, 5}, {5, 4}, {3, 4}}, {{2, 3, 5}, {2, 5, 4}, {2, 3, 4}}, {{2, 3, 5}, {5, 4}, {2, 3, 4}},
    {{3, 5}, {2, 5, 4}, {2, 3, 4}}, {{1, 1}, {1, 1}, {1, 1}}};

TEST(MatmulForward, MatchesNaiveLoops) {
  uint64_t seed = 1;
  for (DType dt : {DType::Float32, DType::Float64})
    for (const auto& c : kCases) {
      Tensor a = randn_t(c[0], seed++, dt), b = randn_t(c[1], seed++, dt);
      Tensor y = ops::matmul(a, b);
      EXPECT_EQ(y.shape(), c[2]);
      expect_values_near(y.to_vector<double>(), naive(a, b), dt == DType::Float32 ? 1e-5 : 1e-13, 1e-5,
                         shape_str(c[0]) + " @ " + shape_str(c[1]));
    }
}

TEST(MatmulGrad, Gradcheck) {
  uint64_t seed = 20;
  for (const auto& c : kCases) {
    Tensor a = randn_t(c[0], seed++, DType::Float64).set_requires_grad(true);
    Tensor b = randn_t(c[1], seed++, DType::Float64).set_requires_grad(true);
    expect_gradcheck([](const std::vector<Tensor>& in) { return std::vector<Tensor>{ops::matmul(in[0], in[1])}; },
                     {a, b}, shape_str(c[0]) + " @ " + shape_str(c[1]));
  }
}

TEST(MatmulErrors, BadShapes) {
  EXPECT_ERROR_HAS(ops::matmul(Tensor::randn({3, 4}, 1), Tensor::randn({5, 2}, 2)),
                   "matmul: the inner sizes differ: [3, 4] @ [5, 2]", "4 vs 5");
  EXPECT_ERROR_HAS(ops::matmul(Tensor::randn({2, 3, 4}, 1), Tensor::randn({3, 4, 2}, 2)),
                   "matmul: batch sizes differ");
  EXPECT_ERROR_HAS(ops::matmul(Tensor::randn({4}, 1), Tensor::randn({4, 2}, 2)),
                   "matmul: expected 2-D or 3-D operands", "[4]");
  EXPECT_ERROR_HAS(ops::matmul(Tensor::randn({2, 2}, 1), Tensor::randn({2, 2}, 2, DType::Float64)),
                   "matmul: expected operands of the same dtype");
}

TEST(MatmulCuda, MatchesCpuOnOddShapes) {
  TG_SKIP_WITHOUT_GPU();
  const std::vector<std::vector<Shape>> cases = {
      {{37, 53}, {53, 29}}, {{3, 17, 33}, {3, 33, 9}}, {{5, 7, 31}, {31, 13}}, {{7, 31}, {4, 31, 13}}};
  uint64_t seed = 1;
  for (DType dt : {DType::Float32, DType::Float64})
    for (const auto& c : cases) {
      Tensor a = randn_t(c[0], seed++, dt).set_requires_grad(true);
      Tensor b = randn_t(c[1], seed++, dt).set_requires_grad(true);
      expect_cuda_matches_cpu([](const std::vector<Tensor>& in) { return std::vector<Tensor>{ops::matmul(in[0], in[1])}; },
                              {a, b}, dt == DType::Float32 ? 1e-5 : 1e-12,
                              shape_str(c[0]) + " @ " + shape_str(c[1]));
    }
}

}  // namespace
}  // namespace tg
