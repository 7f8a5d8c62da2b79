// The Trainer's configuration: everything tg-train's flags set, with the bounds they are checked
// against, and the error type for a configuration that cannot be run (the program exits 2 on it).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "../core/dtype.h"
#include "../core/error.h"

namespace tg::train {

/// A configuration that contradicts itself, its bounds, the output folder or the checkpoint being
/// resumed: nothing was changed on disk, and running again with other settings is the fix. tg-train
/// exits 2 on it (bad arguments), 1 on any other tg::Error.
class UsageError : public Error {
 public:
  explicit UsageError(const std::string& msg) : Error(msg) {}
};

/// Upper bounds of the settings (far beyond any real run; they keep every product of sizes small
/// enough for 64 bits).
constexpr int64_t kMaxEpochs = 1000000000;       // 1e9
constexpr int64_t kMaxSteps = int64_t(1) << 50;  // also the bound of --log-every
constexpr int64_t kMaxBatchSize = int64_t(1) << 24;
constexpr int64_t kMaxGroups = int64_t(1) << 20;
constexpr double kMaxValFraction = 0.9;
constexpr double kMaxDistTimeout = 1e6;

struct TrainerConfig {
  // data
  std::string data;           ///< HDF5 dataset; empty: the built-in teacher-student set in output
  std::string x_name = "x";   ///< input dataset (N, Cin, H, W)
  std::string y_name = "y";   ///< target dataset (N, Cout, H-k+1, W-k+1)
  double val_fraction = 0.1;  ///< the file's last floor(N * val_fraction) samples validate
  bool shuffle = true;        ///< a permutation per epoch from seed; else the file's order
  int64_t batch_size = 32;    ///< samples per step (per rank under mpirun)
  // model and optimizer
  int64_t groups = 0;  ///< GroupNorm groups; 0: 8, 4, 2 or 1, the largest dividing Cout
  std::string dtype = "float32";
  double lr = 0.05, momentum = 0.9, dampening = 0.0, weight_decay = 0.0;
  bool nesterov = false;
  uint64_t seed = 0;  ///< initialisation and data order
  // length
  int64_t epochs = 10;
  int64_t steps = 0;  ///< stop after this many optimizer steps in all (0: no limit)
  // where and how
  std::string output = "run";   ///< the run folder (metrics.jsonl, loss.svg, last.h5, best.h5)
  std::string device = "auto";  ///< cpu, cuda or auto
  std::string tf32 = "on";      ///< TF32 for cuDNN convolutions: on or off
  bool deterministic = false;   ///< deterministic cuDNN algorithms only
  /// Where CUDA training keeps the data: auto (on the GPU when it fits in half of the free memory
  /// after the step's own, else streamed), device (on the GPU, or an error), off (streamed). See
  /// train/batch_source.h; every mode gives the same batches, bit for bit.
  std::string data_cache = "auto";
  /// Whether the training step (forward, loss, backward) runs as a captured CUDA graph
  /// (train/captured_step.h; the optimizer steps after it, eagerly): auto (on for CUDA training in
  /// one process with device-resident batches, where a step is launch-bound), on (also with
  /// streamed batches; an error on the CPU and under mpirun), off. Losses, checkpoints and resume
  /// are bit-identical in every mode.
  std::string cuda_graph = "auto";
  /// last / best checkpoints as HDF5 (last.h5, best.h5) or safetensors (last.safetensors, ...);
  /// --init and --resume read either (by content).
  std::string checkpoint_format = "hdf5";
  /// "last.h5" or "last.safetensors" (and so for best), as checkpoint_format says.
  std::string checkpoint_name(const std::string& stem) const {
    return stem + (checkpoint_format == "safetensors" ? ".safetensors" : ".h5");
  }
  std::string init;             ///< start from this checkpoint's parameters
  std::string resume;           ///< continue this checkpoint's run exactly
  bool overwrite = false;       ///< replace the run already in output (else it is refused)
  int64_t log_every = 10;       ///< log (and read) the loss every N steps
  double dist_timeout = 300;    ///< under mpirun: the longest a rank waits for the others, in s
  // library use only (not flags)
  bool verbose = true;  ///< progress line and messages on stderr (rank 0)
  /// Polled once per step: when it becomes true the run saves last.h5 and stops (tg-train points it
  /// at its SIGINT flag). Not owned; may be null.
  const std::atomic<bool>* cancel = nullptr;

  /// Throws UsageError naming the flag, its value and its bounds for the first setting out of range
  /// (non-finite numbers included) or a contradictory pair (--init with --resume, --overwrite with
  /// --resume).
  void validate() const;
};

/// Resolves --cuda-graph for a run on device: "off" is false; "on" is true, or UsageError on the
/// CPU or when data_parallel (the gradient all-reduce runs host code inside the backward); "auto"
/// is true for CUDA training in one process with device_resident batches.
bool resolve_cuda_graph(const std::string& mode, Device device, bool data_parallel,
                        bool device_resident);

}  // namespace tg::train
