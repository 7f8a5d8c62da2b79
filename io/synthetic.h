// A synthetic teacher-student dataset: x ~ U[0, 1), y = teacher(x) + noise * N(0, 1), where the
// teacher is the seed's model with its own random parameters (seeded). A student trained on it can
// bring the loss close to the noise floor (noise^2).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "float16.h"

namespace tg::io {

struct SyntheticOptions {
  int64_t samples = 512;
  int64_t in_channels = 3;
  int64_t out_channels = 8;
  int64_t height = 16;
  int64_t width = 16;
  int64_t kernel = 3;
  int64_t groups = 4;
  double noise = 0.05;
  uint64_t seed = 1;
  int64_t batch = 256;  ///< samples generated and appended at a time
  /// Element type stored for x and y (float16 / bfloat16: rounded to nearest even).
  ElementType dtype = ElementType::Float32;
  /// When set (e.g. by a SIGINT handler), the write stops before the next batch: the temporary
  /// file is removed and tg::Error("... interrupted") is thrown. Null: never interrupted.
  const std::atomic<bool>* cancel = nullptr;
};

/// Writes the dataset to path (datasets "x" and "y", chunked, compressed, of options.dtype), batch
/// by batch, under a temporary name that is renamed to path when complete (see DatasetWriter): on
/// any error, or when cancelled, nothing is left behind and a previous file at path is unchanged.
void write_synthetic_dataset(const std::string& path, const SyntheticOptions& options);

}  // namespace tg::io
