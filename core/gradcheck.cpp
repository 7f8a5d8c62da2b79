#include "gradcheck.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

#include "autograd.h"
#include "rng.h"
#include "size.h"

namespace tg {

namespace {

double dot_host(const std::vector<Tensor>& a, const std::vector<std::vector<double>>& b) {
  TG_CHECK(a.size() == b.size(), "gradcheck: the function returned ", a.size(),
           " outputs, expected ", b.size(), " (as many as on its first call)");
  double s = 0.0;
  for (size_t k = 0; k < a.size(); ++k) {
    auto v = a[k].to_vector<double>();
    TG_CHECK(v.size() == b[k].size(), "gradcheck: output ", k, " has shape ", a[k].shape(), " (",
             v.size(), " elements), but had ", b[k].size(), " elements on the first call");
    for (size_t i = 0; i < v.size(); ++i) s += v[i] * b[k][i];
  }
  return s;
}

std::vector<Tensor> run(const GradcheckFunction& f, const std::vector<Tensor>& inputs) {
  std::vector<Tensor> out = f(inputs);
  TG_CHECK(!out.empty(), "gradcheck: the function returned no outputs");
  return out;
}

}  // namespace

std::vector<Tensor> analytic_gradients(const GradcheckFunction& f, const std::vector<Tensor>& inputs,
                                       const std::vector<Tensor>& cotangents) {
  std::vector<Tensor> leaves;
  for (const Tensor& t : inputs) {
    if (!t.defined()) {
      leaves.emplace_back();
      continue;
    }
    Tensor leaf = t.detach();
    if (t.requires_grad()) leaf.set_requires_grad(true);
    leaves.push_back(leaf);
  }
  std::vector<Tensor> outputs = run(f, leaves);
  TG_CHECK(outputs.size() == cotangents.size(), "gradcheck: the function returned ", outputs.size(),
           " outputs, expected ", cotangents.size());
  std::vector<Tensor> roots, grads;
  for (size_t k = 0; k < outputs.size(); ++k) {
    if (!outputs[k].requires_grad()) continue;  // an output independent of every input
    roots.push_back(outputs[k]);
    grads.push_back(cotangents[k]);
  }
  if (!roots.empty()) autograd::backward(roots, grads, false);
  std::vector<Tensor> result;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].defined() || !inputs[i].requires_grad()) {
      result.emplace_back();
      continue;
    }
    Tensor g = leaves[i].grad();
    result.push_back(g.defined() ? g : Tensor::zeros(inputs[i].shape(), inputs[i].dtype(),
                                                     inputs[i].device()));
  }
  return result;
}

GradcheckResult gradcheck(const GradcheckFunction& f, const std::vector<Tensor>& inputs,
                          const GradcheckOptions& opt) {
  const bool any = std::any_of(inputs.begin(), inputs.end(),
                               [](const Tensor& t) { return t.defined() && t.requires_grad(); });
  TG_CHECK(any, "gradcheck: none of the ", inputs.size(),
           " inputs requires grad, so there is no gradient to check; mark the inputs to check "
           "with set_requires_grad()");
  for (size_t i = 0; i < inputs.size(); ++i)
    if (inputs[i].defined() && inputs[i].requires_grad())
      TG_CHECK(inputs[i].dtype() == DType::Float64, "gradcheck: input ", i,
               " must be float64 (finite differences in float32 are meaningless), got ",
               inputs[i].describe());

  // Random cotangents, one per output, drawn from a fixed seed.
  std::vector<Tensor> probe;
  {
    autograd::NoGradGuard no_grad;
    probe = run(f, inputs);
  }
  Generator gen(opt.seed);
  std::vector<Tensor> cot;
  std::vector<std::vector<double>> cot_host;
  for (const Tensor& o : probe) {
    Tensor v = Tensor::randn(o.shape(), gen, o.dtype(), o.device());
    cot_host.push_back(v.to_vector<double>());
    cot.push_back(v);
  }
  probe.clear();

  GradcheckResult result;
  std::ostringstream msg;
  std::vector<Tensor> analytic = analytic_gradients(f, inputs, cot);

  if (opt.check_determinism) {
    std::vector<Tensor> again = analytic_gradients(f, inputs, cot);
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (!analytic[i].defined()) continue;
      auto a = analytic[i].to_vector<double>();
      auto b = again[i].to_vector<double>();
      if (a.size() != b.size() ||
          std::memcmp(a.data(), b.data(),
                      checked_bytes(int64_t(a.size()), sizeof(double), "gradcheck")) != 0) {
        result.passed = false;
        msg << "input " << i << ": two backward runs gave different gradients (non-deterministic)\n";
      }
    }
  }
  if (opt.check_zero_grad) {
    std::vector<Tensor> zero_cot;
    for (const Tensor& v : cot) zero_cot.push_back(Tensor::zeros(v.shape(), v.dtype(), v.device()));
    std::vector<Tensor> zg = analytic_gradients(f, inputs, zero_cot);
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (!zg[i].defined()) continue;
      for (double x : zg[i].to_vector<double>())
        if (x != 0.0) {
          result.passed = false;
          msg << "input " << i << ": a zero output gradient gave a non-zero input gradient (" << x
              << ")\n";
          break;
        }
    }
  }

  // Central differences, one element at a time, on copies of the inputs.
  autograd::NoGradGuard no_grad;
  std::vector<Tensor> work;
  for (const Tensor& t : inputs) work.push_back(t.defined() ? t.detach().clone() : t);
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].defined() || !inputs[i].requires_grad()) continue;
    GradcheckInputReport rep;
    rep.input = i;
    Tensor host = inputs[i].cpu().clone();
    double* h = host.data<double>();
    auto a = analytic[i].to_vector<double>();
    double worst_violation = -1.0;
    for (int64_t j = 0; j < host.numel(); ++j) {
      const double orig = h[j];
      h[j] = orig + opt.eps;
      work[i].copy_(host);
      double lp = dot_host(run(f, work), cot_host);
      h[j] = orig - opt.eps;
      work[i].copy_(host);
      double lm = dot_host(run(f, work), cot_host);
      h[j] = orig;
      double numeric = (lp - lm) / (2.0 * opt.eps);
      double err = std::fabs(a[j] - numeric);
      double rel = err / std::max(std::fabs(numeric), 1e-300);
      if (std::isnan(a[j]) || std::isnan(numeric)) err = rel = INFINITY;
      rep.max_abs_error = std::max(rep.max_abs_error, err);
      rep.max_rel_error = std::max(rep.max_rel_error, std::fabs(numeric) > 0 ? rel : 0.0);
      double violation = err - (opt.atol + opt.rtol * std::fabs(numeric));
      if (std::isnan(violation)) violation = INFINITY;
      if (violation > worst_violation) {
        worst_violation = violation;
        rep.worst_index = j;
        rep.analytic = a[j];
        rep.numeric = numeric;
      }
    }
    work[i].copy_(host);
    rep.passed = worst_violation <= 0.0;
    if (!rep.passed) {
      result.passed = false;
      msg << "input " << i << " " << shape_str(inputs[i].shape()) << ": gradient mismatch at index "
          << rep.worst_index << ": analytic " << rep.analytic << ", numeric " << rep.numeric
          << ", abs error " << std::fabs(rep.analytic - rep.numeric) << ", rel error "
          << std::fabs(rep.analytic - rep.numeric) / std::max(std::fabs(rep.numeric), 1e-300)
          << " (tolerance atol " << opt.atol << " + rtol " << opt.rtol << " * |numeric|)\n";
    }
    result.inputs.push_back(rep);
  }
  result.message = msg.str();
  return result;
}

}  // namespace tg
