// The CUDA batch sources: streaming (copies on a copy stream, ordered by events) and
// device-resident (the dataset in GPU memory, batches gathered by a kernel).
#include <cstdio>
#include <cstring>

#include "../core/cuda_context.h"
#include "../core/cuda_utils.h"
#include "../core/size.h"
#include "batch_source_cuda.h"

namespace tg::train::detail {

namespace {

// An event created without timing (cheap to record and wait on); destroyed with its owner.
class Event {
 public:
  Event() { TG_CUDA_CHECK(cudaEventCreateWithFlags(&e_, cudaEventDisableTiming)); }
  ~Event() {
    if (e_) cudaEventDestroy(e_);
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_ = nullptr;
};

void copy_metadata(const io::Batch& from, io::Batch& to) {
  to.epoch = from.epoch;
  to.index_in_epoch = from.index_in_epoch;
  to.indices = from.indices;
  to.validation = from.validation;
}

// ---- streaming ---------------------------------------------------------------------------------
//
// Batch k goes to device slot k % 2. Its copy (on copy_) waits for the event `consumed` of that
// slot, recorded on the compute stream once step k - 2 (the slot's last user) was queued; the
// compute stream waits for the event `copied` before step k. The host batch stays referenced (so
// the reader's pool cannot refill its pinned buffer) until its copy is known to have completed.
class StreamingSource final : public BatchSource {
 public:
  explicit StreamingSource(io::DatasetReader& reader) : reader_(reader) {
    cuda::stream();  // selects and initialises the device
    TG_CUDA_CHECK(cudaStreamCreateWithFlags(&copy_, cudaStreamNonBlocking));
  }
  ~StreamingSource() override {
    if (cudaStreamSynchronize(copy_) != cudaSuccess)
      std::fprintf(stderr, "tapegrad: streaming batches: a copy failed at shutdown\n");
    for (Slot& s : slots_) s.host = io::Batch();
    cudaStreamDestroy(copy_);
  }

  void start_epoch(int64_t epoch, int64_t skip) override { reader_.start_epoch(epoch, skip); }
  bool next(io::Batch& out) override { return deliver(false, out); }
  void start_val() override { reader_.start_val(); }
  bool next_val(io::Batch& out) override { return deliver(true, out); }
  std::string describe() const override { return "streaming"; }
  size_t device_bytes() const override {
    size_t b = 0;
    for (const Slot& s : slots_)
      if (s.x.defined()) b += s.x.nbytes() + s.y.nbytes();
    return b;
  }

 private:
  struct Slot {
    Tensor x, y;              // device buffers, as many rows as the largest batch so far
    Event copied, consumed;   // copy done (copy stream); last user queued (compute stream)
    bool consumed_valid = false;
    io::Batch host;           // the host batch whose copy may still be in flight
  };

  bool deliver(bool val, io::Batch& out) {
    out = io::Batch();
    cudaStream_t compute = cuda::stream();
    if (delivered_ > 0) {
      Slot& last = slots_[(delivered_ - 1) % 2];
      TG_CUDA_CHECK(cudaEventRecord(last.consumed.get(), compute));
      last.consumed_valid = true;
    }
    for (Slot& s : slots_)  // hand back host buffers whose copies are done
      if (s.host.x.defined() && copy_done(s)) s.host = io::Batch();
    io::Batch hb;
    if (!(val ? reader_.next_val(hb) : reader_.next(hb))) return false;
    Slot& s = slots_[delivered_ % 2];
    if (s.host.x.defined()) {  // its copy was queued two batches ago; wait before letting it go
      TG_CUDA_CHECK(cudaEventSynchronize(s.copied.get()));
      s.host = io::Batch();
    }
    const int64_t rows = hb.x.size(0);
    if (!fits(s.x, hb.x) || !fits(s.y, hb.y)) {
      s.x = Tensor::empty(hb.x.shape(), hb.x.dtype(), Device::CUDA);
      s.y = Tensor::empty(hb.y.shape(), hb.y.dtype(), Device::CUDA);
      // New blocks from the allocator may still be read by queued compute work: wait for all of it.
      TG_CUDA_CHECK(cudaEventRecord(s.consumed.get(), compute));
      s.consumed_valid = true;
    }
    if (s.consumed_valid) TG_CUDA_CHECK(cudaStreamWaitEvent(copy_, s.consumed.get(), 0));
    s.x.bump_version();
    s.y.bump_version();
    TG_CUDA_CHECK(cudaMemcpyAsync(s.x.raw_data(), hb.x.raw_data(), hb.x.nbytes(),
                                  cudaMemcpyHostToDevice, copy_));
    TG_CUDA_CHECK(cudaMemcpyAsync(s.y.raw_data(), hb.y.raw_data(), hb.y.nbytes(),
                                  cudaMemcpyHostToDevice, copy_));
    TG_CUDA_CHECK(cudaEventRecord(s.copied.get(), copy_));
    TG_CUDA_CHECK(cudaStreamWaitEvent(compute, s.copied.get(), 0));
    copy_metadata(hb, out);
    out.x = s.x.view_rows(0, rows);
    out.y = s.y.view_rows(0, rows);
    s.host = std::move(hb);
    ++delivered_;
    return true;
  }

  static bool copy_done(const Slot& s) {
    const cudaError_t q = cudaEventQuery(s.copied.get());
    if (q == cudaErrorNotReady) {
      (void)cudaGetLastError();  // not an error: clear it so that no later check reports it
      return false;
    }
    TG_CUDA_CHECK(q);
    return true;
  }

  // Whether buffer can hold batch: the same shape past dimension 0 and at least as many rows.
  static bool fits(const Tensor& buffer, const Tensor& batch) {
    if (!buffer.defined() || buffer.dtype() != batch.dtype() || buffer.dim() != batch.dim())
      return false;
    for (int64_t d = 1; d < batch.dim(); ++d)
      if (buffer.size(d) != batch.size(d)) return false;
    return buffer.size(0) >= batch.size(0);
  }

  io::DatasetReader& reader_;
  cudaStream_t copy_ = nullptr;
  Slot slots_[2];
  int64_t delivered_ = 0;
};

// ---- device-resident ---------------------------------------------------------------------------
class DeviceCacheSource final : public BatchSource {
 public:
  DeviceCacheSource(io::DatasetReader& reader,
                    const std::function<void(int64_t, int64_t)>& on_progress)
      : reader_(reader) {
    load(on_progress);
    const size_t n = size_t(std::max<int64_t>(reader_.num_train(), 1));
    TG_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&d_rows_), n * sizeof(int64_t)));
    TG_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&h_rows_), n * sizeof(int64_t)));
  }
  ~DeviceCacheSource() override {
    if (cudaEventSynchronize(uploaded_.get()) != cudaSuccess)
      std::fprintf(stderr, "tapegrad: device cache: an upload failed at shutdown\n");
    cudaFree(d_rows_);
    cudaFreeHost(h_rows_);
  }

  void start_epoch(int64_t epoch, int64_t skip) override {
    const int64_t nb = reader_.num_train_batches();
    TG_CHECK(skip >= 0 && skip <= nb, "device cache: skip_batches must be in [0, ", nb, "], got ",
             skip);
    batches_ = reader_.epoch_batches(epoch);
    epoch_ = epoch;
    next_ = size_t(skip);
    // The previous epoch's upload must be done before its pinned rows are overwritten.
    TG_CUDA_CHECK(cudaEventSynchronize(uploaded_.get()));
    offsets_.assign(batches_.size() + 1, 0);
    for (size_t b = 0; b < batches_.size(); ++b) {
      std::memcpy(h_rows_ + offsets_[b], batches_[b].data(), batches_[b].size() * sizeof(int64_t));
      offsets_[b + 1] = offsets_[b] + batches_[b].size();
    }
    cudaStream_t s = cuda::stream();  // ordered after the previous epoch's gathers
    TG_CUDA_CHECK(cudaMemcpyAsync(d_rows_, h_rows_, offsets_.back() * sizeof(int64_t),
                                  cudaMemcpyHostToDevice, s));
    TG_CUDA_CHECK(cudaEventRecord(uploaded_.get(), s));
  }

  bool next(io::Batch& out) override {
    out = io::Batch();
    if (next_ >= batches_.size()) return false;
    const size_t b = next_++;
    const int64_t n = int64_t(batches_[b].size());
    out.x = gather(x_, n, d_rows_ + offsets_[b]);
    out.y = gather(y_, n, d_rows_ + offsets_[b]);
    out.epoch = epoch_;
    out.index_in_epoch = int64_t(b);
    out.indices = batches_[b];
    return true;
  }

  void start_val() override {
    TG_CHECK(reader_.num_val() > 0, "device cache: '", reader_.options().path,
             "' has no validation set");
    val_ = reader_.val_batches();
    next_val_ = 0;
  }

  bool next_val(io::Batch& out) override {
    out = io::Batch();
    if (next_val_ >= val_.size()) return false;
    const size_t b = next_val_++;
    const std::vector<int64_t>& rows = val_[b];  // consecutive: a view of the cached rows
    out.x = x_.view_rows(rows.front(), int64_t(rows.size()));
    out.y = y_.view_rows(rows.front(), int64_t(rows.size()));
    out.epoch = -1;
    out.index_in_epoch = int64_t(b);
    out.indices = rows;
    out.validation = true;
    return true;
  }

  std::string describe() const override {
    char buf[64];
    std::snprintf(buf, sizeof buf, "device-resident (%.0f MiB)",
                  double(device_bytes()) / (1024.0 * 1024.0));
    return buf;
  }
  size_t device_bytes() const override { return x_.nbytes() + y_.nbytes(); }

 private:
  // Every row of the file (training and validation), in file order, read through a second reader
  // in chunks of about 256 MiB into pinned buffers (it reads the next chunk while this one copies).
  void load(const std::function<void(int64_t, int64_t)>& on_progress) {
    const io::DatasetInfo& info = reader_.info();
    const DType dt = reader_.options().dtype;
    x_ = Tensor::empty(info.x_shape, dt, Device::CUDA);
    y_ = Tensor::empty(info.y_shape, dt, Device::CUDA);
    const int64_t n = reader_.num_samples();
    const size_t row_bytes = (x_.nbytes() + y_.nbytes()) / size_t(std::max<int64_t>(n, 1));
    io::DatasetReaderOptions lo = reader_.options();
    lo.shuffle = false;
    lo.shard_index = 0;
    lo.shard_count = 1;
    lo.drop_last = false;
    lo.prefetch = true;
    lo.pinned = true;
    lo.batch_size = std::max<int64_t>(1, int64_t((size_t(256) << 20) / std::max<size_t>(row_bytes, 1)));
    io::DatasetReader loader(lo);
    int64_t done = 0;
    auto put = [&](const io::Batch& b) {
      const int64_t first = b.indices.front(), rows = int64_t(b.indices.size());
      copy_bytes(x_.view_rows(first, rows).raw_data(), Device::CUDA, b.x.raw_data(), Device::CPU,
                 b.x.nbytes());
      copy_bytes(y_.view_rows(first, rows).raw_data(), Device::CUDA, b.y.raw_data(), Device::CPU,
                 b.y.nbytes());
      done += rows;
      if (on_progress) on_progress(done, n);
    };
    io::Batch b;
    loader.start_epoch(0);
    while (loader.next(b)) put(b);
    if (loader.num_val() > 0) {
      loader.start_val();
      while (loader.next_val(b)) put(b);
    }
    TG_CHECK(done == n, "device cache: loaded ", done, " of the ", n, " rows of '",
             reader_.options().path, "'");
  }

  Tensor gather(const Tensor& all, int64_t n, const int64_t* rows) const {
    Shape s = all.shape();
    s[0] = n;
    Tensor out = Tensor::empty(s, all.dtype(), Device::CUDA);
    const size_t row_bytes = size_t(checked_numel(Shape(s.begin() + 1, s.end()))) * dtype_size(all.dtype());
    gather_rows_cuda(out.raw_data(), all.raw_data(), rows, n, row_bytes);
    return out;
  }

  io::DatasetReader& reader_;
  Tensor x_, y_;
  int64_t* d_rows_ = nullptr;  // the epoch's batch rows, concatenated, on the device
  int64_t* h_rows_ = nullptr;  // pinned staging for their upload
  Event uploaded_;
  std::vector<std::vector<int64_t>> batches_, val_;
  std::vector<size_t> offsets_;
  size_t next_ = 0, next_val_ = 0;
  int64_t epoch_ = 0;
};

}  // namespace

std::unique_ptr<BatchSource> make_streaming_source_cuda(io::DatasetReader& reader) {
  return std::make_unique<StreamingSource>(reader);
}

std::unique_ptr<BatchSource> make_device_cache_source_cuda(
    io::DatasetReader& reader, const std::function<void(int64_t, int64_t)>& on_load_progress) {
  return std::make_unique<DeviceCacheSource>(reader, on_load_progress);
}

size_t cuda_free_bytes() {
  cuda::stream();
  size_t free_b = 0, total_b = 0;
  TG_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  return free_b;
}

}  // namespace tg::train::detail
