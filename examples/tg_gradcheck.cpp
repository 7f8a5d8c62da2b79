// tg-gradcheck: checks every op's gradients numerically, on the CPU or on CUDA.
//
//   tg-gradcheck --op all --device cuda --dtype float64 --trials 20
//   tg-gradcheck --op group_norm --batch 2 --out-channels 6 --groups 3 --height 5 --width 7
//
// float64: central differences against the tape's analytic gradients (tg::gradcheck).
// float32: the analytic gradients of float32 tensors on --device against the float64 analytic
// gradients on the CPU (which float64 gradcheck validates), with the tolerance that --help states.
//
// A fixed shape is checked for what each op uses: conv2d and model take x of (N, Cin, H, W) and a
// k x k kernel; bias_scale_sigmoid, group_norm and mse_loss take their input of (N, Cout, H, W).
// Bad arguments exit 2, failing gradients exit 1.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/cuda_context.h"
#include "core/gradcheck.h"
#include "core/rng.h"
#include "core/size.h"
#include "ops/bias_scale_sigmoid.h"
#include "ops/conv2d.h"
#include "ops/group_norm.h"
#include "ops/mse_loss.h"
#include "ops/op_list.h"

using namespace tg;

namespace {

constexpr double kF32Atol = 1e-6;
constexpr double kF32Rtol = 2e-3;

struct Sizes {
  int64_t n, cin, cout, h, w, k, g;
};

const std::vector<std::string> kOps = {"conv2d", "bias_scale_sigmoid", "group_norm", "mse_loss",
                                       "model"};
// Upper bounds of the shape flags: central differences cost two forwards per element, so anything
// near these is already impractical; they keep every product far from overflow.
constexpr int64_t kMaxBatch = 1024, kMaxChannels = 4096, kMaxSpatial = 4096, kMaxKernel = 255;

/// The shape flags that op reads.
std::vector<std::string> flags_used(const std::string& op) {
  if (op == "conv2d")
    return {"--batch", "--in-channels", "--out-channels", "--height", "--width", "--kernel"};
  if (op == "group_norm") return {"--batch", "--out-channels", "--height", "--width", "--groups"};
  if (op == "model")
    return {"--batch", "--in-channels", "--out-channels", "--height",
            "--width", "--kernel",      "--groups"};
  if (op == "bias_scale_sigmoid" || op == "mse_loss")
    return {"--batch", "--out-channels", "--height", "--width"};
  return {};  // the ops of ops/op_list.h draw shapes of their own
}

/// Why s cannot serve op (empty when it can): only the constraints of the sizes that op uses.
std::string invalid_for(const std::string& op, const Sizes& s) {
  std::ostringstream os;
  const bool conv = op == "conv2d" || op == "model";
  if (conv && (s.k > s.h || s.k > s.w))
    os << "--kernel " << s.k << " exceeds --height " << s.h << " or --width " << s.w;
  else if ((op == "group_norm" || op == "model") && s.cout % s.g != 0)
    os << "--groups " << s.g << " must divide --out-channels " << s.cout;
  return os.str();
}

struct Case {
  std::string op;
  std::vector<std::string> names;   // one per input
  std::vector<Tensor> inputs;       // float64 CPU, all requiring grad (except targets)
  GradcheckFunction f;
};

Case make_case(const std::string& op, const Sizes& s, Generator& gen) {
  auto rnd = [&](Shape shape, double lo = -1.0, double hi = 1.0) {
    return Tensor::rand(shape, gen, DType::Float64, Device::CPU, lo, hi).set_requires_grad();
  };
  const int64_t ho = s.h - s.k + 1, wo = s.w - s.k + 1;  // conv2d's output, for model's target
  Case c;
  c.op = op;
  if (op == "conv2d") {
    c.names = {"x", "weight", "bias"};
    c.inputs = {rnd({s.n, s.cin, s.h, s.w}), rnd({s.cout, s.cin, s.k, s.k}), rnd({s.cout})};
    c.f = [](const std::vector<Tensor>& in) {
      return std::vector<Tensor>{ops::conv2d(in[0], in[1], in[2])};
    };
  } else if (op == "bias_scale_sigmoid") {
    c.names = {"z", "bias", "scale"};
    c.inputs = {rnd({s.n, s.cout, s.h, s.w}, -2, 2), rnd({s.cout, 1, 1}),
                rnd({s.cout, 1, 1}, -2, 2)};
    c.f = [](const std::vector<Tensor>& in) {
      return std::vector<Tensor>{ops::bias_scale_sigmoid(in[0], in[1], in[2])};
    };
  } else if (op == "group_norm") {
    c.names = {"x", "weight", "bias"};
    c.inputs = {rnd({s.n, s.cout, s.h, s.w}), rnd({s.cout}, 0.5, 1.5), rnd({s.cout})};
    int64_t g = s.g;
    c.f = [g](const std::vector<Tensor>& in) {
      return std::vector<Tensor>{ops::group_norm(in[0], g, in[1], in[2])};
    };
  } else if (op == "mse_loss") {
    c.names = {"y", "target"};
    c.inputs = {rnd({s.n, s.cout, s.h, s.w}), rnd({s.n, s.cout, s.h, s.w})};
    c.f = [](const std::vector<Tensor>& in) {
      return std::vector<Tensor>{ops::mse_loss(in[0], in[1])};
    };
  } else if (op == "model") {
    c.names = {"x", "conv.weight", "conv.bias", "bias", "scale", "group_norm.weight",
               "group_norm.bias", "target"};
    c.inputs = {rnd({s.n, s.cin, s.h, s.w}, 0, 1), rnd({s.cout, s.cin, s.k, s.k}), rnd({s.cout}),
                rnd({s.cout, 1, 1}), rnd({s.cout, 1, 1}, -2, 2), rnd({s.cout}, 0.5, 1.5),
                rnd({s.cout}), rnd({s.n, s.cout, ho, wo})};
    int64_t g = s.g;
    c.f = [g](const std::vector<Tensor>& in) {
      Tensor z = ops::conv2d(in[0], in[1], in[2]);
      Tensor y = ops::group_norm(ops::bias_scale_sigmoid(z, in[3], in[4]), g, in[5], in[6]);
      return std::vector<Tensor>{y, ops::mse_loss(y, in[7])};
    };
  } else {
    // Every other op comes from the one op list (ops/op_list.h).
    ops::OpCase oc = ops::find_op(op).make(gen, DType::Float64, Device::CPU);
    c.names = oc.input_names;
    c.inputs = oc.inputs;
    c.f = oc.fn;
  }
  return c;
}

Sizes random_sizes(Generator& gen) {
  Sizes s;
  s.k = 1 + int64_t(gen.below(3));
  s.n = 1 + int64_t(gen.below(2));
  s.cin = 1 + int64_t(gen.below(3));
  s.g = 1 + int64_t(gen.below(3));
  s.cout = s.g * (1 + int64_t(gen.below(3)));
  s.h = s.k + int64_t(gen.below(5));
  s.w = s.k + int64_t(gen.below(5));
  return s;
}

struct Row {
  std::string op, input, shape;
  double abs_err, rel_err;
  int64_t worst;
  bool pass;
};

// float32: analytic grads on device vs float64 CPU analytic grads, same cotangents.
std::vector<Row> check_float32(const Case& c, Device device, uint64_t seed) {
  std::vector<Tensor> in32;
  for (const Tensor& t : c.inputs) {
    Tensor u = t.detach().to(DType::Float32).to(device);
    if (t.requires_grad()) u.set_requires_grad(true);
    in32.push_back(u);
  }
  std::vector<Tensor> probe;
  {
    autograd::NoGradGuard ng;
    probe = c.f(c.inputs);
  }
  Generator gen(seed);
  std::vector<Tensor> cot64, cot32;
  for (const Tensor& o : probe) {
    cot64.push_back(Tensor::randn(o.shape(), gen, DType::Float64));
    cot32.push_back(cot64.back().to(DType::Float32).to(device));
  }
  auto g64 = analytic_gradients(c.f, c.inputs, cot64);
  auto g32 = analytic_gradients(c.f, in32, cot32);
  std::vector<Row> rows;
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    if (!g64[i].defined()) continue;
    auto a = g32[i].to_vector<double>();
    auto b = g64[i].to_vector<double>();
    double scale = 0, worst = -1, max_abs = 0, max_rel = 0;
    int64_t wi = -1;
    for (double v : b) scale = std::max(scale, std::fabs(v));
    for (size_t j = 0; j < a.size(); ++j) {
      double e = std::fabs(a[j] - b[j]);
      if (std::isnan(e)) e = INFINITY;
      max_abs = std::max(max_abs, e);
      if (std::fabs(b[j]) > 0) max_rel = std::max(max_rel, e / std::fabs(b[j]));
      if (e > worst) {
        worst = e;
        wi = int64_t(j);
      }
    }
    rows.push_back({c.op, c.names[i], shape_str(c.inputs[i].shape()), max_abs, max_rel, wi,
                    max_abs <= kF32Atol + kF32Rtol * scale});
  }
  return rows;
}

std::vector<Row> check_float64(const Case& c, Device device) {
  std::vector<Tensor> in;
  for (const Tensor& t : c.inputs) {
    Tensor u = t.detach().to(device);
    if (t.requires_grad()) u.set_requires_grad(true);
    in.push_back(u);
  }
  GradcheckResult r = gradcheck(c.f, in);
  std::vector<Row> rows;
  for (const auto& rep : r.inputs)
    rows.push_back({c.op, c.names[rep.input], shape_str(c.inputs[rep.input].shape()),
                    rep.max_abs_error, rep.max_rel_error, rep.worst_index, rep.passed});
  if (!r.passed && r.message.find("non-deterministic") != std::string::npos)
    rows.push_back({c.op, "(determinism)", "", 0, 0, -1, false});
  if (!r.passed && r.message.find("zero output gradient") != std::string::npos)
    rows.push_back({c.op, "(zero grad)", "", 0, 0, -1, false});
  return rows;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tg-gradcheck: numerical gradient checks of tapegrad's ops"};
  std::string op = "all", device_s = "cpu", dtype_s = "float64";
  int64_t batch = 0, cin = 0, cout = 0, height = 0, width = 0, kernel = 0, groups = 0;
  uint64_t seed = 0;
  int trials = 3;
  std::vector<std::string> all_ops = kOps;  // the fused block's parts, then ops/op_list.h
  for (const ops::OpEntry& e : ops::op_list())
    if (std::find(all_ops.begin(), all_ops.end(), e.name) == all_ops.end()) all_ops.push_back(e.name);
  std::vector<std::string> op_choices = all_ops;
  op_choices.push_back("all");
  app.add_option("--op", op, "an op of ops/op_list.h, one of the fused block's parts, or all")
      ->check(CLI::IsMember(op_choices));
  app.add_option("--batch", batch, "N (with the other shape flags: one fixed shape; default 2)")
      ->check(CLI::Range(int64_t(1), kMaxBatch));
  app.add_option("--in-channels", cin, "Cin of conv2d and model (default 3)")
      ->check(CLI::Range(int64_t(1), kMaxChannels));
  app.add_option("--out-channels", cout, "Cout of conv2d and model, C of the other ops (default 4)")
      ->check(CLI::Range(int64_t(1), kMaxChannels));
  app.add_option("--height", height, "H of the op's input (default 6)")
      ->check(CLI::Range(int64_t(1), kMaxSpatial));
  app.add_option("--width", width, "W of the op's input (default 5)")
      ->check(CLI::Range(int64_t(1), kMaxSpatial));
  app.add_option("--kernel", kernel, "kernel size of conv2d and model, at most H and W (default 3)")
      ->check(CLI::Range(int64_t(1), kMaxKernel));
  app.add_option("--groups", groups,
                 "GroupNorm groups of group_norm and model, must divide Cout (default 2)")
      ->check(CLI::Range(int64_t(1), kMaxChannels));
  app.add_option("--device", device_s, "cpu|cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--dtype", dtype_s,
                 "float64: central differences (eps 1e-6, pass when |a-n| <= 1e-5 + 1e-3|n|); "
                 "float32: gradients on --device against float64 CPU gradients, pass when "
                 "max|g32-g64| <= 1e-6 + 2e-3 max|g64| (TF32 off)")
      ->check(CLI::IsMember({"float64", "float32"}));
  app.add_option("--seed", seed, "random seed for shapes and values");
  app.add_option("--trials", trials, "random shapes per op when no shape is given")
      ->check(CLI::Range(1, 100000));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }

  try {
    Device device = parse_device(device_s);
    if (device == Device::CUDA && !cuda::is_available()) {
      std::cerr << "tg-gradcheck: --device cuda, but no usable CUDA device was found\n";
      return 2;
    }
    bool fixed = batch || cin || cout || height || width || kernel || groups;
    Sizes fixed_sizes{batch ? batch : 2, cin ? cin : 3, cout ? cout : 4, height ? height : 6,
                      width ? width : 5, kernel ? kernel : 3, groups ? groups : 2};
    std::vector<std::string> op_list = op == "all" ? all_ops : std::vector<std::string>{op};
    if (fixed) {
      for (const std::string& name : op_list) {
        const std::string why = invalid_for(name, fixed_sizes);
        if (!why.empty()) {
          std::cerr << "tg-gradcheck: invalid shape for --op " << name << ": " << why << "\n";
          return 2;
        }
      }
      if (op != "all")
        for (const char* flag : {"--batch", "--in-channels", "--out-channels", "--height", "--width",
                                 "--kernel", "--groups"}) {
          const auto used = flags_used(op);
          if (app.count(flag) && std::find(used.begin(), used.end(), flag) == used.end())
            std::cerr << "tg-gradcheck: note: --op " << op << " does not use " << flag << "\n";
        }
    }
    ops::conv::set_allow_tf32(false);
    ops::conv::set_deterministic(true);  // repeated backwards must give the same bits
    Generator gen(seed);
    int failures = 0;
    std::printf("%-19s %-18s %-16s %12s %12s %8s  %s\n", "op", "input", "shape", "max abs err",
                "max rel err", "worst", "result");
    for (const std::string& name : op_list) {
      int n_trials = fixed ? 1 : trials;
      for (int t = 0; t < n_trials; ++t) {
        Sizes s = fixed ? fixed_sizes : random_sizes(gen);
        Case c = make_case(name, s, gen);
        auto rows = dtype_s == "float64" ? check_float64(c, device)
                                         : check_float32(c, device, seed + uint64_t(t));
        for (const Row& r : rows) {
          std::printf("%-19s %-18s %-16s %12.3e %12.3e %8lld  %s\n", r.op.c_str(), r.input.c_str(),
                      r.shape.c_str(), r.abs_err, r.rel_err, (long long)r.worst,
                      r.pass ? "pass" : "FAIL");
          if (!r.pass) ++failures;
        }
      }
    }
    std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "all gradients pass", failures);
    return failures ? 1 : 0;
  } catch (const std::exception& e) {
    std::cerr << "tg-gradcheck: " << e.what() << "\n";
    return 2;
  }
}
