// Where a training run's batches come from, on the device that trains:
//
// - host:      the reader's (pinned) host batches as they are; CPU training.
// - streaming: host batches copied to the GPU on a copy stream of their own, into two device
//              buffers used in turn, ordered by events: the copy of batch k+1 runs while step k
//              computes, and the host never waits for a copy (only for the reader).
// - device:    the whole dataset (training and validation rows) copied to the GPU once, streamed
//              through pinned buffers; each training batch is then gathered there by a kernel from
//              the epoch's order, and validation batches are views of the cached rows.
//
// float16 / bfloat16 data (io::HalfRows) travels as its 16-bit values and is widened on the GPU:
// streaming copies half the bytes and widens them on the copy stream; the device cache keeps the
// 16-bit values (half the memory) and widens them in its gather (and for validation batches).
//
// All three yield the same batches in the same order with the same values, bit for bit (the
// reader's order: DatasetReader::epoch_batches), so losses, checkpoints and resume do not depend on
// the mode (tested).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../core/dtype.h"
#include "../io/dataset.h"

namespace tg::train {

/// --data-cache: auto (device-resident when the data fits the budget, else streaming), device
/// (device-resident or an error), off (streaming).
enum class DataCache { Auto, Device, Off };
/// Parses "auto" / "device" / "off"; throws tg::Error otherwise.
DataCache parse_data_cache(const std::string& s);
const char* data_cache_name(DataCache c);

class BatchSource {
 public:
  virtual ~BatchSource() = default;
  /// Starts training epoch `epoch` at its batch `skip_batches` (as DatasetReader::start_epoch).
  virtual void start_epoch(int64_t epoch, int64_t skip_batches) = 0;
  /// The next training batch, on the training device; false at the end of the epoch. Its tensors
  /// stay valid until the second call of next() after this one (a streaming source reuses two
  /// device buffers; their version counter is bumped on reuse, so a backward that still needed one
  /// throws instead of reading new data).
  virtual bool next(io::Batch& out) = 0;
  virtual void start_val() = 0;
  virtual bool next_val(io::Batch& out) = 0;
  /// "host", "streaming" or "device-resident (N MiB)".
  virtual std::string describe() const = 0;
  /// Device bytes this source holds itself (the cache, or the two streaming buffers).
  virtual size_t device_bytes() const = 0;
  /// True for the device cache (the whole dataset on the GPU); false where batches are read from
  /// the file every epoch (host, streaming).
  virtual bool device_resident() const { return false; }
  /// Asks the source to build full-size training batches in these buffers (x, y) from now on where
  /// it builds batches on the device anyway (the device cache: straight into a CUDA graph's static
  /// inputs, which saves the graph a copy of every batch). Such a batch then stays valid only until
  /// the next call of next() (the buffers' version counter is bumped on reuse). Others ignore it.
  virtual void gather_into(const std::vector<Tensor>& buffers) { (void)buffers; }
};

/// Device bytes a device-resident copy of the reader's whole dataset takes (x and y, all rows, in
/// the reader's dtype; float16 / bfloat16 data as its 16-bit values, half of float32's bytes).
size_t device_cache_bytes(const io::DatasetReader& reader);

struct BatchSourceOptions {
  DataCache cache = DataCache::Auto;
  /// The device memory the training step itself needs beyond its parameters (for the auto budget:
  /// the cache may take half of what is free after it).
  size_t step_bytes = 0;
  /// Called with (rows loaded, rows in all) while a device cache loads; may be empty.
  std::function<void(int64_t, int64_t)> on_load_progress;
};

/// The source for training on `device` from `reader` (which it keeps a reference to). CPU: host.
/// CUDA: device-resident when options.cache is Device, or Auto and the data fits in half of the
/// free device memory after options.step_bytes; otherwise streaming. Device when it does not fit is
/// an error that gives both sizes.
std::unique_ptr<BatchSource> make_batch_source(io::DatasetReader& reader, Device device,
                                               const BatchSourceOptions& options = {});

/// The individual sources (make_batch_source picks one of these).
std::unique_ptr<BatchSource> make_host_source(io::DatasetReader& reader);
std::unique_ptr<BatchSource> make_streaming_source(io::DatasetReader& reader);
std::unique_ptr<BatchSource> make_device_cache_source(
    io::DatasetReader& reader, const std::function<void(int64_t, int64_t)>& on_load_progress = {});

}  // namespace tg::train
