// tg-bench: times tapegrad's pieces of the model and its training step.
//
//   tg-bench                       # reference and small sizes on the GPU (CPU when there is none)
//   tg-bench --sizes reference --reps 50 --json bench.json
//   tg-bench --device cpu --batch 32 --in-channels 8 --out-channels 32 --size 32
//
// Each item: warm-up, then --reps timed runs (CUDA events on the GPU, a steady clock on the CPU);
// median, min and max in ms; the bytes the item must move at least (its floor) and the achieved
// GB/s over that floor. The training step's peak memory comes from the caching allocator's counters
// and includes x and the target.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>

#ifdef TG_WITH_CUDA
#include "core/cuda_utils.h"
#endif

#include "core/autograd.h"
#include "core/cuda_context.h"
#include "nn/model.h"
#include "ops/bias_scale_sigmoid.h"
#include "ops/conv2d.h"
#include "ops/group_norm.h"
#include "ops/mse_loss.h"
#include "optim/sgd.h"

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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tg-bench: timings of tapegrad's model pieces and training step"};
  std::string sizes_s = "reference,small", device_s = "auto", json_path, items_s = "all";
  int reps = 20, warmup = 3;
  Size custom{"custom", 0, 8, 32, 256, 3, 8};
  app.add_option("--sizes", sizes_s, "reference (128, 8->32, 256x256, k3, G8), small (128, 3->16, 32x32, G8)");
  app.add_option("--batch", custom.n, "a custom size instead (with the flags below)");
  app.add_option("--in-channels", custom.cin, "custom Cin")->capture_default_str();
  app.add_option("--out-channels", custom.cout, "custom Cout")->capture_default_str();
  app.add_option("--size", custom.hw, "custom H = W")->capture_default_str();
  app.add_option("--kernel", custom.k, "custom kernel size")->capture_default_str();
  app.add_option("--groups", custom.g, "custom groups")->capture_default_str();
  app.add_option("--device", device_s, "cpu, cuda or auto")->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  app.add_option("--reps", reps, "timed runs per item")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--warmup", warmup, "untimed runs first")->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--items", items_s, "comma-separated subset: conv_forward,conv_backward,tail_forward,"
                                     "tail_forward_backward,ops,forward,train_step (default all; ops = each "
                                     "op alone)");
  app.add_option("--json", json_path, "write the results here");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  try {
    const Device dev = device_s == "auto" ? (cuda::is_available() ? Device::CUDA : Device::CPU)
                                          : parse_device(device_s);
    TG_CHECK(dev == Device::CPU || cuda::is_available(), "--device cuda: no usable CUDA device");
    std::vector<Size> sizes;
    if (custom.n > 0) {
      sizes.push_back(custom);
    } else {
      for (const std::string& s : {std::string("reference"), std::string("small")})
        if (sizes_s.find(s) != std::string::npos)
          sizes.push_back(s == "reference" ? Size{"reference", 128, 8, 32, 256, 3, 8}
                                           : Size{"small", 128, 3, 16, 32, 3, 8});
    }
    auto want = [&](const std::string& item) {
      return items_s == "all" || ("," + items_s + ",").find("," + item + ",") != std::string::npos;
    };
    json out;
    out["device"] = device_name(dev);
    std::printf("%-10s %-22s %10s %10s %10s %11s %10s\n", "size", "item", "median ms", "min ms",
                "max ms", "floor GB", "GB/s");
    for (const Size& s : sizes) {
      const int64_t ho = s.hw - s.k + 1;
      const double xb = double(s.n * s.cin * s.hw * s.hw) * 4, zb = double(s.n * s.cout * ho * ho) * 4;
      nn::Model model(s.cin, s.cout, s.k, s.g, 0);
      model.to(dev);
      Tensor x = Tensor::rand({s.n, s.cin, s.hw, s.hw}, 1, DType::Float32, dev);
      Tensor t = Tensor::randn({s.n, s.cout, ho, ho}, 2, DType::Float32, dev);
      json js;
      auto report = [&](const std::string& item, const Timing& tm, double floor_bytes) {
        const double gbs = floor_bytes / (tm.median * 1e-3) / 1e9;
        std::printf("%-10s %-22s %10.3f %10.3f %10.3f %11.3f %10.1f\n", s.name.c_str(), item.c_str(),
                    tm.median, tm.min, tm.max, floor_bytes / 1e9, gbs);
        std::fflush(stdout);
        js[item] = {{"median_ms", tm.median}, {"min_ms", tm.min}, {"max_ms", tm.max},
                    {"floor_bytes", floor_bytes}, {"GBps", gbs}};
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
      out["results"][s.name] = js;
    }
    if (!json_path.empty()) std::ofstream(json_path) << out.dump(2) << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tg-bench: %s\n", e.what());
    return 1;
  }
}
