// Helpers shared by the tests.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "core/cuda_context.h"
#include "core/rng.h"
#include "core/tensor.h"

/// Skips the current test when no CUDA device can be used (CPU-only build or no GPU).
#define TG_SKIP_WITHOUT_GPU()                                       \
  do {                                                              \
    if (!::tg::cuda::is_available()) GTEST_SKIP() << "no CUDA device"; \
  } while (0)

namespace tg::testing {

/// ||a - b|| / ||b|| over all elements (both converted to double on the host).
inline double rel_l2(const Tensor& a, const Tensor& b) {
  auto x = a.to_vector<double>();
  auto y = b.to_vector<double>();
  EXPECT_EQ(x.size(), y.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
    if (std::isnan(x[i]) || std::isnan(y[i])) return std::numeric_limits<double>::infinity();
    num += (x[i] - y[i]) * (x[i] - y[i]);
    den += y[i] * y[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

/// max |a - b|
inline double max_abs_diff(const Tensor& a, const Tensor& b) {
  auto x = a.to_vector<double>();
  auto y = b.to_vector<double>();
  EXPECT_EQ(x.size(), y.size());
  double m = 0;
  for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
    double d = std::fabs(x[i] - y[i]);
    if (std::isnan(d)) return std::numeric_limits<double>::infinity();
    m = std::max(m, d);
  }
  return m;
}

/// Fills t with NaN so that an element a kernel fails to write shows up in the comparison.
inline void poison(Tensor& t) { t.fill_(std::numeric_limits<double>::quiet_NaN()); }

}  // namespace tg::testing
