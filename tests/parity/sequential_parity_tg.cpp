// The tapegrad side of tests/parity/sequential_parity.py: a two-block Sequential of ConvBlocks with a
// Linear head on mean-pooled features, trained 3 steps with AdamW or SGD on one batch.
//
//   tg-sequential-parity --dir D --optimizer adamw|sgd --device cpu|cuda
// writes D/manifest.txt ("name d0,d1,..." per parameter, then x and t), D/init/<name>.bin,
// D/x.bin, D/t.bin (float32, raw), then D/<optimizer>_<device>/<name>.bin after the steps and
// D/<optimizer>_<device>/losses.txt (one loss per step, before its update). Strict float32 on CUDA
// (TF32 off): the comparison is against PyTorch in float64 at 1e-5.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <sys/stat.h>
#include <vector>

#include "core/cuda_context.h"
#include "core/rng.h"
#include "nn/conv_block.h"
#include "nn/linear.h"
#include "nn/sequential.h"
#include "ops/conv2d.h"
#include "ops/mse_loss.h"
#include "ops/reduce.h"
#include "optim/adamw.h"
#include "optim/sgd.h"

using namespace tg;

namespace {

struct Net : nn::Module {
  std::shared_ptr<nn::Sequential> body;
  std::shared_ptr<nn::Linear> head;
  explicit Net(Generator& gen) {
    body = register_module("body", std::make_shared<nn::Sequential>());
    body->push_back(std::make_shared<nn::ConvBlock>(3, 8, 3, 2, gen));
    body->push_back(std::make_shared<nn::ConvBlock>(8, 8, 3, 4, gen));
    head = register_module("head", std::make_shared<nn::Linear>(8, 4, gen));
  }
  Tensor forward(const Tensor& x) const override { return head->forward(ops::mean(body->forward(x), {2, 3})); }
};

void write_raw(const std::string& path, const Tensor& t) {
  const std::vector<float> v = t.to_vector<float>();
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(v.data()), std::streamsize(v.size() * sizeof(float)));
  TG_CHECK(f.good(), "cannot write ", path);
}

std::string dims(const Shape& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) out += (i ? "," : "") + std::to_string(s[i]);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir, opt_name = "adamw", device_s = "cpu";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--dir") dir = v;
    else if (k == "--optimizer") opt_name = v;
    else if (k == "--device") device_s = v;
    else {
      std::fprintf(stderr, "tg-sequential-parity: unknown flag %s\n", k.c_str());
      return 2;
    }
  }
  if (dir.empty() || (opt_name != "adamw" && opt_name != "sgd")) {
    std::fprintf(stderr, "usage: tg-sequential-parity --dir D --optimizer adamw|sgd --device cpu|cuda\n");
    return 2;
  }
  try {
    const Device dev = parse_device(device_s);
    ops::conv::set_allow_tf32(false);
    Generator gen(5);
    Net net(gen);
    Tensor x = Tensor::rand({4, 3, 10, 10}, gen);
    Tensor t = Tensor::randn({4, 4}, gen);
    mkdir((dir + "/init").c_str(), 0755);
    std::ofstream manifest(dir + "/manifest.txt");
    for (const auto& [name, p] : net.named_parameters()) {
      manifest << name << " " << dims(p.shape()) << "\n";
      write_raw(dir + "/init/" + name + ".bin", p);
    }
    manifest << "x " << dims(x.shape()) << "\nt " << dims(t.shape()) << "\n";
    write_raw(dir + "/x.bin", x);
    write_raw(dir + "/t.bin", t);

    net.to(dev);
    x = x.to(dev);
    t = t.to(dev);
    std::unique_ptr<optim::Optimizer> opt;
    if (opt_name == "adamw") {
      optim::AdamWOptions o;
      o.lr = 1e-2;
      o.weight_decay = 0.05;
      opt = std::make_unique<optim::AdamW>(net.named_parameters(), o);
    } else {
      opt = std::make_unique<optim::SGD>(net.named_parameters(), optim::SGDOptions{0.1, 0.9, 0, true, 1e-3});
    }
    const std::string out = dir + "/" + opt_name + "_" + device_s;
    mkdir(out.c_str(), 0755);
    std::ofstream losses(out + "/losses.txt");
    for (int step = 0; step < 3; ++step) {
      opt->zero_grad();
      Tensor loss = ops::mse_loss(net.forward(x), t);
      loss.backward();
      opt->step();
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.9e\n", loss.item());
      losses << buf;
    }
    for (const auto& [name, p] : net.named_parameters()) write_raw(out + "/" + name + ".bin", p);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tg-sequential-parity: %s\n", e.what());
    return 1;
  }
}
