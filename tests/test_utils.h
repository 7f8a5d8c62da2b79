// Helpers shared by the tests.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "core/cuda_context.h"
#include "core/rng.h"
#include "core/tensor.h"

/// Skips the current test when no CUDA device can be used (CPU-only build or no GPU).
#define TG_SKIP_WITHOUT_GPU()                                       \
  do {                                                              \
    if (!::tg::cuda::is_available()) GTEST_SKIP() << "no CUDA device"; \
  } while (0)

/// EXPECTs that the string haystack contains needle.
#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << "message: " << (haystack)

/// EXPECTs that stmt throws a tg::Error whose message contains every one of the strings given.
#define EXPECT_ERROR_HAS(stmt, ...)                                  \
  do {                                                               \
    std::string msg_ = ::tg::testing::error_of([&] { stmt; });       \
    for (const char* part_ : {__VA_ARGS__}) {                        \
      EXPECT_NE(msg_.find(part_), std::string::npos)                 \
          << "message \"" << msg_ << "\" lacks \"" << part_ << "\""; \
    }                                                                \
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

/// EXPECTs that got holds want's (name, tensor) pairs in order: names, shapes, dtypes and values
/// equal, every tensor on the host (what a checkpoint load returns).
inline void expect_same(const std::vector<std::pair<std::string, Tensor>>& got,
                        const std::vector<std::pair<std::string, Tensor>>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].first, want[i].first);
    EXPECT_EQ(got[i].second.shape(), want[i].second.shape()) << want[i].first;
    EXPECT_EQ(got[i].second.dtype(), want[i].second.dtype()) << want[i].first;
    EXPECT_EQ(got[i].second.device(), Device::CPU);
    EXPECT_EQ(got[i].second.to_vector<double>(), want[i].second.to_vector<double>())
        << want[i].first;
  }
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

/// max |a - b| over two vectors; NaN gives infinity.
inline double max_abs_diff_vec(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    const double d = std::fabs(a[i] - b[i]);
    if (std::isnan(d)) return INFINITY;
    m = std::max(m, d);
  }
  return m;
}

/// max |a|
inline double max_abs(const std::vector<double>& a) {
  double m = 0;
  for (double v : a) m = std::max(m, std::fabs(v));
  return m;
}

/// max |a - b| / (1 + max |b|): a relative error that stays meaningful when b is nearly zero (tiny
/// groups, where dx cancels to ~0).
inline double scaled_err(const Tensor& a, const Tensor& b) {
  double m = 0;
  for (double v : b.to_vector<double>()) m = std::max(m, std::fabs(v));
  return max_abs_diff(a, b) / (1.0 + m);
}

/// Normal(mean, std) values from a fresh generator seeded with seed.
inline Tensor randn_t(const Shape& shape, uint64_t seed, DType dtype, Device device = Device::CPU,
                      double mean = 0.0, double std = 1.0) {
  Generator gen(seed);
  return Tensor::randn(shape, gen, dtype, device, mean, std);
}

/// The message of the tg::Error that f throws, or "(no tg::Error thrown)".
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no tg::Error thrown)";
}

/// Runs f and expects a tg::Error whose message contains every one of the words.
template <typename F>
void expect_error_contains(F&& f, const std::vector<std::string>& words) {
  try {
    f();
    ADD_FAILURE() << "expected tg::Error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& w : words)
      EXPECT_NE(msg.find(w), std::string::npos) << "missing '" << w << "' in: " << msg;
  }
}

/// Fills t with NaN so that an element a kernel fails to write shows up in the comparison.
inline void poison(Tensor& t) { t.fill_(std::numeric_limits<double>::quiet_NaN()); }

/// Writes bytes to path, replacing what was there.
inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}

/// A fresh directory per test, named after the test ('/' of parameterised names replaced) and the
/// process, removed with its contents afterwards.
struct TempDir {
  std::filesystem::path dir;
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = std::string(info->test_suite_name()) + "_" + info->name();
    std::replace(name.begin(), name.end(), '/', '_');
    dir = std::filesystem::temp_directory_path() /
          ("tg_io_" + name + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  /// The path of name inside the directory.
  std::string file(const std::string& name) const { return (dir / name).string(); }
  /// The names in the directory, sorted.
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(dir))
      out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
};

/// What a shell command printed (stdout and stderr), its exit code and how long it ran.
struct CommandResult {
  int code;
  std::string output;
  double seconds;
};

/// Runs cmd through the shell and waits for it.
inline CommandResult run_command(const std::string& cmd) {
  const auto t0 = std::chrono::steady_clock::now();
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  std::string out;
  char buf[4096];
  while (p && fgets(buf, sizeof buf, p)) out += buf;
  const int status = p ? pclose(p) : -1;
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out, s};
}

}  // namespace tg::testing
