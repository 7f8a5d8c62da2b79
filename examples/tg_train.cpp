// tg-train: trains the seed's model on an HDF5 dataset (or on a small built-in one).
//
//   tg-train                                   # built-in teacher-student data, into ./run
//   tg-train --data data.h5 --epochs 5 --batch-size 64 --lr 0.05 --momentum 0.9 --output run
//   tg-train --resume run/last.h5 --data data.h5 --output run
//   tg-train make-data --output data.h5 --samples 4096 --in-channels 8 --out-channels 32 ...
//   mpirun -np 2 tg-train --data data.h5 --batch-size 64   # data-parallel: 64 samples per rank
//
// Writes into --output: metrics.jsonl, loss.svg, last.h5 and best.h5 (lowest validation loss).
// Exit codes: 0 done, 1 error (message on stderr), 2 bad arguments, 130 interrupted (Ctrl-C; the
// checkpoint last.h5 was saved first and --resume continues the run exactly).
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "core/autograd.h"
#include "core/cuda_context.h"
#include "dist/process_group.h"
#include "io/checkpoint.h"
#include "io/dataset.h"
#include "io/synthetic.h"
#include "nn/model.h"
#include "ops/conv2d.h"
#include "optim/sgd.h"
#include "train/report.h"

using namespace tg;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::atomic<bool> g_interrupted{false};
void on_sigint(int) { g_interrupted = true; }

// The data-parallel group when this process was started by mpirun; main() aborts the whole job
// through it after an error, so that no rank waits for this one.
std::unique_ptr<dist::ProcessGroup> g_group;

struct Config {
  std::string data, x_name = "x", y_name = "y", output = "run", device = "auto", tf32 = "on";
  std::string dtype = "float32", init, resume;
  int64_t groups = 0, epochs = 10, steps = 0, batch_size = 32, log_every = 10;
  double dist_timeout = 300;
  double lr = 0.05, momentum = 0.9, dampening = 0.0, weight_decay = 0.0, val_fraction = 0.1;
  bool nesterov = false, no_shuffle = false, deterministic = false;
  uint64_t seed = 0;

  json to_json() const {
    return json{{"data", data},         {"x_name", x_name},
                {"y_name", y_name},     {"output", output},
                {"device", device},     {"tf32", tf32},
                {"dtype", dtype},       {"groups", groups},
                {"epochs", epochs},     {"steps", steps},
                {"batch_size", batch_size}, {"log_every", log_every},
                {"lr", lr},             {"momentum", momentum},
                {"dampening", dampening}, {"weight_decay", weight_decay},
                {"val_fraction", val_fraction}, {"nesterov", nesterov},
                {"shuffle", !no_shuffle}, {"deterministic", deterministic},
                {"seed", seed}, {"dist_timeout", dist_timeout}};
  }
};

int64_t default_groups(int64_t cout) {
  for (int64_t g : {8, 4, 2, 1})
    if (cout % g == 0) return g;
  return 1;
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

class Trainer {
 public:
  explicit Trainer(Config cfg) : cfg_(std::move(cfg)), progress_(isatty(STDERR_FILENO) != 0) {}

  int run() {
    fs::create_directories(cfg_.output);
    device_ = cfg_.device == "auto" ? (cuda::is_available() ? Device::CUDA : Device::CPU)
                                    : parse_device(cfg_.device);
    TG_CHECK(device_ == Device::CPU || cuda::is_available(),
             "--device cuda, but no usable CUDA device was found");
    dtype_ = parse_dtype(cfg_.dtype);
    if (dist::launched_by_mpi()) {
      g_group = std::make_unique<dist::ProcessGroup>(device_, dist::Options{cfg_.dist_timeout});
      rank_ = g_group->rank();
      world_ = g_group->size();
      if (rank_ != 0) quiet_ = true;
    }
    ops::conv::set_allow_tf32(cfg_.tf32 == "on");
    ops::conv::set_deterministic(cfg_.deterministic);

    if (cfg_.data.empty()) {
      if (rank_ == 0) cfg_.data = builtin_dataset();
      if (g_group) {
        g_group->allreduce_max(0);  // the others wait until rank 0 has written it
        cfg_.data = (fs::path(cfg_.output) / "default-data.h5").string();
      }
    }
    io::DatasetInfo info = io::inspect_dataset(cfg_.data, cfg_.x_name, cfg_.y_name);
    build_model(info);

    std::optional<io::TrainState> state;
    if (!cfg_.resume.empty()) {
      io::Checkpoint ck = io::load_checkpoint(cfg_.resume);
      TG_CHECK(ck.state.has_value(), "--resume ", cfg_.resume,
               ": the file has no train_state group (it holds parameters only: use --init)");
      check_saved_config(*ck.state, cfg_.resume);
      model_->load_state_dict(ck.params);
      state = ck.state;
    } else if (!cfg_.init.empty()) {
      io::Checkpoint ck = io::load_checkpoint(cfg_.init);
      model_->load_state_dict(ck.params);
    }
    model_->to(device_);

    optim::SGDOptions so;
    so.lr = cfg_.lr;
    so.momentum = cfg_.momentum;
    so.dampening = cfg_.dampening;
    so.nesterov = cfg_.nesterov;
    so.weight_decay = cfg_.weight_decay;
    optim::SGD opt(model_->named_parameters(), so);

    io::DatasetReaderOptions ro;
    ro.path = cfg_.data;
    ro.x_name = cfg_.x_name;
    ro.y_name = cfg_.y_name;
    ro.batch_size = cfg_.batch_size * world_;  // the global batch; this rank reads its shard
    ro.shard_index = rank_;
    ro.shard_count = world_;
    ro.shuffle = !cfg_.no_shuffle;
    ro.seed = cfg_.seed;
    ro.val_fraction = cfg_.val_fraction;
    ro.dtype = dtype_;
    io::DatasetReader reader(ro);
    TG_CHECK(reader.num_train() >= 1, "dataset ", cfg_.data, " has ", reader.num_samples(),
             " samples: none left for training with --val-fraction ", cfg_.val_fraction);

    int64_t step = 0, epoch = 0, skip = 0;
    if (state) {
      step = state->step;
      epoch = state->epoch;
      skip = state->batch_in_epoch;
      best_val_ = state->scalars.count("best_val_loss") ? state->scalars["best_val_loss"] : INFINITY;
      optim::SGDState s;
      s.step = state->step;
      s.momentum_buffers = state->momentum_buffers;
      opt.load_state(s);
      load_history();
    } else if (rank_ == 0) {
      std::ofstream(metrics_path(), std::ios::trunc);  // a new run starts a new file
    }
    std::unique_ptr<dist::GradReducer> reducer;
    if (g_group) reducer = std::make_unique<dist::GradReducer>(*g_group, model_->parameters());
    const int64_t per_epoch = reader.num_train_batches();
    const int64_t total_steps =
        cfg_.steps > 0 ? std::min(cfg_.steps, cfg_.epochs * per_epoch) : cfg_.epochs * per_epoch;
    say("tg-train: " + (g_group ? std::to_string(world_) + " ranks; " : std::string()) +
        std::to_string(reader.num_train()) + " training and " +
                      std::to_string(reader.num_val()) + " validation samples from " + cfg_.data +
                      "; model " + std::to_string(model_->in_channels()) + " -> " +
                      std::to_string(model_->out_channels()) + " channels, kernel " +
                      std::to_string(model_->kernel_size()) + ", " +
                      std::to_string(model_->num_groups()) + " groups; " + device_name(device_) +
                      " " + dtype_name(dtype_) + "; " + std::to_string(total_steps) + " steps");

    std::signal(SIGINT, on_sigint);
    std::signal(SIGTERM, on_sigint);
    bool stopped_by_steps = false;
    double window_start = now_s();
    int64_t window_samples = 0;
    for (; epoch < cfg_.epochs && step < total_steps; ++epoch) {
      reader.start_epoch(epoch, skip);
      int64_t batch_in_epoch = skip;
      skip = 0;
      io::Batch batch;
      double epoch_loss = 0;
      int64_t epoch_logged = 0;
      while (step < total_steps && reader.next(batch)) {
        check_batch(batch);
        Tensor x = batch.x.to(device_), t = batch.y.to(device_);
        const int64_t rows = batch.x.size(0), global_rows = reader.global_batch_rows(batch.index_in_epoch);
        debug_hang(step + 1);
        Tensor loss = model_->loss(x, t);
        opt.zero_grad();
        // Each rank's loss is the mean over its shard; weighting by shard size makes the average of
        // the ranks' gradients the gradient of the whole batch's mean.
        if (reducer) reducer->prepare(double(rows) * world_ / double(global_rows));
        loss.backward();
        if (reducer) reducer->finish();
        opt.step();
        ++step;
        ++batch_in_epoch;
        window_samples += global_rows;
        if (step % cfg_.log_every == 0 || step == total_steps) {
          double l = loss.item();
          if (g_group) l = g_group->allreduce_sum(l * double(rows)) / double(global_rows);
          TG_CHECK(std::isfinite(l), "the loss became ", l, " at step ", step,
                   ": lower --lr (now ", cfg_.lr, ")");
          const double t_now = now_s();
          const double sps = window_samples / std::max(t_now - window_start, 1e-9);
          window_start = t_now;
          window_samples = 0;
          epoch_loss += l;
          ++epoch_logged;
          train_points_.push_back({double(step), l});
          if (rank_ == 0) append_metric({{"type", "step"}, {"step", step}, {"epoch", epoch}, {"loss", l},
                         {"samples_per_s", sps}, {"lr", cfg_.lr}});
          if (!quiet_) progress_.update(epoch, cfg_.epochs, step, total_steps, l, sps);
        }
        // Every rank stops at the same step: the decision is collective.
        const bool stop = g_group ? g_group->allreduce_max(g_interrupted ? 1 : 0) > 0 : bool(g_interrupted);
        if (stop) {
          say("tg-train: interrupted at step " + std::to_string(step) + "; saving " +
              (fs::path(cfg_.output) / "last.h5").string());
          save(opt, step, epoch, batch_in_epoch, "last.h5");
          write_plot();
          return 130;
        }
      }
      const bool epoch_done = batch_in_epoch >= per_epoch;
      stopped_by_steps = !epoch_done;
      const double val = validate(reader);
      json rec{{"type", "epoch"}, {"epoch", epoch}, {"step", step}, {"complete", epoch_done}};
      if (epoch_logged) rec["train_loss"] = epoch_loss / double(epoch_logged);
      if (std::isfinite(val)) {
        rec["val_loss"] = val;
        val_points_.push_back({double(step), val});
      }
      if (rank_ == 0) append_metric(rec);
      const int64_t next_epoch = epoch_done ? epoch + 1 : epoch;
      const int64_t next_batch = epoch_done ? 0 : batch_in_epoch;
      if (std::isfinite(val) && val < best_val_) {
        best_val_ = val;
        save(opt, step, next_epoch, next_batch, "best.h5");
      }
      save(opt, step, next_epoch, next_batch, "last.h5");
      write_plot();
      char line[160];
      std::snprintf(line, sizeof line, "epoch %lld done at step %lld: train loss %.6f, val loss %s",
                    (long long)epoch + 1, (long long)step,
                    epoch_logged ? epoch_loss / double(epoch_logged) : NAN,
                    std::isfinite(val) ? std::to_string(val).c_str() : "-");
      say(line);
      if (stopped_by_steps) break;
    }
    progress_.finish();
    if (rank_ == 0) std::printf("done: %lld steps; outputs in %s\n", (long long)step, cfg_.output.c_str());
    return 0;
  }

 private:
  std::string metrics_path() const { return (fs::path(cfg_.output) / "metrics.jsonl").string(); }

  std::string builtin_dataset() {
    const std::string path = (fs::path(cfg_.output) / "default-data.h5").string();
    if (!fs::exists(path)) {
      io::SyntheticOptions so;
      so.samples = 1024;
      so.in_channels = 3;
      so.out_channels = 8;
      so.height = so.width = 24;
      so.kernel = 3;
      so.groups = default_groups(so.out_channels);
      so.noise = 0.05;
      so.seed = 12345;
      say("tg-train: no --data given; writing the built-in teacher-student dataset " +
                        path + " (1024 samples, 3 -> 8 channels, 24x24, noise 0.05)");
      io::write_synthetic_dataset(path, so);
    }
    return path;
  }

  void build_model(const io::DatasetInfo& info) {
    const Shape& xs = info.x_shape;
    const Shape& ys = info.y_shape;
    const int64_t kh = xs[2] - ys[2] + 1, kw = xs[3] - ys[3] + 1;
    TG_CHECK(kh >= 1 && kh == kw, "dataset ", cfg_.data, ": x ", xs, " and y ", ys,
             " do not fit a square valid convolution (expected y = (N, Cout, H-k+1, W-k+1))");
    const int64_t cout = ys[1];
    if (cfg_.groups == 0) cfg_.groups = default_groups(cout);
    TG_CHECK(cout % cfg_.groups == 0, "--groups ", cfg_.groups, " does not divide the ", cout,
             " output channels of ", cfg_.data);
    model_ = std::make_unique<nn::Model>(xs[1], cout, kh, cfg_.groups, cfg_.seed, dtype_);
  }

  void check_saved_config(const io::TrainState& s, const std::string& path) {
    json saved = json::parse(s.config_json.empty() ? "{}" : s.config_json, nullptr, false);
    if (saved.is_discarded()) return;
    if (saved.contains("groups"))
      TG_CHECK(saved["groups"].get<int64_t>() == cfg_.groups, "--resume ", path, ": it was trained with ",
               saved["groups"].get<int64_t>(), " groups, this run has ", cfg_.groups);
    if (saved.contains("seed") && saved["seed"].get<uint64_t>() != cfg_.seed)
      progress_.message("tg-train: note: --seed " + std::to_string(cfg_.seed) +
                        " differs from the checkpoint's " + std::to_string(saved["seed"].get<uint64_t>()) +
                        ": the data order will differ from the original run");
  }

  void check_batch(const io::Batch& b) const {
    TG_CHECK(b.x.size(1) == model_->in_channels(), "batch from ", cfg_.data, ": x has ",
             b.x.size(1), " channels, the model expects ", model_->in_channels());
  }

  // Only rank 0 evaluates (the others go on and wait for it at the next all-reduce).
  double validate(io::DatasetReader& reader) {
    if (reader.num_val() == 0 || rank_ != 0) return NAN;
    autograd::NoGradGuard no_grad;
    reader.start_val();
    io::Batch b;
    double sum = 0;
    int64_t n = 0;
    while (reader.next_val(b)) {
      Tensor l = model_->loss(b.x.to(device_), b.y.to(device_));
      sum += l.item() * double(b.x.size(0));
      n += b.x.size(0);
    }
    return n ? sum / double(n) : NAN;
  }

  // Rank 0 alone writes checkpoints (atomically: a temporary file renamed over the old one).
  void save(const optim::SGD& opt, int64_t step, int64_t epoch, int64_t batch_in_epoch,
            const std::string& name) {
    if (rank_ != 0) return;
    io::TrainState s;
    s.step = step;
    s.epoch = epoch;
    s.batch_in_epoch = batch_in_epoch;
    s.seed = cfg_.seed;
    s.config_json = cfg_.to_json().dump();
    s.momentum_buffers = opt.state().momentum_buffers;
    s.scalars["best_val_loss"] = best_val_;
    s.scalars["lr"] = cfg_.lr;
    io::save_checkpoint((fs::path(cfg_.output) / name).string(), model_->named_parameters(), &s);
  }

  void say(const std::string& line) {
    if (!quiet_) progress_.message(line);
  }

  // Test hook for the hang test: TG_DEBUG_HANG_RANK=r TG_DEBUG_HANG_STEP=s makes rank r stop
  // responding before step s, as a stuck process would.
  void debug_hang(int64_t step) const {
    const char* r = std::getenv("TG_DEBUG_HANG_RANK");
    const char* s = std::getenv("TG_DEBUG_HANG_STEP");
    if (r && s && std::atoi(r) == rank_ && std::atoll(s) == step)
      for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
  }

  void append_metric(const json& rec) {
    std::ofstream f(metrics_path(), std::ios::app);
    f << rec.dump() << "\n";
  }

  // On --resume: the plot continues from the records already in metrics.jsonl.
  void load_history() {
    std::ifstream f(metrics_path());
    std::string line;
    while (std::getline(f, line)) {
      json r = json::parse(line, nullptr, false);
      if (r.is_discarded()) continue;
      if (r.value("type", "") == "step") train_points_.push_back({r["step"].get<double>(), r["loss"].get<double>()});
      if (r.value("type", "") == "epoch" && r.contains("val_loss"))
        val_points_.push_back({r["step"].get<double>(), r["val_loss"].get<double>()});
    }
  }

  void write_plot() {
    if (rank_ != 0) return;
    train::write_loss_svg((fs::path(cfg_.output) / "loss.svg").string(), train_points_, val_points_);
  }

  Config cfg_;
  train::Progress progress_;
  Device device_ = Device::CPU;
  DType dtype_ = DType::Float32;
  std::unique_ptr<nn::Model> model_;
  double best_val_ = INFINITY;
  int rank_ = 0, world_ = 1;
  bool quiet_ = false;
  std::vector<train::LossPoint> train_points_, val_points_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tg-train: trains conv2d -> +bias -> *scale -> sigmoid -> GroupNorm with SGD"};
  app.set_version_flag("--version", "tg-train 0.1.0");
  Config cfg;
  app.add_option("--data", cfg.data, "HDF5 dataset (x: N,Cin,H,W; y: N,Cout,H-k+1,W-k+1); "
                                     "default: a built-in teacher-student set in --output");
  app.add_option("--x-name", cfg.x_name, "name of the input dataset")->capture_default_str();
  app.add_option("--y-name", cfg.y_name, "name of the target dataset")->capture_default_str();
  app.add_option("--groups", cfg.groups, "GroupNorm groups (0: 8, 4, 2 or 1, the largest dividing Cout)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--epochs", cfg.epochs, "epochs")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--steps", cfg.steps, "stop after this many optimizer steps in all (0: no limit)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--batch-size", cfg.batch_size, "samples per step")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--lr", cfg.lr, "learning rate")->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--momentum", cfg.momentum, "SGD momentum")->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--dampening", cfg.dampening, "SGD dampening")->capture_default_str();
  app.add_flag("--nesterov", cfg.nesterov, "Nesterov momentum");
  app.add_option("--weight-decay", cfg.weight_decay, "L2 weight decay")->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_flag("--no-shuffle", cfg.no_shuffle, "keep the file's order (default: shuffled per epoch from --seed)");
  app.add_option("--val-fraction", cfg.val_fraction, "fraction of samples (the file's last) held out for validation")
      ->check(CLI::Range(0.0, 0.9))->capture_default_str();
  app.add_option("--device", cfg.device, "cpu, cuda or auto (cuda when a GPU is usable)")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}))->capture_default_str();
  app.add_option("--dtype", cfg.dtype, "float32 or float64")->check(CLI::IsMember({"float32", "float64"}))->capture_default_str();
  app.add_option("--seed", cfg.seed, "seed of the initialisation and the data order")->capture_default_str();
  app.add_option("--tf32", cfg.tf32, "TF32 tensor cores for cuDNN convolutions (on, like PyTorch; off: strict float32)")
      ->check(CLI::IsMember({"on", "off"}))->capture_default_str();
  app.add_flag("--deterministic", cfg.deterministic, "deterministic cuDNN algorithms only");
  auto* init = app.add_option("--init", cfg.init, "start from this checkpoint's parameters")->check(CLI::ExistingFile);
  app.add_option("--resume", cfg.resume, "continue this checkpoint's run exactly (parameters, momentum, step, epoch, data order)")
      ->check(CLI::ExistingFile)->excludes(init);
  app.add_option("--output", cfg.output, "output folder")->capture_default_str();
  app.add_option("--dist-timeout", cfg.dist_timeout,
                 "under mpirun: seconds a rank waits for the others before the job ends with an error")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--log-every", cfg.log_every, "log the loss every N steps")->check(CLI::PositiveNumber)->capture_default_str();

  io::SyntheticOptions md;
  std::string md_out;
  auto* make_data = app.add_subcommand("make-data", "write a synthetic teacher-student dataset");
  make_data->add_option("--output", md_out, "HDF5 file to write")->required();
  make_data->add_option("--samples", md.samples, "N")->check(CLI::PositiveNumber)->capture_default_str();
  make_data->add_option("--in-channels", md.in_channels, "Cin")->check(CLI::PositiveNumber)->capture_default_str();
  make_data->add_option("--out-channels", md.out_channels, "Cout")->check(CLI::PositiveNumber)->capture_default_str();
  make_data->add_option("--height", md.height, "H")->check(CLI::PositiveNumber)->capture_default_str();
  make_data->add_option("--width", md.width, "W")->check(CLI::PositiveNumber)->capture_default_str();
  make_data->add_option("--kernel", md.kernel, "k")->check(CLI::PositiveNumber)->capture_default_str();
  make_data->add_option("--groups", md.groups, "GroupNorm groups of the teacher")->check(CLI::PositiveNumber)->capture_default_str();
  make_data->add_option("--noise", md.noise, "standard deviation of the noise added to y")->check(CLI::NonNegativeNumber)->capture_default_str();
  make_data->add_option("--seed", md.seed, "seed of the teacher, x and the noise")->capture_default_str();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  try {
    if (*make_data) {
      io::write_synthetic_dataset(md_out, md);
      std::printf("wrote %s: %lld samples, x (%lld, %lld, %lld), y (%lld, %lld, %lld)\n", md_out.c_str(),
                  (long long)md.samples, (long long)md.in_channels, (long long)md.height,
                  (long long)md.width, (long long)md.out_channels,
                  (long long)(md.height - md.kernel + 1), (long long)(md.width - md.kernel + 1));
      return 0;
    }
    const int rc = Trainer(cfg).run();
    g_group.reset();  // MPI_Finalize before exit
    return rc;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\ntg-train: error: %s\n", e.what());
    if (g_group) g_group->abort(1);  // ends the other ranks too
    return 1;
  }
}
