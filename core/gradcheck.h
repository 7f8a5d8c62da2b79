// Numerical gradient check: central differences in float64 against the tape's analytic gradients.
//
// f maps the inputs to one or more outputs. With a fixed random cotangent v per output, the scalar
// L = sum_k <v_k, f_k(inputs)> has analytic gradient (one backward with grad_outputs v) and numeric
// gradient (L(x + eps e_j) - L(x - eps e_j)) / (2 eps) for every element j of every input that
// requires grad. An element passes when |analytic - numeric| <= atol + rtol * |numeric|.
// Also checked: two backward runs give bit-identical gradients, and zero cotangents give zero
// gradients. Inputs may live on the CPU or on CUDA; they must be float64.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "tensor.h"

namespace tg {

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-5;
  double rtol = 1e-3;
  bool check_determinism = true;
  bool check_zero_grad = true;
  uint64_t seed = 1234;  ///< for the random cotangents
};

/// The outcome for one input that requires grad.
struct GradcheckInputReport {
  size_t input = 0;          ///< position in the inputs vector
  bool passed = true;
  int64_t worst_index = -1;  ///< flat index of the element with the largest violation
  double analytic = 0.0;     ///< at worst_index
  double numeric = 0.0;      ///< at worst_index
  double max_abs_error = 0.0;
  double max_rel_error = 0.0;  ///< |a - n| / max(|n|, tiny), maximum over elements
};

struct GradcheckResult {
  bool passed = true;
  std::vector<GradcheckInputReport> inputs;
  std::string message;  ///< empty when passed; otherwise every failure, one per line
};

using GradcheckFunction = std::function<std::vector<Tensor>(const std::vector<Tensor>&)>;

/// Checks f's gradients at inputs. Does not modify the inputs (perturbs copies). Throws tg::Error
/// when no input requires grad (there would be nothing to check).
GradcheckResult gradcheck(const GradcheckFunction& f, const std::vector<Tensor>& inputs,
                          const GradcheckOptions& options = {});

/// Analytic gradients of L = sum_k <cotangents_k, f_k(inputs)> for each input that requires grad
/// (undefined for the others). Exposed for tools that compare devices or dtypes.
std::vector<Tensor> analytic_gradients(const GradcheckFunction& f, const std::vector<Tensor>& inputs,
                                       const std::vector<Tensor>& cotangents);

}  // namespace tg
