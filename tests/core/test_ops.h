// Tiny CPU-only ops defined in the tests, so that core's autograd and gradcheck are tested without
// depending on ops/. float64 only.
#pragma once

#include <cmath>

#include "core/autograd.h"
#include "core/tensor.h"

namespace tg::testing {

/// y = a * b elementwise (same shape). Saves a and b.
struct TestMulNode : autograd::Node {
  autograd::SavedTensor a, b;
  const char* name() const override { return "test_mul"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    const Tensor& A = a.get(name());
    const Tensor& B = b.get(name());
    std::vector<Tensor> out(2);
    auto prod = [&](const Tensor& x) {
      Tensor r = Tensor::empty(x.shape(), DType::Float64);
      for (int64_t i = 0; i < x.numel(); ++i) r.data<double>()[i] = g[0].data<double>()[i] * x.data<double>()[i];
      return r;
    };
    if (needs_input_grad(0)) out[0] = prod(B);
    if (needs_input_grad(1)) out[1] = prod(A);
    return out;
  }
  void release_saved() override { a.release(); b.release(); }
};

inline Tensor test_mul(const Tensor& a, const Tensor& b) {
  Tensor y = Tensor::empty(a.shape(), DType::Float64);
  for (int64_t i = 0; i < a.numel(); ++i) y.data<double>()[i] = a.data<double>()[i] * b.data<double>()[i];
  if (autograd::should_record({a, b})) {
    auto n = std::make_shared<TestMulNode>();
    n->a = autograd::SavedTensor(a);
    n->b = autograd::SavedTensor(b);
    autograd::record(n, {a, b}, {y});
  }
  return y;
}

/// y = sin(x), with an optionally wrong backward (cos(x) * 1.01) for the gradcheck failure test.
struct TestSinNode : autograd::Node {
  autograd::SavedTensor x;
  bool wrong = false;
  const char* name() const override { return "test_sin"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    const Tensor& X = x.get(name());
    Tensor r = Tensor::empty(X.shape(), DType::Float64);
    for (int64_t i = 0; i < X.numel(); ++i)
      r.data<double>()[i] = g[0].data<double>()[i] * std::cos(X.data<double>()[i]) * (wrong ? 1.01 : 1.0);
    return {r};
  }
  void release_saved() override { x.release(); }
};

inline Tensor test_sin(const Tensor& x, bool wrong = false) {
  Tensor y = Tensor::empty(x.shape(), DType::Float64);
  for (int64_t i = 0; i < x.numel(); ++i) y.data<double>()[i] = std::sin(x.data<double>()[i]);
  if (autograd::should_record({x})) {
    auto n = std::make_shared<TestSinNode>();
    n->x = autograd::SavedTensor(x);
    n->wrong = wrong;
    autograd::record(n, {x}, {y});
  }
  return y;
}

/// y = sin(x) with a backward that is right to within 1e-9 (so finite differences accept it) but breaks
/// one of gradcheck's other rules: Flaky scales by 1 + 1e-12 * (call count), different on each
/// backward (non-deterministic); Leaky adds 1e-9 whatever the output gradient (non-zero for a zero
/// cotangent).
enum class SinQuirk { Flaky, Leaky };

struct TestQuirkySinNode : autograd::Node {
  autograd::SavedTensor x;
  SinQuirk quirk = SinQuirk::Flaky;
  const char* name() const override { return "test_quirky_sin"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    static int calls = 0;
    ++calls;
    const Tensor& X = x.get(name());
    Tensor r = Tensor::empty(X.shape(), DType::Float64);
    const double factor = quirk == SinQuirk::Flaky ? 1.0 + 1e-12 * calls : 1.0;
    const double extra = quirk == SinQuirk::Leaky ? 1e-9 : 0.0;
    for (int64_t i = 0; i < X.numel(); ++i)
      r.data<double>()[i] = g[0].data<double>()[i] * std::cos(X.data<double>()[i]) * factor + extra;
    return {r};
  }
  void release_saved() override { x.release(); }
};

inline Tensor test_quirky_sin(const Tensor& x, SinQuirk quirk) {
  Tensor y = Tensor::empty(x.shape(), DType::Float64);
  for (int64_t i = 0; i < x.numel(); ++i) y.data<double>()[i] = std::sin(x.data<double>()[i]);
  if (autograd::should_record({x})) {
    auto n = std::make_shared<TestQuirkySinNode>();
    n->x = autograd::SavedTensor(x);
    n->quirk = quirk;
    autograd::record(n, {x}, {y});
  }
  return y;
}

/// s = sum(x) as a 0-dim tensor.
struct TestSumNode : autograd::Node {
  const char* name() const override { return "test_sum"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    const auto& in = inputs()[0];
    return {Tensor::full(in.shape, g[0].item(), DType::Float64)};
  }
};

inline Tensor test_sum(const Tensor& x) {
  double s = 0;
  for (int64_t i = 0; i < x.numel(); ++i) s += x.data<double>()[i];
  Tensor y = Tensor::full({}, s, DType::Float64);
  if (autograd::should_record({x})) autograd::record(std::make_shared<TestSumNode>(), {x}, {y});
  return y;
}

}  // namespace tg::testing
