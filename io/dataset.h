// HDF5 datasets of (input, target) samples: inspection, a prefetching batch reader, and writers.
//
// File layout (SPEC.md "Files"): two datasets at the root, `x` (N, Cin, H, W) and
// `y` (N, Cout, Ho, Wo), float32 (float64, float16 and bfloat16 are accepted and converted), the
// same N >= 1. Other names can be chosen.
//
// Reading: a batch reads only its rows; the whole file is never loaded. Filtered (compressed) data
// goes through HDF5 with one hyperslab read per run of consecutive indices; unfiltered data is read
// with parallel pread()s at the rows' file offsets (HDF5 runs its data path on one thread under a
// global lock, which caps it at one core). A background thread reads the next batch into pinned
// host tensors while the caller works on the current one. Every batch is checked for NaN/Inf.
// Half-width data (float16 / bfloat16) is read as its raw 16-bit values (never through HDF5's
// slow soft conversion) and widened exactly on the CPU, or handed over as it is for a consumer that
// widens it on its own device (DatasetReaderOptions::keep_half_width).
// Writing: chunked (one sample, or a few small ones, per chunk), by default byte-shuffled and
// gzip-compressed; see DatasetWriterOptions for the speed trade-off.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../core/tensor.h"
#include "float16.h"

namespace tg::io {

/// Shapes and stored element types of a dataset file's x and y.
struct DatasetInfo {
  Shape x_shape, y_shape;  ///< full shapes, N first
  ElementType x_type = ElementType::Float32, y_type = ElementType::Float32;  ///< as stored
  int64_t num_samples() const { return x_shape.empty() ? 0 : x_shape[0]; }
};

/// Opens path and checks that x_name and y_name are datasets of rank 4 with float32, float64,
/// float16 or bfloat16 elements (h5::Dataset::element_type), every dimension >= 1, and the same N,
/// whose size in bytes fits in 64 bits, that hold data (declared but never written is an error),
/// and whose filters this HDF5 library has. Throws tg::Error naming the file and the dataset
/// ("dataset 'y' in 'data.h5': expected rank 4 (N, C, H, W), got 2 ([10, 3])"); a broken soft or
/// external link says where it points.
DatasetInfo inspect_dataset(const std::string& path, const std::string& x_name = "x",
                            const std::string& y_name = "y");

/// The stored 16-bit values of a batch's x or y, not yet widened (see
/// DatasetReaderOptions::keep_half_width).
struct HalfRows {
  ElementType type = ElementType::Float16;  ///< float16 or bfloat16
  Shape shape;                              ///< (B, ...), in elements
  /// Host memory (pinned like the batch tensors) holding the numel(shape) 2-byte values, in
  /// row-major order from its start. A float32 tensor of ceil(numel / 2) elements, used only as
  /// bytes (tensors have no 16-bit dtype), so that it shares the reader's buffer pool and lifetime
  /// rules.
  Tensor bytes;
  bool defined() const { return bytes.defined(); }
  int64_t numel() const { return checked_numel(shape); }
  size_t nbytes() const { return size_t(numel()) * 2; }
  const uint16_t* bits() const { return static_cast<const uint16_t*>(bytes.raw_data()); }
};

/// One batch of samples.
struct Batch {
  Tensor x, y;  ///< (B, ...) host tensors (pinned when options.pinned and CUDA is built)
  /// With keep_half_width, a float16 / bfloat16 x or y comes here instead (and x or y is
  /// undefined).
  HalfRows x_half, y_half;
  int64_t epoch = 0;           ///< the training epoch; -1 for a validation batch
  int64_t index_in_epoch = 0;  ///< batch number within its epoch (or within the validation set)
  /// The file row of each sample of the batch, in the batch's order (ascending: see DatasetReader).
  std::vector<int64_t> indices;
  bool validation = false;
};

struct DatasetReaderOptions {
  std::string path;
  std::string x_name = "x";
  std::string y_name = "y";
  int64_t batch_size = 32;
  /// Shuffle the training samples each epoch (a permutation from (seed, epoch)); else file order.
  bool shuffle = true;
  uint64_t seed = 0;
  /// In [0, 1): the last floor(N * val_fraction) samples of the file are the validation set (never
  /// shuffled, never in training batches).
  double val_fraction = 0.0;
  /// Drop the last training batch of an epoch when it has fewer than batch_size samples.
  bool drop_last = false;
  /// Read the next batch on a background thread while the caller works on the current one.
  bool prefetch = true;
  DType dtype = DType::Float32;  ///< element type of the batch tensors (the file's is converted)
  /// float16 / bfloat16 datasets: deliver their stored values as Batch::x_half / y_half (x / y
  /// undefined) for the consumer to widen on its device, so that a copy to a GPU moves half the
  /// bytes. Off: widened (exactly) to dtype on the CPU into x / y. Other types are unaffected.
  bool keep_half_width = false;
  bool pinned = true;        ///< page-locked host memory (for fast, asynchronous copies to CUDA)
  bool check_finite = true;  ///< throw on NaN or Inf in a batch
  /// Read unfiltered data (no compression, no checksum, stored type == dtype, or float16 /
  /// bfloat16, whose raw values are then widened) with parallel pread()s straight into the buffer,
  /// bypassing HDF5's single-threaded data path. Data that does not qualify is read through HDF5
  /// hyperslabs.
  bool direct_io = true;
  /// Threads for direct reads (each also checks its part for NaN/Inf); 0 = min(8, hardware
  /// threads).
  int io_threads = 0;
  /// A direct read uses at most one thread per this many bytes of it (small batches, as in CPU
  /// training, are read in about a millisecond by one thread; more would take cores from the step).
  int64_t io_thread_bytes = int64_t(16) << 20;
  /// Data-parallel training: batch_size is the global batch, and this reader returns only part
  /// shard_index of shard_count of each training batch (positions [floor(r*b/K), floor((r+1)*b/K))
  /// of the batch's b rows in the epoch order, so all ranks together read each batch exactly once).
  /// A last batch with fewer rows than shards is dropped. Validation batches are not sharded.
  int shard_index = 0;
  int shard_count = 1;
};

/// Reads batches from an HDF5 dataset file.
///
/// Training order of epoch e: a permutation of the training indices [0, n_train) drawn from
/// (seed, e) by Fisher-Yates (identity when !shuffle), cut into consecutive batches. It depends
/// only on (seed, e), so start_epoch(e, k) yields exactly the batches k, k+1, ... that an
/// uninterrupted epoch yields (exact resume). The rows of one batch are delivered in ascending
/// file order (the set of rows is the permutation's; sorted runs are read straight into the batch
/// buffer); Batch::indices says which row is where.
///
/// Batch tensors come from a small pool of buffers that is reused only once the caller holds no
/// reference to a buffer any more, so a batch stays valid for as long as the caller keeps it.
///
/// Errors (missing or malformed file, read failures, NaN/Inf, a batch larger than this machine's
/// memory) are tg::Error naming the file, the dataset and, for bad values, the sample index. An
/// error raised on the background thread is rethrown by the next()/next_val() call that would have
/// returned that batch; that batch counts as delivered and the following call continues with the
/// next one.
///
/// Not thread safe: one thread calls start_epoch/next/start_val/next_val.
class DatasetReader {
 public:
  explicit DatasetReader(DatasetReaderOptions options);
  ~DatasetReader();
  DatasetReader(const DatasetReader&) = delete;
  DatasetReader& operator=(const DatasetReader&) = delete;

  const DatasetReaderOptions& options() const;
  /// Sets options().keep_half_width for the batches read from now on (one read ahead already may
  /// have either form: a consumer that asks for the stored values handles widened ones too).
  void set_keep_half_width(bool on);
  const DatasetInfo& info() const;
  int64_t num_samples() const;
  int64_t num_train() const;  ///< N - num_val()
  int64_t num_val() const;    ///< floor(N * val_fraction)
  int64_t num_train_batches() const;
  /// Rows of training batch b of an epoch before sharding (the global batch size).
  int64_t global_batch_rows(int64_t b) const;
  int64_t num_val_batches() const;

  /// The training order of an epoch (a permutation of [0, num_train())).
  std::vector<int64_t> epoch_order(int64_t epoch) const;

  /// The file rows of every training batch of an epoch, as next() delivers them after
  /// start_epoch(epoch): this shard's part of each batch, ascending. A device-resident copy of the
  /// data gathers its batches from these.
  std::vector<std::vector<int64_t>> epoch_batches(int64_t epoch) const;
  /// The file rows of every validation batch, as next_val() delivers them.
  std::vector<std::vector<int64_t>> val_batches() const;

  /// Starts training epoch `epoch`, skipping its first skip_batches batches (0 <= skip_batches <=
  /// num_train_batches()). Discards whatever was prefetched for the training stream.
  void start_epoch(int64_t epoch, int64_t skip_batches = 0);
  /// The next training batch of the current epoch; false when the epoch is exhausted.
  bool next(Batch& out);

  /// Starts a pass over the validation set (independent of the training stream, which keeps its
  /// place). Throws when there is no validation set.
  void start_val();
  /// The next validation batch; false when the pass is over.
  bool next_val(Batch& out);

  /// Whether x / y are read directly (see DatasetReaderOptions::direct_io), and if not, why.
  bool direct_x() const;
  bool direct_y() const;
  std::string direct_info() const;

  /// Reads the given rows synchronously, in the given order (duplicates allowed), widened to dtype
  /// whatever keep_half_width says. For inspection and tests; does not disturb the streams. epoch
  /// and index_in_epoch of the result are 0.
  Batch read(const std::vector<int64_t>& indices) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Options of DatasetWriter and write_dataset.
///
/// Speed: float data of random-looking values compresses poorly (gzip 1 + shuffle saves ~15% on
/// normal samples) while gzip costs ~5x in write time and caps reading at one core's inflate speed
/// (~0.3 GB/s). For large training sets prefer compression_level = 0 (and checksum = false), which
/// lets DatasetReader read directly with several threads.
struct DatasetWriterOptions {
  std::string x_name = "x";
  std::string y_name = "y";
  /// Element type stored in the file (tensors are converted; to float16 / bfloat16 by rounding to
  /// nearest even, NaN staying NaN; with check_finite a finite value that overflows the 16-bit
  /// range is refused like NaN and Inf).
  ElementType dtype = ElementType::Float32;
  int compression_level = 1;   ///< gzip level 0..9; 0 = uncompressed
  bool shuffle_filter = true;  ///< byte shuffle before gzip (helps float data; unused at level 0)
  /// fletcher32 checksum per chunk. Compressed chunks are already checked by deflate's adler32;
  /// this is for uncompressed data (and then disables DatasetReader's direct reads).
  bool checksum = false;
  /// Samples per chunk; 0 = automatic (as many as fit in 64 KiB, at least 1).
  int64_t chunk_rows = 0;
  bool check_finite = true;  ///< refuse to write NaN or Inf
};

/// Writes a dataset file batch by batch, so that sets larger than memory can be produced.
///
/// The file is written under a temporary name and renamed to path by close() once all total_n
/// samples have been appended, so a crash never leaves a half-written file at path. Destroying a
/// writer that was not closed removes the temporary file.
class DatasetWriter {
 public:
  /// x_sample_shape / y_sample_shape: the shape of one sample (e.g. {Cin, H, W}).
  DatasetWriter(const std::string& path, const Shape& x_sample_shape, const Shape& y_sample_shape,
                int64_t total_n, const DatasetWriterOptions& options = {});
  ~DatasetWriter();
  DatasetWriter(const DatasetWriter&) = delete;
  DatasetWriter& operator=(const DatasetWriter&) = delete;

  /// Appends B samples: x_batch (B, x_sample_shape...), y_batch (B, y_sample_shape...), any device,
  /// float32 or float64.
  void append(const Tensor& x_batch, const Tensor& y_batch);
  int64_t written() const { return written_; }
  int64_t total() const { return total_; }
  /// Checks that all samples were written, then moves the file into place.
  void close();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int64_t written_ = 0, total_ = 0;
};

/// Writes x (N, ...) and y (N, ...) as a complete dataset file (see DatasetWriter).
void write_dataset(const std::string& path, const Tensor& x, const Tensor& y,
                   const std::string& x_name = "x", const std::string& y_name = "y");
void write_dataset(const std::string& path, const Tensor& x, const Tensor& y,
                   const DatasetWriterOptions& options);

}  // namespace tg::io
