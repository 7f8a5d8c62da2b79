// tg-train: trains the seed's model on an HDF5 dataset (or on a small built-in one).
//
//   tg-train                                   # built-in teacher-student data, into ./run
//   tg-train --data data.h5 --epochs 5 --batch-size 64 --lr 0.05 --momentum 0.9 --output run
//   tg-train --resume run/last.h5 --data data.h5 --output run
//   tg-train make-data --output data.h5 --samples 4096 --in-channels 8 --out-channels 32 ...
//   mpirun -np 2 tg-train --data data.h5 --batch-size 64   # data-parallel: 64 samples per rank
//
// Writes into --output: metrics.jsonl, loss.svg, last.h5 and best.h5 (lowest validation loss); the
// folder is locked while the run lasts, and a folder that holds a run already is refused unless
// --resume or --overwrite says what to do with it. The training itself is tg::train::Trainer.
// Exit codes: 0 done, 1 error (message on stderr), 2 bad arguments, 130 interrupted (Ctrl-C; the
// checkpoint last.h5 was saved first and --resume continues the run exactly; make-data leaves no
// file).
#include <CLI/CLI.hpp>

#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <memory>

#include "dist/process_group.h"
#include "io/checkpoint.h"
#include "io/synthetic.h"
#include "train/trainer.h"

using namespace tg;

namespace {

// make-data bounds: far beyond any real dataset; products of them are checked in io/ (core/size.h).
constexpr int64_t kMaxSamples = int64_t(1) << 40;
constexpr int64_t kMaxSize = int64_t(1) << 20;

std::atomic<bool> g_interrupted{false};
void on_sigint(int) { g_interrupted = true; }

// Rejects NaN and +-Inf (CLI11's range checks let NaN through).
const CLI::Validator kFinite(
    [](std::string& s) {
      try {
        size_t used = 0;
        const double v = std::stod(s, &used);
        if (used == s.size() && std::isfinite(v)) return std::string();
      } catch (const std::exception&) {
      }
      return "expected a finite number, got " + s;
    },
    "FINITE");

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tg-train: trains conv2d -> +bias -> *scale -> sigmoid -> GroupNorm with SGD"};
  app.set_version_flag("--version", "tg-train 0.1.0");
  train::TrainerConfig cfg;
  bool no_shuffle = false;
  app.add_option("--data", cfg.data, "HDF5 dataset (x: N,Cin,H,W; y: N,Cout,H-k+1,W-k+1); "
                                     "default: a built-in teacher-student set in --output");
  app.add_option("--x-name", cfg.x_name, "name of the input dataset")->capture_default_str();
  app.add_option("--y-name", cfg.y_name, "name of the target dataset")->capture_default_str();
  app.add_option("--groups", cfg.groups, "GroupNorm groups (0: 8, 4, 2 or 1, the largest dividing Cout)")
      ->check(CLI::Range(int64_t(0), train::kMaxGroups))->capture_default_str();
  app.add_option("--epochs", cfg.epochs, "epochs")
      ->check(CLI::Range(int64_t(1), train::kMaxEpochs))->capture_default_str();
  app.add_option("--steps", cfg.steps, "stop after this many optimizer steps in all (0: no limit)")
      ->check(CLI::Range(int64_t(0), train::kMaxSteps))->capture_default_str();
  app.add_option("--batch-size", cfg.batch_size, "samples per step (per rank under mpirun)")
      ->check(CLI::Range(int64_t(1), train::kMaxBatchSize))->capture_default_str();
  app.add_option("--lr", cfg.lr, "learning rate")->check(kFinite & CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--momentum", cfg.momentum, "SGD momentum")->check(kFinite & CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--dampening", cfg.dampening, "SGD dampening")->check(kFinite)->capture_default_str();
  app.add_flag("--nesterov", cfg.nesterov, "Nesterov momentum");
  app.add_option("--weight-decay", cfg.weight_decay, "L2 weight decay")->check(kFinite & CLI::NonNegativeNumber)->capture_default_str();
  app.add_flag("--no-shuffle", no_shuffle, "keep the file's order (default: shuffled per epoch from --seed)");
  app.add_option("--val-fraction", cfg.val_fraction, "fraction of samples (the file's last) held out for validation")
      ->check(kFinite & CLI::Range(0.0, train::kMaxValFraction))->capture_default_str();
  app.add_option("--device", cfg.device, "cpu, cuda or auto (cuda when a GPU is usable)")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}))->capture_default_str();
  app.add_option("--dtype", cfg.dtype, "float32 or float64")->check(CLI::IsMember({"float32", "float64"}))->capture_default_str();
  app.add_option("--seed", cfg.seed, "seed of the initialisation and the data order")->capture_default_str();
  app.add_option("--tf32", cfg.tf32, "TF32 tensor cores for cuDNN convolutions (on, like PyTorch; off: strict float32)")
      ->check(CLI::IsMember({"on", "off"}))->capture_default_str();
  app.add_flag("--deterministic", cfg.deterministic, "deterministic cuDNN algorithms only");
  app.add_option("--data-cache", cfg.data_cache,
                 "CUDA: keep the data on the GPU (device), stream it (off), or device when it fits "
                 "in half of the free memory (auto); the batches are the same in every mode")
      ->check(CLI::IsMember({"auto", "device", "off"}))->capture_default_str();
  app.add_option("--cuda-graph", cfg.cuda_graph,
                 "CUDA: run the training step as a captured CUDA graph (on), op by op (off), or as "
                 "a graph with device-resident data in one process (auto); losses and checkpoints "
                 "are the same in every mode")
      ->check(CLI::IsMember({"auto", "on", "off"}))->capture_default_str();
  auto* init = app.add_option("--init", cfg.init, "start from this checkpoint's parameters")->check(CLI::ExistingFile);
  auto* resume = app.add_option("--resume", cfg.resume, "continue this checkpoint's run exactly (parameters, momentum, step, epoch, data order)")
      ->check(CLI::ExistingFile)->excludes(init);
  app.add_flag("--overwrite", cfg.overwrite, "replace the run already in --output (its metrics, plot and checkpoints)")
      ->excludes(resume);
  app.add_option("--output", cfg.output, "output folder")->capture_default_str();
  app.add_option("--dist-timeout", cfg.dist_timeout,
                 "under mpirun: seconds a rank waits for the others before the job ends with an error")
      ->check(kFinite & CLI::Range(1e-3, train::kMaxDistTimeout))->capture_default_str();
  app.add_option("--checkpoint-format", cfg.checkpoint_format,
                 "last/best checkpoints as hdf5 (last.h5) or safetensors (last.safetensors); "
                 "--init and --resume read either")
      ->check(CLI::IsMember({"hdf5", "safetensors"}))->capture_default_str();
  app.add_option("--log-every", cfg.log_every, "log the loss every N steps")
      ->check(CLI::Range(int64_t(1), train::kMaxSteps))->capture_default_str();

  io::SyntheticOptions md;
  std::string md_out;
  auto* make_data = app.add_subcommand("make-data", "write a synthetic teacher-student dataset");
  make_data->add_option("--output", md_out, "HDF5 file to write")->required();
  make_data->add_option("--samples", md.samples, "N")->check(CLI::Range(int64_t(1), kMaxSamples))->capture_default_str();
  make_data->add_option("--in-channels", md.in_channels, "Cin")->check(CLI::Range(int64_t(1), kMaxSize))->capture_default_str();
  make_data->add_option("--out-channels", md.out_channels, "Cout")->check(CLI::Range(int64_t(1), kMaxSize))->capture_default_str();
  make_data->add_option("--height", md.height, "H")->check(CLI::Range(int64_t(1), kMaxSize))->capture_default_str();
  make_data->add_option("--width", md.width, "W")->check(CLI::Range(int64_t(1), kMaxSize))->capture_default_str();
  make_data->add_option("--kernel", md.kernel, "k")->check(CLI::Range(int64_t(1), kMaxSize))->capture_default_str();
  make_data->add_option("--groups", md.groups, "GroupNorm groups of the teacher")->check(CLI::Range(int64_t(1), kMaxSize))->capture_default_str();
  make_data->add_option("--noise", md.noise, "standard deviation of the noise added to y")->check(kFinite & CLI::NonNegativeNumber)->capture_default_str();
  make_data->add_option("--seed", md.seed, "seed of the teacher, x and the noise")->capture_default_str();
  std::string md_dtype = "float32";
  make_data->add_option("--dtype", md_dtype, "element type stored for x and y (float16, bfloat16: "
                                             "rounded to nearest even; half the bytes to read)")
      ->check(CLI::IsMember({"float32", "float16", "bfloat16"}))->capture_default_str();

  std::string convert_in, convert_out;
  auto* convert = app.add_subcommand(
      "convert", "convert a checkpoint between HDF5 and safetensors (OUT's extension decides: "
                 ".safetensors, else HDF5); parameters, optimizer and training state are kept");
  convert->add_option("IN", convert_in, "checkpoint to read (either format, detected by content)")
      ->required()->check(CLI::ExistingFile);
  convert->add_option("OUT", convert_out, "checkpoint to write (atomically)")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  std::signal(SIGINT, on_sigint);
  std::signal(SIGTERM, on_sigint);
  if (*convert) {
    try {
      io::convert_checkpoint(convert_in, convert_out);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "tg-train convert: error: %s\n", e.what());
      return 1;
    }
    std::printf("wrote %s from %s\n", convert_out.c_str(), convert_in.c_str());
    return 0;
  }
  if (*make_data) {
    md.cancel = &g_interrupted;
    md.dtype = io::parse_element_type(md_dtype);
    try {
      io::write_synthetic_dataset(md_out, md);
    } catch (const std::exception& e) {
      if (g_interrupted) {
        std::fprintf(stderr, "\ntg-train make-data: interrupted; %s not written\n", md_out.c_str());
        return 130;
      }
      std::fprintf(stderr, "\ntg-train make-data: error: %s\n", e.what());
      return 1;
    }
    std::printf("wrote %s: %lld samples, %s x (%lld, %lld, %lld), y (%lld, %lld, %lld)\n",
                md_out.c_str(), (long long)md.samples, md_dtype.c_str(), (long long)md.in_channels,
                (long long)md.height, (long long)md.width, (long long)md.out_channels,
                (long long)(md.height - md.kernel + 1), (long long)(md.width - md.kernel + 1));
    return 0;
  }
  cfg.shuffle = !no_shuffle;
  cfg.cancel = &g_interrupted;
  std::unique_ptr<train::Trainer> trainer;
  int rc = 0;
  try {
    trainer = std::make_unique<train::Trainer>(cfg);
    const train::TrainResult r = trainer->run();
    rc = r.stopped ? 130 : 0;
    if (!r.stopped && (!trainer->process_group() || trainer->process_group()->rank() == 0))
      std::printf("done: %lld steps; outputs in %s\n", (long long)r.steps, cfg.output.c_str());
  } catch (const std::exception& e) {
    rc = dynamic_cast<const train::UsageError*>(&e) ? 2 : g_interrupted ? 130 : 1;
    std::fprintf(stderr, "\ntg-train: error: %s\n", e.what());
    if (trainer && trainer->process_group()) trainer->process_group()->abort(rc);  // ends the other ranks too
  }
  trainer.reset();  // MPI_Finalize before exit
  return rc;
}
