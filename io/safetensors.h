// safetensors files (https://github.com/huggingface/safetensors), and checkpoints in that format.
//
// File: an unsigned little-endian 64-bit header length N, N bytes of JSON, then the tensors' bytes:
//   {"__metadata__": {"key": "value", ...},
//    "<name>": {"dtype": "F32" | "F64", "shape": [d0, d1, ...], "data_offsets": [begin, end]}, ...}
// Offsets count from the first byte after the header; the tensors' byte ranges must cover the data
// exactly, without overlap or holes (as the safetensors library requires). Tensors are written in
// the order given, the header padded with spaces so that the data starts 8-byte aligned. Reading
// checks all of this and throws tg::Error naming the file and the tensor for a header length past
// the end of the file, JSON that is not a header, an unsupported dtype, a shape whose bytes differ
// from its byte range (sizes are checked for overflow), and offsets out of range or overlapping.
//
// Checkpoint layout: the parameters are the file's tensors, under their names, so that in Python
//   model.load_state_dict(safetensors.torch.load_file(path))
// restores a PyTorch model. Everything else lives in __metadata__ (string values), mirroring the
// HDF5 checkpoint's train_state/ group (io/checkpoint.h), where load_state_dict never sees it:
//   "format": "pt", "tapegrad_format": "checkpoint", "tapegrad_format_version": "1"
//   "train_state/step", "train_state/epoch", "train_state/batch_in_epoch", "train_state/seed"
//                                      decimal integers; present exactly when a TrainState was saved
//   "train_state/config_json"         the run's configuration
//   "train_state/scalars/<name>"      a double, in the fewest digits that read back exactly
//   "train_state/momentum_buffer"     JSON list, in the optimizer's order, of
//                                      {"name", "dtype", "shape", "data_base64"} (little-endian bytes)
// The momentum buffers make the header as large as the parameters (4/3 of their bytes); a header
// over 100 MB, the most the safetensors library reads, is refused on save (save as HDF5 instead).
// In Python: safetensors.safe_open(path, "pt").metadata() gives the map.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "../core/tensor.h"
#include "checkpoint.h"

namespace tg::io {

/// The largest header the safetensors library reads (its MAX_HEADER_SIZE); save refuses larger.
constexpr int64_t kSafetensorsMaxHeader = 100'000'000;

struct SafetensorsFile {
  NamedTensors tensors;                         ///< CPU tensors, in the order of their bytes
  std::map<std::string, std::string> metadata;  ///< __metadata__ (empty when absent)
};

/// Writes tensors (float32 or float64, any device; names non-empty, unique, not "__metadata__")
/// and metadata to path atomically: a temporary file in the same folder, synced and renamed over
/// path; on any error the previous file is left as it was and the temporary file is removed.
void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata = {});

/// Reads and validates the whole file (see the top of this file for what is checked).
SafetensorsFile read_safetensors(const std::string& path);
/// Validates the whole header but reads only the tensors named (in the order of names); throws
/// tg::Error naming the file, the missing names and the names present when one is not in the file.
SafetensorsFile read_safetensors(const std::string& path, const std::vector<std::string>& names);

/// True when path starts like a safetensors file (at least 9 bytes, the 9th '{', the first byte
/// of the JSON header); false for a missing or unreadable file and for HDF5 files.
bool is_safetensors(const std::string& path);

/// The format that save_checkpoint(path, ..., format) writes: format itself unless Auto, else
/// Safetensors when path ends in ".safetensors" and HDF5 for any other name.
CheckpointFormat resolve_checkpoint_format(const std::string& path, CheckpointFormat format);

/// A checkpoint as a safetensors file (the layout at the top of this file), atomically. Names are
/// checked like save_checkpoint's; undefined momentum buffers are not saved.
void save_safetensors_checkpoint(const std::string& path, const NamedTensors& params,
                                 const TrainState* state = nullptr);
/// Reads a checkpoint written by save_safetensors_checkpoint, or any safetensors file of float32
/// and float64 tensors (PyTorch's save_file of a state dict): every tensor is a parameter; the
/// train state is present when the metadata has "train_state/step". Throws tg::Error for a corrupt
/// file or malformed training state, naming the key.
Checkpoint load_safetensors_checkpoint(const std::string& path,
                                       const std::vector<std::string>& names = {});

}  // namespace tg::io
