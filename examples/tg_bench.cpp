// tg-bench: times tapegrad's pieces of the model, its training step, and every op of the op list.
//
//   tg-bench                       # reference and small sizes on the GPU (CPU when there is none)
//   tg-bench --sizes reference --reps 50 --json bench.json
//   tg-bench --device cpu --batch 32 --in-channels 8 --out-channels 32 --size 32
//   tg-bench --items ops --op-elements 4194304   # the model's three ops, then ops/op_list.h
//
// Each item: warm-up, then --reps timed runs (CUDA events on the GPU, a steady clock on the CPU);
// median, min and max in ms; the bytes the item must move at least (its floor) and the achieved
// GB/s over that floor. For each size, a line "path: ..." says which path the model's block takes
// (block_path). The training step's peak memory comes from the caching allocator's counters
// and includes x and the target. The "ops" item times, per size, the model's three ops on z, and
// once (rows labelled op_list) every op of ops::op_list() on its benchmark case (float32, inputs of
// about --op-elements elements): forward alone, and forward + backward, whose floor is twice the
// forward's (the backward reads the output gradients and writes the input gradients). Bad arguments
// (unknown sizes or items, out-of-range or inconsistent custom sizes, an unwritable --json path)
// exit 2 before anything is measured; a failure while measuring or writing exits 1.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#ifdef TG_WITH_CUDA
#include "core/cuda_utils.h"
#endif

#include "core/autograd.h"
#include "core/cuda_context.h"
#include "core/size.h"
#include "nn/model.h"
#include "ops/bias_scale_sigmoid.h"
#include "ops/conv2d.h"
#include "ops/conv_block.h"
#include "ops/group_norm.h"
#include "ops/mse_loss.h"
#include "ops/op_list.h"
#include "optim/sgd.h"
#include "train/captured_step.h"

using namespace tg;
using json = nlohmann::json;

namespace {

struct Size {
  std::string name;
  int64_t n, cin, cout, hw, k, g;
};

struct Timing {
  double median, min, max;
};

const std::vector<std::string> kItems = {
    "conv_forward", "conv_backward", "tail_forward", "tail_forward_backward",
    "ops",          "forward",       "train_step",           "train_step_graph"};
const std::map<std::string, Size> kSizes = {{"reference", {"reference", 128, 8, 32, 256, 3, 8}},
                                            {"small", {"small", 128, 3, 16, 32, 3, 8}}};
// Upper bounds of the flags: far beyond any size that fits a GPU, small enough that no product of
// them is near overflow before the checked arithmetic sees it.
constexpr int64_t kMaxBatch = 1 << 16, kMaxChannels = 1 << 16, kMaxSize = 1 << 16,
                  kMaxKernel = 1 << 10;
constexpr int kMaxReps = 100000;
// --op-elements: the op list's benchmark inputs (default: 16 Mi elements on a GPU, 1 Mi on a CPU).
constexpr int64_t kMinOpElements = 64, kMaxOpElements = int64_t(1) << 31;
constexpr int64_t kGpuOpElements = int64_t(1) << 24, kCpuOpElements = int64_t(1) << 20;

/// Thrown for a bad argument: main reports it and exits 2 before anything is measured.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string part;
  while (std::getline(ss, part, ',')) out.push_back(part);
  if (!s.empty() && s.back() == ',') out.emplace_back();
  return out;
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out;
}

// Each name of a comma-separated flag value must be one of valid.
std::vector<std::string> parse_list(const std::string& flag, const std::string& value,
                                    const std::vector<std::string>& valid) {
  std::vector<std::string> names = split_commas(value);
  if (names.empty()) throw UsageError(flag + ": expected a comma-separated list of " + join(valid));
  for (const std::string& n : names)
    if (std::find(valid.begin(), valid.end(), n) == valid.end())
      throw UsageError(flag + ": unknown name '" + n + "' in '" + value + "'; expected " +
                       join(valid) + " (comma-separated)");
  return names;
}

// The --json file must be writable before anything is measured.
void check_writable(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path p(path);
  const fs::path dir = p.parent_path().empty() ? fs::path(".") : p.parent_path();
  std::error_code ec;
  if (fs::is_directory(p, ec))
    throw UsageError("--json " + path + ": is a directory, expected a file");
  if (!fs::is_directory(dir, ec))
    throw UsageError("--json " + path + ": the folder " + dir.string() + " does not exist");
  if (fs::exists(p, ec)) {
    if (::access(p.c_str(), W_OK) != 0)
      throw UsageError("--json " + path + ": not writable: " + std::strerror(errno));
  } else if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    throw UsageError("--json " + path + ": cannot create a file in " + dir.string() + ": " +
                     std::strerror(errno));
  }
}

// A size's shapes must be valid and their byte counts representable (checked, naming the shape).
void check_size(const Size& s) {
  std::ostringstream what;
  what << "size '" << s.name << "'";
  if (s.k > s.hw)
    throw UsageError(what.str() + ": --kernel " + std::to_string(s.k) + " exceeds --size " +
                     std::to_string(s.hw));
  if (s.cout % s.g != 0)
    throw UsageError(what.str() + ": --groups " + std::to_string(s.g) +
                     " must divide --out-channels " + std::to_string(s.cout));
  try {
    const int64_t ho = s.hw - s.k + 1;
    checked_nbytes({s.n, s.cin, s.hw, s.hw}, sizeof(float));
    checked_nbytes({s.n, s.cout, ho, ho}, sizeof(float));
  } catch (const Error& e) {
    throw UsageError(what.str() + ": " + e.what());
  }
}

Timing time_it(Device dev, int warmup, int reps, const std::function<void()>& fn) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> ms;
#ifdef TG_WITH_CUDA
  if (dev == Device::CUDA) {
    cudaEvent_t a, b;
    TG_CUDA_CHECK(cudaEventCreate(&a));
    TG_CUDA_CHECK(cudaEventCreate(&b));
    cudaStream_t s = cuda::stream();  // all of tapegrad's device work is queued here
    cuda::synchronize();
    for (int i = 0; i < reps; ++i) {
      TG_CUDA_CHECK(cudaEventRecord(a, s));
      fn();
      TG_CUDA_CHECK(cudaEventRecord(b, s));
      TG_CUDA_CHECK(cudaEventSynchronize(b));
      float t = 0;
      cudaEventElapsedTime(&t, a, b);
      ms.push_back(t);
    }
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
#endif
  if (dev == Device::CPU) {
    for (int i = 0; i < reps; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      fn();
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
  }
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms.front(), ms.back()};
}

// One row of the table (and its JSON entry): label is the size's name, or op_list.
void report(json& js, const std::string& label, const std::string& item, const Timing& tm,
            double floor_bytes) {
  const double gbs = floor_bytes / (tm.median * 1e-3) / 1e9;
  std::printf("%-10s %-22s %10.3f %10.3f %10.3f %11.3f %10.1f\n", label.c_str(), item.c_str(),
              tm.median, tm.min, tm.max, floor_bytes / 1e9, gbs);
  std::fflush(stdout);
  js[item] = {{"median_ms", tm.median}, {"min_ms", tm.min}, {"max_ms", tm.max},
              {"floor_bytes", floor_bytes}, {"GBps", gbs}};
}

// Which path the model's block (forward and training step) takes for x: the one place that says it.
std::string block_path(const Tensor& x, const ops::ConvBlockParams& p) {
  const ops::ConvBlockPlan plan = ops::conv_block_can_implement(x, p);
  std::string s = ops::conv_block_path_name(plan.path);
  if (!plan.reason.empty()) s += " (" + plan.reason + ")";
  return s;
}

double bytes_of(const std::vector<Tensor>& ts) {
  double b = 0;
  for (const Tensor& t : ts) b += double(t.nbytes());
  return b;
}

// Every op of ops::op_list() on its benchmark case: forward, and forward + backward.
void bench_op_list(Device dev, int warmup, int reps, int64_t elements, json& js) {
  std::printf("op_list    (float32, inputs of about %lld elements: --op-elements)\n",
              static_cast<long long>(elements));
  js["op_elements"] = elements;
  Generator gen(7);
  for (const ops::OpEntry& e : ops::op_list()) {
    ops::OpCase c = e.make_bench(gen, DType::Float32, dev, elements);
    std::vector<Tensor> grads;
    double floor = bytes_of(c.inputs);
    {
      autograd::NoGradGuard ng;
      const std::vector<Tensor> out = c.fn(c.inputs);
      floor += bytes_of(out);
      for (size_t i = 0; i < out.size(); ++i)
        grads.push_back(out[i].dim() == 0
                            ? Tensor::ones({}, DType::Float32, dev)
                            : Tensor::randn(out[i].shape(), 100 + i, DType::Float32, dev));
    }
    json shapes = json::array();
    for (const Tensor& t : c.inputs) shapes.push_back(t.shape());
    js[e.name + "_inputs"] = shapes;
    {
      autograd::NoGradGuard ng;
      report(js, "op_list", e.name + "_fwd",
             time_it(dev, warmup, reps, [&] { c.fn(c.inputs); }), floor);
    }
    report(js, "op_list", e.name + "_fwd_bwd", time_it(dev, warmup, reps, [&] {
             autograd::backward(c.fn(c.inputs), grads);
             for (Tensor& t : c.inputs) t.set_grad(Tensor());
           }), 2 * floor);
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tg-bench: timings of tapegrad's model pieces and training step"};
  std::string sizes_s = "reference,small", device_s = "auto", json_path, items_s = "all";
  int reps = 20, warmup = 3;
  int64_t op_elements = 0;
  Size custom{"custom", 0, 8, 32, 256, 3, 8};
  auto* sizes_opt = app.add_option(
      "--sizes", sizes_s,
      "comma-separated: reference (128, 8->32, 256x256, k3, G8), small (128, 3->16, 32x32, G8)");
  auto* batch_opt =
      app.add_option("--batch", custom.n, "a custom size instead (with the flags below)")
          ->check(CLI::Range(int64_t(1), kMaxBatch))
          ->excludes(sizes_opt);
  app.add_option("--in-channels", custom.cin, "custom Cin")
      ->check(CLI::Range(int64_t(1), kMaxChannels))
      ->needs(batch_opt)
      ->capture_default_str();
  app.add_option("--out-channels", custom.cout, "custom Cout")
      ->check(CLI::Range(int64_t(1), kMaxChannels))
      ->needs(batch_opt)
      ->capture_default_str();
  app.add_option("--size", custom.hw, "custom H = W")
      ->check(CLI::Range(int64_t(1), kMaxSize))
      ->needs(batch_opt)
      ->capture_default_str();
  app.add_option("--kernel", custom.k, "custom kernel size")
      ->check(CLI::Range(int64_t(1), kMaxKernel))
      ->needs(batch_opt)
      ->capture_default_str();
  app.add_option("--groups", custom.g, "custom groups")
      ->check(CLI::Range(int64_t(1), kMaxChannels))
      ->needs(batch_opt)
      ->capture_default_str();
  app.add_option("--device", device_s, "cpu, cuda or auto")->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  app.add_option("--reps", reps, "timed runs per item")
      ->check(CLI::Range(1, kMaxReps))
      ->capture_default_str();
  app.add_option("--warmup", warmup, "untimed runs first")
      ->check(CLI::Range(0, kMaxReps))
      ->capture_default_str();
  app.add_option("--items", items_s, "comma-separated subset: conv_forward,conv_backward,tail_forward,"
                                     "tail_forward_backward,ops,forward,train_step,train_step_graph (default "
                                     "all; ops = the model's three ops alone, then every op of the op list; "
                                     "train_step_graph = the step as a CUDA graph)");
  app.add_option("--op-elements", op_elements,
                 "elements of each large input of the op list's cases (--items ops; default " +
                     std::to_string(kGpuOpElements) + " on cuda, " + std::to_string(kCpuOpElements) +
                     " on cpu)")
      ->check(CLI::Range(kMinOpElements, kMaxOpElements));
  app.add_option("--json", json_path, "write the results here");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  Device dev = Device::CPU;
  std::vector<Size> sizes;
  std::vector<std::string> items = kItems;
  try {
    dev = device_s == "auto" ? (cuda::is_available() ? Device::CUDA : Device::CPU)
                             : parse_device(device_s);
    if (dev == Device::CUDA && !cuda::is_available())
      throw UsageError("--device cuda: no usable CUDA device was found");
    if (op_elements == 0) op_elements = dev == Device::CUDA ? kGpuOpElements : kCpuOpElements;
    if (app.count("--batch")) {
      sizes.push_back(custom);
    } else {
      std::vector<std::string> names;
      for (const auto& [name, size] : kSizes) names.push_back(name);
      for (const std::string& name : parse_list("--sizes", sizes_s, names)) {
        const bool dup =
            std::any_of(sizes.begin(), sizes.end(), [&](const Size& s) { return s.name == name; });
        if (!dup) sizes.push_back(kSizes.at(name));
      }
    }
    for (const Size& s : sizes) check_size(s);
    if (items_s != "all") {
      std::vector<std::string> valid = kItems;
      valid.push_back("all");
      items = parse_list("--items", items_s, valid);
      if (std::find(items.begin(), items.end(), "all") != items.end()) items = kItems;
    }
    if (!json_path.empty()) check_writable(json_path);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tg-bench: %s\n", e.what());
    return 2;
  }
  try {
    auto want = [&](const std::string& item) {
      return std::find(items.begin(), items.end(), item) != items.end();
    };
    json out;
    out["device"] = device_name(dev);
    std::printf("%-10s %-22s %10s %10s %10s %11s %10s\n", "size", "item", "median ms", "min ms",
                "max ms", "floor GB", "GB/s");
    for (const Size& s : sizes) {
      const int64_t ho = s.hw - s.k + 1;
      const double xb = double(checked_nbytes({s.n, s.cin, s.hw, s.hw}, sizeof(float)));
      const double zb = double(checked_nbytes({s.n, s.cout, ho, ho}, sizeof(float)));
      nn::Model model(s.cin, s.cout, s.k, s.g, 0);
      model.to(dev);
      Tensor x = Tensor::rand({s.n, s.cin, s.hw, s.hw}, 1, DType::Float32, dev);
      Tensor t = Tensor::randn({s.n, s.cout, ho, ho}, 2, DType::Float32, dev);
      json js;
      js["shape"] = {{"batch", s.n}, {"in_channels", s.cin}, {"out_channels", s.cout},
                     {"size", s.hw}, {"kernel", s.k}, {"groups", s.g}};
      js["path"] = block_path(x, model.block_params());
      std::printf("%-10s path: %s\n", s.name.c_str(), js["path"].get<std::string>().c_str());
      auto report = [&](const std::string& item, const Timing& tm, double floor_bytes) {
        ::report(js, s.name, item, tm, floor_bytes);
      };
      Tensor z;
      {
        autograd::NoGradGuard ng;
        z = ops::conv2d(x, model.conv->weight.detach(), model.conv->bias.detach());
      }
      if (want("conv_forward")) {
        autograd::NoGradGuard ng;
        report("conv_forward", time_it(dev, warmup, reps, [&] {
                 ops::conv2d(x, model.conv->weight.detach(), model.conv->bias.detach());
               }), xb + zb);
      }
      if (want("conv_backward")) {
        Tensor dz = Tensor::randn(z.shape(), 3, DType::Float32, dev);
        report("conv_backward", time_it(dev, warmup, reps, [&] {
                 ops::conv2d_backward(dz, x, model.conv->weight, ops::Conv2dOptions{}, false, true, true);
               }), xb + zb);
      }
      if (want("tail_forward")) {
        autograd::NoGradGuard ng;
        report("tail_forward", time_it(dev, warmup, reps, [&] {
                 ops::group_norm(ops::bias_scale_sigmoid(z, model.bias, model.scale), s.g,
                                 model.group_norm->weight, model.group_norm->bias);
               }), 2 * zb);
      }
      if (want("tail_forward_backward")) {
        Tensor zr = z.detach().set_requires_grad();
        Tensor dy = Tensor::randn(z.shape(), 4, DType::Float32, dev);
        report("tail_forward_backward", time_it(dev, warmup, reps, [&] {
                 Tensor y = ops::group_norm(ops::bias_scale_sigmoid(zr, model.bias, model.scale), s.g,
                                            model.group_norm->weight, model.group_norm->bias);
                 y.backward(dy);
                 zr.set_grad(Tensor());
                 model.zero_grad();
               }), 5 * zb);
      }
      // Each op of the model alone, forward and forward + backward (issue 3's per-op table).
      if (want("ops")) {
        Tensor zr = z.detach().set_requires_grad();
        Tensor dy = Tensor::randn(z.shape(), 5, DType::Float32, dev);
        Tensor tt = Tensor::randn(z.shape(), 6, DType::Float32, dev);
        Tensor one = Tensor::ones({}, DType::Float32, dev);
        auto fwd_bwd = [&](const std::function<Tensor()>& f, const Tensor& g) {
          return [&, f, g] {
            f().backward(g);
            zr.set_grad(Tensor());
            model.zero_grad();
          };
        };
        std::function<Tensor()> bss = [&] { return ops::bias_scale_sigmoid(zr, model.bias, model.scale); };
        std::function<Tensor()> gn = [&] {
          return ops::group_norm(zr, s.g, model.group_norm->weight, model.group_norm->bias);
        };
        std::function<Tensor()> mse = [&] { return ops::mse_loss(zr, tt); };
        {
          autograd::NoGradGuard ng;
          report("bias_scale_sigmoid_fwd", time_it(dev, warmup, reps, [&] { bss(); }), 2 * zb);
          report("group_norm_fwd", time_it(dev, warmup, reps, [&] { gn(); }), 2 * zb);
          report("mse_loss_fwd", time_it(dev, warmup, reps, [&] { mse(); }), 2 * zb);
        }
        report("bias_scale_sigmoid_fwd_bwd", time_it(dev, warmup, reps, fwd_bwd(bss, dy)), 5 * zb);
        report("group_norm_fwd_bwd", time_it(dev, warmup, reps, fwd_bwd(gn, dy)), 5 * zb);
        report("mse_loss_fwd_bwd", time_it(dev, warmup, reps, fwd_bwd(mse, one)), 5 * zb);
      }
      if (want("forward")) {
        autograd::NoGradGuard ng;
        z = Tensor();
        report("forward", time_it(dev, warmup, reps, [&] { model.forward(x); }), xb + zb);
      }
      z = Tensor();
      if (want("train_step")) {
        optim::SGD opt(model.named_parameters(), {0.001, 0.9, 0, false, 0});
        auto step = [&] {
          opt.zero_grad();
          model.loss(x, t).backward();
          opt.step();
        };
        // the floor: x read three times, z and the target twice each, z written once
        report("train_step", time_it(dev, warmup, reps, step), 3 * xb + 5 * zb);
        if (dev == Device::CUDA) {
          cuda::synchronize();
          cuda::reset_peak_memory();
          step();
          cuda::synchronize();
          const double peak = double(cuda::memory_stats().peak_bytes);
          std::printf("%-10s %-22s %10.3f GiB (x and target included)\n", s.name.c_str(),
                      "train_step peak memory", peak / (1024.0 * 1024 * 1024));
          js["train_step_peak_bytes"] = peak;
        }
      }
      // The same step with forward, loss and backward replayed as one CUDA graph
      // (train::CapturedStep; the optimizer steps after it), on the same fixed x and target.
      if (want("train_step_graph") && dev == Device::CUDA) {
        optim::SGD opt(model.named_parameters(), {0.001, 0.9, 0, false, 0});
        train::CapturedStep graph_step({x, t}, [&](const std::vector<Tensor>& in) {
          opt.zero_grad();
          Tensor loss = model.loss(in[0], in[1]);
          loss.backward();
          return loss;
        }, &opt, model.parameters());
        report("train_step_graph", time_it(dev, std::max(warmup, 2), reps, [&] { graph_step.run({x, t}); }),
               3 * xb + 5 * zb);
        std::printf("%-10s %-22s %10zu nodes in the graph\n", s.name.c_str(), "train_step_graph",
                    graph_step.graph_nodes());
        js["train_step_graph_nodes"] = graph_step.graph_nodes();
      }
      out["results"][s.name] = js;
    }
    if (want("ops")) bench_op_list(dev, warmup, reps, op_elements, out["results"]["op_list"]);
    if (!json_path.empty()) {
      std::ofstream f(json_path);
      f << out.dump(2) << "\n";
      f.close();
      if (!f) {
        std::fprintf(stderr, "tg-bench: could not write the results to --json %s: %s\n",
                     json_path.c_str(), std::strerror(errno));
        return 1;
      }
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tg-bench: %s\n", e.what());
    return 1;
  }
}
