// The Trainer's checkpoints: what goes into last.h5 / best.h5 besides the parameters, the checks
// that keep a non-finite model out of them, and everything --resume and --init verify before a
// single step runs.
//
// Saved: the parameters, train_state {step, epoch, batch_in_epoch, seed}, the momentum buffers,
// the run's configuration as JSON (TrainerConfig's settings plus world_size and num_samples), and
// scalars best_val_loss, lr, epoch_loss_sum and epoch_loss_count (the part of the epoch's mean
// train loss already run, so that a resumed epoch reports the same mean).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "../io/checkpoint.h"
#include "../optim/sgd.h"
#include "config.h"

namespace tg::train {

/// Where a run stands: the point a checkpoint resumes from.
struct ResumePoint {
  int64_t step = 0;            ///< optimizer steps taken
  int64_t epoch = 0;           ///< the epoch to continue
  int64_t batch_in_epoch = 0;  ///< its batches already run
  double best_val_loss = HUGE_VAL;
  double epoch_loss_sum = 0;  ///< sum of the epoch's step losses so far
  int64_t epoch_loss_count = 0;
};

/// Facts of this run that a resumed checkpoint must agree with.
struct RunFacts {
  int world_size = 1;
  int64_t num_samples = 0;        ///< samples in the data file
  int64_t batches_per_epoch = 0;  ///< training batches per epoch (global batches)
};

/// The configuration saved with every checkpoint (cfg as resolved: data path, groups).
std::string saved_config_json(const TrainerConfig& cfg, const RunFacts& facts);

/// Writes path atomically after copying every parameter and momentum buffer to the host and
/// checking that each is finite; a non-finite one is a tg::Error naming it (and the step), and then
/// nothing is written: the previous file at path stays as it was.
void save_training_checkpoint(const std::string& path, const io::NamedTensors& params,
                              const optim::SGDState& optimizer, const ResumePoint& point,
                              const TrainerConfig& cfg, const RunFacts& facts);

/// What --resume restores.
struct ResumeState {
  io::NamedTensors params;
  optim::SGDState optimizer;
  ResumePoint point;
};

/// Reads a checkpoint for --resume and checks it against this run:
///  - it has a train_state and a configuration that parses (else tg::Error);
///  - every setting that decides the data order or the model (data file and its sample count,
///    x/y names, batch size, validation fraction, shuffle, seed, dtype, groups, world size) equals
///    this run's (else UsageError naming the setting, both values and what to do);
///  - the parameters are all finite; with momentum, after step 0, every
///    parameter has a finite momentum buffer (else tg::Error suggesting --init);
///  - step, epoch and batch_in_epoch agree with facts.batches_per_epoch; best_val_loss is not NaN.
ResumeState load_resume_checkpoint(const std::string& path, const TrainerConfig& cfg,
                                   const RunFacts& facts,
                                   const std::vector<std::string>& param_names);

/// The parameters of a checkpoint for --init, all finite (tg::Error naming the first that is not).
/// param_names (the model's) say which to read; nn::Module::load_state_dict checks names and
/// shapes.
io::NamedTensors load_init_parameters(const std::string& path,
                                      const std::vector<std::string>& param_names);

/// Throws tg::Error "<what> has a non-finite value (<v> at element <i>)" when t holds NaN or Inf.
void check_finite(const Tensor& t, const std::string& what);

}  // namespace tg::train
