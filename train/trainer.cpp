#include "trainer.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <thread>

#include "../core/autograd.h"
#include "../core/cuda_context.h"
#include "../core/size.h"
#include "../dist/process_group.h"
#include "../io/dataset.h"
#include "../io/synthetic.h"
#include "../nn/model.h"
#include "../ops/conv2d.h"
#include "../optim/sgd.h"
#include "batch_source.h"
#include "captured_step.h"
#include "checkpointing.h"
#include "loss_monitor.h"
#include "loss_plot.h"
#include "metrics.h"
#include "progress.h"
#include "run_dir.h"

namespace tg::train {

namespace fs = std::filesystem;

namespace {

int64_t default_groups(int64_t cout) {
  for (int64_t g : {8, 4, 2, 1})
    if (cout % g == 0) return g;
  return 1;
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

// Test hook of the hang test: TG_DEBUG_HANG_RANK=r TG_DEBUG_HANG_STEP=s makes rank r stop
// responding before step s, as a stuck process would.
void debug_hang(int rank, int64_t step) {
  const char* r = std::getenv("TG_DEBUG_HANG_RANK");
  const char* s = std::getenv("TG_DEBUG_HANG_STEP");
  if (r && s && std::atoi(r) == rank && std::atoll(s) == step)
    for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
}

}  // namespace

struct Trainer::Impl {
  explicit Impl(TrainerConfig c) : cfg(std::move(c)), progress(isatty(STDERR_FILENO) != 0) {}

  TrainResult run();

  // Runs f on rank 0; under mpirun every rank learns whether it failed (and then throws too).
  template <typename F>
  void on_rank0(const char* what, F&& f);
  void open_output();
  void make_builtin_data();
  void build_model(const io::DatasetInfo& info);
  void open_metrics(bool resumed);
  /// Reads the loss monitor, throws when any rank saw a non-finite loss, and returns the epoch's
  /// loss sum over all ranks (collective under mpirun).
  LossMonitor::Snapshot checked_losses(const LossMonitor& monitor);
  double validate(const io::DatasetReader& reader, BatchSource& source);
  void save(const optim::SGD& opt, const std::string& name);
  void write_plot();
  void say(const std::string& line) {
    if (!quiet) progress.message(line);
  }

  TrainerConfig cfg;
  std::vector<std::function<void(const StepInfo&)>> step_callbacks;
  std::vector<std::function<void(const EpochInfo&)>> epoch_callbacks;
  std::atomic<bool> stop_requested{false};
  bool ran = false;

  Progress progress;
  Device device = Device::CPU;
  DType dtype = DType::Float32;
  std::unique_ptr<dist::ProcessGroup> group;
  int rank = 0, world = 1;
  bool quiet = false;
  std::unique_ptr<RunDir> run_dir;      // rank 0
  std::unique_ptr<MetricsLog> metrics;  // rank 0
  std::unique_ptr<nn::Model> model;
  RunFacts facts;
  ResumePoint point;  // where the run stands; what a save writes
  int64_t last_saved_step = -1;
  std::vector<LossPoint> train_points, val_points;
};

template <typename F>
void Trainer::Impl::on_rank0(const char* what, F&& f) {
  std::exception_ptr err;
  if (rank == 0) {
    try {
      f();
    } catch (...) {
      err = std::current_exception();
    }
  }
  if (group && group->allreduce_max(err ? 1.0 : 0.0) > 0 && !err)
    TG_THROW("rank 0 failed while ", what, " (its message says why)");
  if (err) std::rethrow_exception(err);
}

void Trainer::Impl::open_output() {
  run_dir = std::make_unique<RunDir>(cfg.output);
  if (!run_dir->removed_temporaries().empty())
    say("tg-train: removed " + std::to_string(run_dir->removed_temporaries().size()) +
        " temporary file(s) of ended processes from " + cfg.output + ": " +
        join(run_dir->removed_temporaries()));
  const std::vector<std::string> existing = run_dir->existing_outputs();
  if (cfg.resume.empty() && !existing.empty() && !cfg.overwrite) {
    const std::string last = run_dir->file(cfg.checkpoint_name("last"));
    throw UsageError("--output " + cfg.output + " already holds a run (" + join(existing) +
                     "); nothing was changed. Pass --resume " +
                     (fs::exists(last) ? last : std::string("<its checkpoint>")) +
                     " to continue it, --overwrite to replace it, or choose another --output");
  }
  if (!cfg.resume.empty() && !existing.empty()) {
    std::error_code ec;
    const fs::path home = fs::path(cfg.resume).parent_path();
    if (!fs::equivalent(home.empty() ? fs::path(".") : home, cfg.output, ec))
      throw UsageError("--output " + cfg.output + " already holds a run (" + join(existing) +
                       ") and --resume " + cfg.resume +
                       " is not one of its checkpoints; nothing was changed. Resume into the "
                       "checkpoint's own folder (--output " +
                       (home.empty() ? std::string(".") : home.string()) +
                       ") or choose another --output");
  }
  if (cfg.resume.empty() && cfg.overwrite) return;  // replaced once everything else checks out
  run_dir->check_outputs_are_files();
}

void Trainer::Impl::make_builtin_data() {
  if (fs::exists(cfg.data)) return;
  io::SyntheticOptions so;
  so.samples = 1024;
  so.in_channels = 3;
  so.out_channels = 8;
  so.height = so.width = 24;
  so.kernel = 3;
  so.groups = default_groups(so.out_channels);
  so.noise = 0.05;
  so.seed = 12345;
  so.cancel = cfg.cancel;
  say("tg-train: no --data given; writing the built-in teacher-student dataset " + cfg.data +
      " (1024 samples, 3 -> 8 channels, 24x24, noise 0.05)");
  io::write_synthetic_dataset(cfg.data, so);
}

void Trainer::Impl::build_model(const io::DatasetInfo& info) {
  const Shape& xs = info.x_shape;
  const Shape& ys = info.y_shape;
  const int64_t kh = xs[2] - ys[2] + 1, kw = xs[3] - ys[3] + 1;
  TG_CHECK(kh >= 1 && kh == kw, "dataset ", cfg.data, ": x ", xs, " and y ", ys,
           " do not fit a square valid convolution (expected y = (N, Cout, H-k+1, W-k+1))");
  const int64_t cout = ys[1];
  if (cfg.groups == 0) cfg.groups = default_groups(cout);
  TG_CHECK(cout % cfg.groups == 0, "--groups ", cfg.groups, " does not divide the ", cout,
           " output channels of ", cfg.data);
  model = std::make_unique<nn::Model>(xs[1], cout, kh, cfg.groups, cfg.seed, dtype);
}

void Trainer::Impl::open_metrics(bool resumed) {
  const std::string path = run_dir->file("metrics.jsonl");
  if (resumed) {
    MetricsHistory h = truncate_metrics(path, point.step);
    if (h.dropped > 0)
      say("tg-train: cut " + std::to_string(h.dropped) + " record(s) after step " +
          std::to_string(point.step) + " from " + path + " (the resumed run redoes them)");
    train_points = std::move(h.train);
    val_points = std::move(h.val);
  } else if (cfg.overwrite) {
    const std::vector<std::string> old = run_dir->existing_outputs();
    run_dir->remove_outputs();
    if (!old.empty()) say("tg-train: --overwrite: removed the previous run's " + join(old));
  }
  metrics = std::make_unique<MetricsLog>(path);
}

LossMonitor::Snapshot Trainer::Impl::checked_losses(const LossMonitor& monitor) {
  LossMonitor::Snapshot s = monitor.read();
  int64_t first = s.first_nonfinite_step;
  if (group) {
    const double m = group->allreduce_max(first > 0 ? -double(first) : -HUGE_VAL);
    first = std::isfinite(m) ? int64_t(-m) : 0;
    s.sum = group->allreduce_sum(s.sum);
  }
  if (first > 0) {
    const std::string value = s.first_nonfinite_step == first
                                  ? std::to_string(s.first_nonfinite_loss)
                                  : std::string("on another rank");
    TG_THROW("the training loss became non-finite (", value, ") at step ", first,
             ": lower --lr (now ", cfg.lr, "). No checkpoint was written after that step",
             last_saved_step >= 0
                 ? "; the last one saved holds step " + std::to_string(last_saved_step)
                 : std::string());
  }
  return s;
}

// Only rank 0 evaluates (the others go on and wait for it at the next all-reduce).
double Trainer::Impl::validate(const io::DatasetReader& reader, BatchSource& source) {
  if (reader.num_val() == 0 || rank != 0) return NAN;
  autograd::NoGradGuard no_grad;
  source.start_val();
  io::Batch b;
  double sum = 0;
  int64_t n = 0;
  while (source.next_val(b)) {
    Tensor l = model->loss(b.x.to(device), b.y.to(device));
    sum += l.item() * double(b.x.size(0));
    n += b.x.size(0);
  }
  const double val = n ? sum / double(n) : NAN;
  TG_CHECK(std::isfinite(val), "the validation loss became non-finite (", val, ") at step ",
           point.step, ": lower --lr (now ", cfg.lr, "). No checkpoint was written at that step");
  return val;
}

// Rank 0 alone writes checkpoints (atomically: a temporary file renamed over the old one).
void Trainer::Impl::save(const optim::SGD& opt, const std::string& name) {
  if (rank != 0) return;
  save_training_checkpoint(run_dir->file(name), model->named_parameters(), opt.state(), point, cfg,
                           facts);
  last_saved_step = point.step;
}

void Trainer::Impl::write_plot() {
  if (rank == 0) write_loss_svg(run_dir->file("loss.svg"), train_points, val_points);
}

TrainResult Trainer::Impl::run() {
  TG_CHECK(!ran, "Trainer::run: a Trainer runs once; make a new one for another run");
  ran = true;
  cfg.validate();
  device = cfg.device == "auto" ? (cuda::is_available() ? Device::CUDA : Device::CPU)
                                : parse_device(cfg.device);
  TG_CHECK(device == Device::CPU || cuda::is_available(),
           "--device cuda, but no usable CUDA device was found");
  dtype = parse_dtype(cfg.dtype);
  if (dist::launched_by_mpi()) {
    group = std::make_unique<dist::ProcessGroup>(device, dist::Options{cfg.dist_timeout});
    rank = group->rank();
    world = group->size();
  }
  quiet = !cfg.verbose || rank != 0;
  // A --cuda-graph on that cannot be is refused before anything is written.
  resolve_cuda_graph(cfg.cuda_graph, device, group != nullptr, true);
  ops::conv::set_allow_tf32(cfg.tf32 == "on");
  ops::conv::set_deterministic(cfg.deterministic);

  on_rank0("opening the output folder", [&] { open_output(); });
  if (cfg.data.empty()) {
    cfg.data = (fs::path(cfg.output) / "default-data.h5").string();
    on_rank0("writing the built-in dataset", [&] { make_builtin_data(); });
  }
  const io::DatasetInfo info = io::inspect_dataset(cfg.data, cfg.x_name, cfg.y_name);
  build_model(info);

  io::DatasetReaderOptions ro;
  ro.path = cfg.data;
  ro.x_name = cfg.x_name;
  ro.y_name = cfg.y_name;
  ro.batch_size = checked_mul(cfg.batch_size, world, "the global batch (--batch-size x ranks)");
  ro.shard_index = rank;  // the global batch; this rank reads its shard
  ro.shard_count = world;
  ro.shuffle = cfg.shuffle;
  ro.seed = cfg.seed;
  ro.val_fraction = cfg.val_fraction;
  ro.dtype = dtype;
  // Streaming to a GPU is bound by how fast the reader fills pinned buffers from the page cache
  // (about 2 GB/s a thread): give it every core (measured in bench/NOTES.md).
  if (device == Device::CUDA)
    ro.io_threads = int(std::clamp(std::thread::hardware_concurrency(), 8u, 32u));
  io::DatasetReader reader(ro);
  TG_CHECK(reader.num_train() >= 1 && reader.num_train_batches() >= 1, "dataset ", cfg.data,
           " has ", reader.num_samples(), " samples: none left for training with --val-fraction ",
           cfg.val_fraction, (world > 1 ? " on every rank" : ""));
  facts = {world, reader.num_samples(), reader.num_train_batches()};
  const int64_t per_epoch = facts.batches_per_epoch;

  std::vector<std::string> names;
  for (const auto& np : model->named_parameters()) names.push_back(np.first);
  optim::SGDState resumed_state;
  const bool resumed = !cfg.resume.empty();
  auto load_params = [&](const io::NamedTensors& params, const std::string& flag,
                         const std::string& path) {
    try {
      model->load_state_dict(params);
    } catch (const Error& e) {
      throw Error(flag + " " + path + ": " + e.what());
    }
  };
  if (resumed) {
    ResumeState rs = load_resume_checkpoint(cfg.resume, cfg, facts, names);
    load_params(rs.params, "--resume", cfg.resume);
    point = rs.point;
    resumed_state = std::move(rs.optimizer);
  } else if (!cfg.init.empty()) {
    load_params(load_init_parameters(cfg.init, names), "--init", cfg.init);
  }
  model->to(device);
  optim::SGDOptions so;
  so.lr = cfg.lr;
  so.momentum = cfg.momentum;
  so.dampening = cfg.dampening;
  so.nesterov = cfg.nesterov;
  so.weight_decay = cfg.weight_decay;
  optim::SGD opt(model->named_parameters(), so);
  if (resumed) opt.load_state(resumed_state);
  on_rank0("opening the metrics log", [&] { open_metrics(resumed); });

  // The batches, on the training device: the reader's (CPU), streamed, or from a device cache. The
  // step's own memory is about twice a batch (x, target and the block's saved z); three for margin.
  BatchSourceOptions bo;
  bo.cache = parse_data_cache(cfg.data_cache);
  // A sample's bytes in the training dtype (the cache may hold half-width data: not that size).
  const int64_t n = std::max<int64_t>(1, info.num_samples());
  const int64_t sample_bytes = checked_mul(
      checked_add(checked_numel(info.x_shape) / n, checked_numel(info.y_shape) / n, "a sample's elements"),
      int64_t(dtype_size(dtype)), "a sample's bytes");
  bo.step_bytes = size_t(checked_mul(3 * std::min(ro.batch_size, reader.num_samples()), sample_bytes,
                                     "a step's memory"));
  const double load_start = now_s();
  std::unique_ptr<BatchSource> source = make_batch_source(reader, device, bo);
  if (source->device_resident())
    say("tg-train: data on the GPU: " + source->describe() + ", loaded in " +
        std::to_string(now_s() - load_start) + " s");

  // The step as a CUDA graph (train/captured_step.h): forward, loss and backward on static input
  // buffers of a full batch, the optimizer after it. Other batches (an uneven last one) run eagerly.
  std::unique_ptr<CapturedStep> captured;
  if (resolve_cuda_graph(cfg.cuda_graph, device, group != nullptr, source->device_resident())) {
    Shape xs = info.x_shape, ys = info.y_shape;
    xs[0] = ys[0] = cfg.batch_size;
    captured = std::make_unique<CapturedStep>(
        std::vector<Tensor>{Tensor::empty(xs, dtype, device), Tensor::empty(ys, dtype, device)},
        [this, &opt](const std::vector<Tensor>& in) {
          Tensor loss = model->loss(in[0], in[1]);
          opt.zero_grad();
          loss.backward();
          return loss;
        },
        &opt, model->parameters());
    source->gather_into(captured->static_inputs());  // full batches land where the graph reads
    say("tg-train: the training step runs as a CUDA graph (--cuda-graph " + cfg.cuda_graph +
        "; off runs it op by op)");
  }

  // min(--steps, --epochs x batches per epoch), without forming a product that cannot exist
  int64_t total_steps = 0;
  if (cfg.steps > 0 && cfg.epochs > cfg.steps / per_epoch) {
    total_steps = cfg.steps;
  } else if (cfg.steps > 0) {
    total_steps = cfg.epochs * per_epoch;  // <= steps
  } else {
    total_steps =
        checked_mul(cfg.epochs, per_epoch, "the run's steps (--epochs x batches per epoch)");
  }
  std::unique_ptr<dist::GradReducer> reducer;
  if (group) reducer = std::make_unique<dist::GradReducer>(*group, model->parameters());
  say("tg-train: " + (group ? std::to_string(world) + " ranks; " : std::string()) +
      std::to_string(reader.num_train()) + " training and " + std::to_string(reader.num_val()) +
      " validation samples from " + cfg.data + "; model " + std::to_string(model->in_channels()) +
      " -> " + std::to_string(model->out_channels()) + " channels, kernel " +
      std::to_string(model->kernel_size()) + ", " + std::to_string(model->num_groups()) +
      " groups; " + device_name(device) + " " + dtype_name(dtype) + "; " +
      std::to_string(total_steps) + " steps; batches: " + source->describe());
  if (!source->device_resident())
    say("tg-train: reading " + reader.direct_info());  // direct pread()s, or through HDF5 and why
  if (resumed && (point.step >= total_steps || point.epoch >= cfg.epochs))
    say("tg-train: " + cfg.resume + " is at step " + std::to_string(point.step) + " (epoch " +
        std::to_string(point.epoch + 1) + "): nothing is left to do with --epochs " +
        std::to_string(cfg.epochs) + (cfg.steps ? " --steps " + std::to_string(cfg.steps) : "") +
        "; raise them to train further");

  // Under mpirun each rank sums its share of the step losses; rank 0 saved the total.
  LossMonitor monitor(device);
  if (rank == 0) monitor.reset_epoch(point.epoch_loss_sum, point.epoch_loss_count);
  if (rank != 0) monitor.reset_epoch(0, point.epoch_loss_count);

  TrainResult result;
  int64_t step = point.step, epoch = point.epoch, skip = point.batch_in_epoch;
  double window_start = now_s();
  int64_t window_samples = 0;
  for (; epoch < cfg.epochs && step < total_steps; ++epoch) {
    source->start_epoch(epoch, skip);
    const double epoch_start = now_s();
    int64_t epoch_samples = 0;
    int64_t batch_in_epoch = skip;
    skip = 0;
    io::Batch batch;
    while (step < total_steps && source->next(batch)) {
      TG_CHECK(batch.x.size(1) == model->in_channels(), "batch from ", cfg.data, ": x has ",
               batch.x.size(1), " channels, the model expects ", model->in_channels());
      Tensor x = batch.x.to(device), t = batch.y.to(device);
      const int64_t rows = batch.x.size(0);
      const int64_t global_rows = reader.global_batch_rows(batch.index_in_epoch);
      debug_hang(rank, step + 1);
      Tensor loss;
      if (captured) {
        loss = captured->run({x, t});  // the same ops as below, in the same order
      } else {
        loss = model->loss(x, t);
        opt.zero_grad();
        // Each rank's loss is the mean over its shard; weighting by shard size makes the average
        // of the ranks' gradients the gradient of the whole batch's mean.
        if (reducer) reducer->prepare(double(rows) * world / double(global_rows));
        loss.backward();
        if (reducer) reducer->finish();
        opt.step();
      }
      ++step;
      ++batch_in_epoch;
      window_samples += global_rows;
      epoch_samples += global_rows;
      monitor.record(loss, step, double(rows) / double(global_rows));

      StepInfo info;
      info.step = step;
      info.epoch = epoch;
      info.batch_in_epoch = batch_in_epoch;
      info.total_steps = total_steps;
      // A replayed step's loss is the graph's buffer, which the next step overwrites.
      info.loss = captured && !step_callbacks.empty() ? loss.clone() : loss;
      if (step % cfg.log_every == 0 || step == total_steps) {
        double l = loss.item();
        if (group) l = group->allreduce_sum(l * double(rows)) / double(global_rows);
        checked_losses(monitor);
        const double t_now = now_s();
        const double sps = double(window_samples) / std::max(t_now - window_start, 1e-9);
        window_start = t_now;
        window_samples = 0;
        train_points.push_back({double(step), l});
        if (rank == 0) metrics->step(step, epoch, l, sps, cfg.lr);
        if (!quiet) progress.update(epoch, cfg.epochs, step, total_steps, l, sps);
        info.logged = true;
        info.loss_value = l;
        info.samples_per_s = sps;
      }
      for (const auto& cb : step_callbacks) cb(info);
      // Every rank stops at the same step: the decision is collective.
      const bool stop_here = stop_requested || (cfg.cancel != nullptr && cfg.cancel->load());
      const bool stop = group ? group->allreduce_max(stop_here ? 1.0 : 0.0) > 0 : stop_here;
      if (stop) {
        const LossMonitor::Snapshot s = checked_losses(monitor);
        point.step = step;
        point.epoch = epoch;
        point.batch_in_epoch = batch_in_epoch;
        point.epoch_loss_sum = s.sum;
        point.epoch_loss_count = s.count;
        say("tg-train: stopped at step " + std::to_string(step) + "; saving " +
            run_dir->file(cfg.checkpoint_name("last")));
        save(opt, cfg.checkpoint_name("last"));
        write_plot();
        progress.finish();
        result.steps = step;
        result.epochs_completed = epoch;
        result.stopped = true;
        result.best_val_loss = point.best_val_loss;
        return result;
      }
    }
    const bool epoch_done = batch_in_epoch >= per_epoch;
    const LossMonitor::Snapshot s = checked_losses(monitor);  // waits for the epoch's steps
    const double epoch_rate = double(epoch_samples) / std::max(now_s() - epoch_start, 1e-9);
    const double train_loss = s.count > 0 ? s.sum / double(s.count) : NAN;
    point.step = step;
    const double val = validate(reader, *source);
    const size_t gpu_peak = device == Device::CUDA ? cuda::memory_stats().peak_bytes : 0;
    if (rank == 0)
      metrics->epoch(epoch, step, epoch_done, train_loss, val, epoch_rate, gpu_peak,
                     source->device_bytes());
    if (std::isfinite(val)) val_points.push_back({double(step), val});
    // The point to continue from: the next epoch, or the rest of this one (steps limit).
    point.epoch = epoch_done ? epoch + 1 : epoch;
    point.batch_in_epoch = epoch_done ? 0 : batch_in_epoch;
    point.epoch_loss_sum = epoch_done ? 0 : s.sum;
    point.epoch_loss_count = epoch_done ? 0 : s.count;
    if (std::isfinite(val) && val < point.best_val_loss) {
      point.best_val_loss = val;
      save(opt, cfg.checkpoint_name("best"));
    }
    save(opt, cfg.checkpoint_name("last"));
    write_plot();
    char line[200];
    std::snprintf(line, sizeof line, "epoch %lld done at step %lld: train loss %.6f, val loss %s",
                  (long long)epoch + 1, (long long)step, train_loss,
                  std::isfinite(val) ? std::to_string(val).c_str() : "-");
    say(line);
    EpochInfo ei;
    ei.epoch = epoch;
    ei.step = step;
    ei.complete = epoch_done;
    ei.train_loss = train_loss;
    ei.val_loss = val;
    for (const auto& cb : epoch_callbacks) cb(ei);
    monitor.reset_epoch();
    if (!epoch_done) break;
  }
  progress.finish();
  result.steps = step;
  result.epochs_completed = point.epoch;
  result.best_val_loss = point.best_val_loss;
  return result;
}

Trainer::Trainer(TrainerConfig config) : impl_(std::make_unique<Impl>(std::move(config))) {
  impl_->cfg.validate();
}

Trainer::~Trainer() = default;

void Trainer::on_step(std::function<void(const StepInfo&)> callback) {
  impl_->step_callbacks.push_back(std::move(callback));
}

void Trainer::on_epoch(std::function<void(const EpochInfo&)> callback) {
  impl_->epoch_callbacks.push_back(std::move(callback));
}

void Trainer::request_stop() { impl_->stop_requested = true; }

TrainResult Trainer::run() { return impl_->run(); }

const TrainerConfig& Trainer::config() const { return impl_->cfg; }

const nn::Model& Trainer::model() const {
  TG_CHECK(impl_->model != nullptr, "Trainer::model: the model is built by run()");
  return *impl_->model;
}

dist::ProcessGroup* Trainer::process_group() const { return impl_->group.get(); }

}  // namespace tg::train
