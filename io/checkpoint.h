// Checkpoints: named parameters plus optional training state, in one HDF5 file.
//
// Layout (SPEC.md "Files"):
//   /<param name>                        one dataset per parameter, exactly its name, shape and
//   dtype /train_state/                        group, present when a TrainState was saved;
//   attributes
//                                        step, epoch, batch_in_epoch (int64) and seed (uint64)
//   /train_state/config_json             scalar string dataset
//   /train_state/momentum_buffer/<name>  one dataset per momentum buffer, named by its parameter
//   /train_state/scalars/<name>          scalar float64 datasets
// and root attributes tapegrad_format = "checkpoint", tapegrad_format_version = 1. Python reads the
// parameters with {k: torch.from_numpy(f[k][()]) for k in f if isinstance(f[k], h5py.Dataset)}.
// Saves are atomic: the file is written under a temporary name, synced, and renamed over path.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../core/tensor.h"

namespace tg::io {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

/// Everything besides the parameters that is needed to resume training exactly.
struct TrainState {
  int64_t step = 0;            ///< optimizer steps taken
  int64_t epoch = 0;           ///< current epoch
  int64_t batch_in_epoch = 0;  ///< batches of the current epoch already consumed
  uint64_t seed = 0;           ///< the run's seed (data order and initialisation derive from it)
  std::string config_json;     ///< the run's configuration
  /// Optimizer momentum buffers by parameter name. Undefined tensors (no buffer yet) are not saved.
  NamedTensors momentum_buffers;
  /// Any other numbers worth keeping (learning rate now, best validation loss, ...).
  std::map<std::string, double> scalars;
};

/// A checkpoint's file format. Auto: chosen by the file name on save (".safetensors" for
/// safetensors, HDF5 otherwise); loading always detects the format by the file's content.
enum class CheckpointFormat { Auto, Hdf5, Safetensors };

struct Checkpoint {
  /// CPU tensors, in the order they were saved (or asked for, see load_checkpoint)
  NamedTensors params;
  std::optional<TrainState> state;  ///< present when the file has a train_state group
  /// With names given to load_checkpoint: the other root datasets (and broken links), never read.
  std::vector<std::string> unknown;

  bool has_param(const std::string& name) const;
  /// The parameter of that name; throws tg::Error listing the names present when missing.
  const Tensor& param(const std::string& name) const;
};

/// Writes params (and state, when not null) to path atomically, as HDF5 or as safetensors
/// (io/safetensors.h has that layout) by format. Tensors may live on CUDA (copied to
/// the host); dtypes are preserved. Names must be non-empty, free of '/', not "train_state" and
/// unique. On any error the previous file at path is left as it was and no temporary file remains.
void save_checkpoint(const std::string& path, const NamedTensors& params,
                     const TrainState* state = nullptr,
                     CheckpointFormat format = CheckpointFormat::Auto);

/// Reads a checkpoint, HDF5 or safetensors, detected by its content. With names, exactly the root datasets of those names are the parameters (in
/// that order; missing ones are one error listing them all), and every other root dataset is only
/// listed in Checkpoint::unknown, never read. Without names, every root dataset is a parameter.
/// Parameters are float32 or float64. The train_state group, when present, becomes
/// Checkpoint::state.
///
/// Throws tg::Error naming the file for: a missing file, one that is not HDF5, a truncated or
/// corrupt one; a dataset too large for 64-bit sizes or for this machine's memory, one declared
/// but never written, one stored with a filter this HDF5 lacks, a broken link (each naming the
/// dataset and its shape); a parameter or momentum buffer holding NaN or Inf (naming it); and
/// malformed training state: a missing attribute, a negative step, epoch or batch_in_epoch, a NaN
/// best_val_loss scalar (inf is fine), a scalar that is not one number.
Checkpoint load_checkpoint(const std::string& path, const std::vector<std::string>& names = {});

/// Reads the checkpoint in (either format) and writes its parameters and train state to out in
/// format (Auto: by out's name, so "last.h5" -> "last.safetensors" converts to safetensors).
void convert_checkpoint(const std::string& in, const std::string& out,
                        CheckpointFormat format = CheckpointFormat::Auto);

}  // namespace tg::io
