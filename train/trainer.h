// The Trainer: trains the seed's model (nn::Model) with SGD on an HDF5 dataset, as tg-train does,
// from a library call. It owns the whole run: the output folder (locked; an existing run is
// refused unless resume or overwrite), the built-in data when none is given, the loop, validation
// each epoch, checkpoints (last.h5 each epoch and on a stop, best.h5 at the lowest validation loss;
// atomic, never non-finite), exact resume, metrics.jsonl, loss.svg, the progress line, and under
// mpirun the data-parallel glue (dist::ProcessGroup, GradReducer: rank 0 writes, all ranks train).
//
//   tg::train::TrainerConfig cfg;
//   cfg.data = "data.h5";
//   cfg.epochs = 5;
//   cfg.output = "run";
//   tg::train::Trainer trainer(cfg);
//   trainer.on_step([&](const tg::train::StepInfo& s) { if (s.step == 100) trainer.request_stop();
//   }); tg::train::TrainResult r = trainer.run();  // r.stopped: last.h5 holds step 100
//
// A run continued with resume = "run/last.h5" gives the same losses, bit for bit, as one that was
// never stopped.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>

#include "../core/tensor.h"
#include "config.h"

namespace tg::nn {
class Model;
}
namespace tg::dist {
class ProcessGroup;
}

namespace tg::train {

/// What an on_step callback sees, after the step's optimizer update.
struct StepInfo {
  int64_t step = 0;            ///< steps taken so far in the run (1 after the first)
  int64_t epoch = 0;           ///< 0-based
  int64_t batch_in_epoch = 0;  ///< batches of this epoch done (1 after its first)
  int64_t total_steps = 0;     ///< where the run will stop
  Tensor loss;                 ///< this step's loss on the device (loss.item() waits for it)
  bool logged = false;         ///< a --log-every step: loss_value and samples_per_s are set
  double loss_value = NAN;     ///< the loss (averaged over ranks under mpirun), when logged
  double samples_per_s = NAN;  ///< since the last logged step, when logged
};

/// What an on_epoch callback sees, after validation and the checkpoints.
struct EpochInfo {
  int64_t epoch = 0;
  int64_t step = 0;
  bool complete = true;     ///< false when the run stopped inside the epoch (steps limit)
  double train_loss = NAN;  ///< the mean loss of the epoch's steps
  double val_loss = NAN;    ///< NaN without a validation set (and on ranks other than 0)
};

struct TrainResult {
  int64_t steps = 0;  ///< steps taken in all (resumed ones included)
  int64_t epochs_completed = 0;
  bool stopped = false;  ///< stopped early (request_stop or config.cancel); last.h5 was saved
  double best_val_loss = HUGE_VAL;
};

class Trainer {
 public:
  /// Keeps the configuration; nothing happens until run(). Throws UsageError when it is invalid.
  explicit Trainer(TrainerConfig config);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  /// Callbacks run on the calling thread of run(), on every rank, in the order added.
  void on_step(std::function<void(const StepInfo&)> callback);
  void on_epoch(std::function<void(const EpochInfo&)> callback);
  /// Asks the run to stop after the current step (callable from a callback or another thread): it
  /// saves last.h5 and run() returns with stopped = true. Under mpirun any rank's request stops
  /// all.
  void request_stop();

  /// Runs the training described by the configuration. Throws UsageError when the configuration
  /// conflicts with the output folder or the resumed checkpoint (nothing was written), tg::Error on
  /// any other failure (a non-finite loss included: it names the step where it first appeared; the
  /// checkpoints on disk are then the last good ones). Call once.
  TrainResult run();

  /// The configuration as run() resolved it (data path of the built-in set, groups).
  const TrainerConfig& config() const;
  /// The model being trained (after run() has built it; throws before).
  const nn::Model& model() const;
  /// The data-parallel group under mpirun (null otherwise), so that main() can end every rank
  /// after an error (dist::ProcessGroup::abort).
  dist::ProcessGroup* process_group() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tg::train
