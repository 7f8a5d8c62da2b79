// Helpers shared by the tests of the pointwise, reduction, shape and matmul ops: a naive broadcasting
// reference, the float64 gradient check, and CUDA-against-CPU comparisons of outputs and gradients.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "core/gradcheck.h"
#include "test_utils.h"

namespace tg::testing {

/// Naive NumPy broadcast of f over two host tensors (any dtype), computed in double.
inline std::vector<double> ref_broadcast(const Tensor& a, const Tensor& b, const Shape& out,
                                         const std::function<double(double, double)>& f) {
  const auto av = a.to_vector<double>(), bv = b.to_vector<double>();
  int64_t n = 1;
  for (int64_t s : out) n *= s;
  std::vector<double> r(static_cast<size_t>(n), 0.0);
  auto index_of = [&](const Shape& shape, const std::vector<int64_t>& coord) {
    int64_t idx = 0;
    const size_t lead = out.size() - shape.size();
    for (size_t d = 0; d < shape.size(); ++d)
      idx = idx * shape[d] + (shape[d] == 1 ? 0 : coord[lead + d]);
    return idx;
  };
  std::vector<int64_t> coord(out.size(), 0);
  for (int64_t i = 0; i < n; ++i) {
    int64_t rest = i;
    for (int64_t d = int64_t(out.size()) - 1; d >= 0; --d) {
      coord[d] = rest % out[d];
      rest /= out[d];
    }
    r[size_t(i)] = f(av[size_t(index_of(a.shape(), coord))], bv[size_t(index_of(b.shape(), coord))]);
  }
  return r;
}

/// Elementwise |a - b| <= atol + rtol |b|.
inline void expect_values_near(const std::vector<double>& a, const std::vector<double>& b,
                               double atol, double rtol, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(b[i])) {
      EXPECT_TRUE(std::isnan(a[i])) << what << " at " << i;
      continue;
    }
    EXPECT_NEAR(a[i], b[i], atol + rtol * std::fabs(b[i])) << what << " at " << i;
  }
}

/// tg::gradcheck in float64 with the default tolerances; reports every failure.
inline void expect_gradcheck(const GradcheckFunction& f, const std::vector<Tensor>& inputs,
                             const std::string& what) {
  const GradcheckResult r = gradcheck(f, inputs);
  EXPECT_TRUE(r.passed) << what << ":\n" << r.message;
}

/// Outputs and analytic gradients (random cotangents) of f on CPU inputs and on CUDA copies agree
/// within a relative L2 error of tol. Inputs that require grad get gradients on both sides.
inline void expect_cuda_matches_cpu(const GradcheckFunction& f, const std::vector<Tensor>& cpu_inputs,
                                    double tol, const std::string& what) {
  std::vector<Tensor> gpu_inputs;
  for (const Tensor& t : cpu_inputs) {
    Tensor g = t.to(Device::CUDA);
    if (t.requires_grad()) g = g.clone().set_requires_grad(true);
    gpu_inputs.push_back(g);
  }
  std::vector<Tensor> cpu_out = f(cpu_inputs), gpu_out = f(gpu_inputs);
  ASSERT_EQ(cpu_out.size(), gpu_out.size()) << what;
  std::vector<Tensor> cot_cpu, cot_gpu;
  for (size_t k = 0; k < cpu_out.size(); ++k) {
    EXPECT_EQ(gpu_out[k].shape(), cpu_out[k].shape()) << what;
    EXPECT_LE(rel_l2(gpu_out[k], cpu_out[k]), tol) << what << " output " << k;
    cot_cpu.push_back(randn_t(cpu_out[k].shape(), 99 + k, cpu_out[k].dtype()));
    cot_gpu.push_back(cot_cpu.back().to(Device::CUDA));
  }
  const auto gc = analytic_gradients(f, cpu_inputs, cot_cpu);
  const auto gg = analytic_gradients(f, gpu_inputs, cot_gpu);
  for (size_t i = 0; i < gc.size(); ++i) {
    if (!gc[i].defined()) continue;
    ASSERT_TRUE(gg[i].defined()) << what << " grad " << i;
    EXPECT_LE(rel_l2(gg[i], gc[i]), tol) << what << " grad " << i;
  }
}

/// A float64 leaf of the given shape that requires grad.
inline Tensor leaf(const Shape& shape, uint64_t seed, DType dtype = DType::Float64,
                   double mean = 0.0, double std = 1.0) {
  return randn_t(shape, seed, dtype, Device::CPU, mean, std).set_requires_grad(true);
}

}  // namespace tg::testing
