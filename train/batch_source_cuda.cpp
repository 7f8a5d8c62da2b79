// The CUDA batch sources: streaming (copies on a copy stream, ordered by events) and
// device-resident (the dataset in GPU memory, batches gathered by a kernel).
#include "batch_source_cuda.h"

#include <cstdio>
#include <cstring>

#include "../core/cuda_context.h"
#include "../core/cuda_utils.h"
#include "../core/size.h"

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

/// A device buffer for the 16-bit values of a batch of this shape: a float32 tensor of
/// ceil(numel / 2) elements (see io::HalfRows).
Shape half_buffer_shape(const Shape& s) { return {(checked_numel(s) + 1) / 2}; }

// ---- streaming ---------------------------------------------------------------------------------
//
// Batch k goes to device slot k % 2. Its copy (on copy_) waits for the event `consumed` of that
// slot, recorded on the compute stream once step k - 2 (the slot's last user) was queued; the
// compute stream waits for the event `copied` before step k. The host batch stays referenced (so
// the reader's pool cannot refill its pinned buffer) until its copy is known to have completed.
// Half-width data: the reader hands over the stored 16-bit values; they are copied (half the bytes)
// into a staging buffer of the slot and widened by a kernel on the copy stream, before `copied`.
class StreamingSource final : public BatchSource {
 public:
  explicit StreamingSource(io::DatasetReader& reader) : reader_(reader) {
    cuda::stream();  // selects and initialises the device
    TG_CUDA_CHECK(cudaStreamCreateWithFlags(&copy_, cudaStreamNonBlocking));
    reader_.set_keep_half_width(true);
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
      for (const Tensor* t : {&s.x, &s.y, &s.x_half, &s.y_half})
        if (t->defined()) b += t->nbytes();
    return b;
  }

 private:
  struct Slot {
    Tensor x, y;             // device buffers, as many rows as the largest batch so far
    Tensor x_half, y_half;   // staging for 16-bit values (float32 tensors used as bytes)
    Event copied, consumed;  // copy done (copy stream); last user queued (compute stream)
    bool consumed_valid = false;
    io::Batch host;  // the host batch whose copy may still be in flight
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
      if (holds_host(s) && copy_done(s)) s.host = io::Batch();
    io::Batch hb;
    if (!(val ? reader_.next_val(hb) : reader_.next(hb))) return false;
    Slot& s = slots_[delivered_ % 2];
    if (holds_host(s)) {  // its copy was queued two batches ago; wait before letting it go
      TG_CUDA_CHECK(cudaEventSynchronize(s.copied.get()));
      s.host = io::Batch();
    }
    const Shape xs = hb.x.defined() ? hb.x.shape() : hb.x_half.shape;
    const Shape ys = hb.y.defined() ? hb.y.shape() : hb.y_half.shape;
    const DType dt = reader_.options().dtype;
    bool fresh = false;  // new blocks from the allocator may still be read by queued compute work
    fresh |= ensure(s.x, xs, dt);
    fresh |= ensure(s.y, ys, dt);
    if (hb.x_half.defined()) fresh |= ensure(s.x_half, half_buffer_shape(xs), DType::Float32);
    if (hb.y_half.defined()) fresh |= ensure(s.y_half, half_buffer_shape(ys), DType::Float32);
    if (fresh) {  // so wait for all of it
      TG_CUDA_CHECK(cudaEventRecord(s.consumed.get(), compute));
      s.consumed_valid = true;
    }
    if (s.consumed_valid) TG_CUDA_CHECK(cudaStreamWaitEvent(copy_, s.consumed.get(), 0));
    s.x.bump_version();
    s.y.bump_version();
    upload(s.x, s.x_half, hb.x, hb.x_half);
    upload(s.y, s.y_half, hb.y, hb.y_half);
    TG_CUDA_CHECK(cudaEventRecord(s.copied.get(), copy_));
    TG_CUDA_CHECK(cudaStreamWaitEvent(compute, s.copied.get(), 0));
    copy_metadata(hb, out);
    out.x = s.x.view_rows(0, xs[0]);
    out.y = s.y.view_rows(0, ys[0]);
    s.host = std::move(hb);
    ++delivered_;
    return true;
  }

  // Whether the slot still references a host batch (widened tensors or 16-bit values).
  static bool holds_host(const Slot& s) {
    return s.host.x.defined() || s.host.y.defined() || s.host.x_half.defined() ||
           s.host.y_half.defined();
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

  // Makes buffer able to hold a batch of this shape and dtype (the same shape past dimension 0 and
  // at least as many rows), allocating it anew if needed; true when it did.
  static bool ensure(Tensor& buffer, const Shape& shape, DType dtype) {
    bool fits =
        buffer.defined() && buffer.dtype() == dtype && buffer.dim() == int64_t(shape.size());
    for (size_t d = 1; fits && d < shape.size(); ++d) fits = buffer.size(int64_t(d)) == shape[d];
    if (fits && buffer.size(0) >= shape[0]) return false;
    buffer = Tensor::empty(shape, dtype, Device::CUDA);
    return true;
  }

  // Queues the copy of one host tensor into dst, or of its 16-bit values into staging and their
  // widening into dst, on the copy stream.
  void upload(Tensor& dst, Tensor& staging, const Tensor& host, const io::HalfRows& half) {
    if (host.defined()) {
      TG_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), host.raw_data(), host.nbytes(),
                                    cudaMemcpyHostToDevice, copy_));
      return;
    }
    TG_CUDA_CHECK(cudaMemcpyAsync(staging.raw_data(), half.bytes.raw_data(), half.nbytes(),
                                  cudaMemcpyHostToDevice, copy_));
    widen_half_cuda(dst.raw_data(), dst.dtype(), static_cast<const uint16_t*>(staging.raw_data()),
                    half.type, half.numel(), copy_);
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
    out.x = gather(x_, n, d_rows_ + offsets_[b], targets_.size() == 2 ? targets_[0] : Tensor());
    out.y = gather(y_, n, d_rows_ + offsets_[b], targets_.size() == 2 ? targets_[1] : Tensor());
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
    out.x = val_rows(x_, rows.front(), int64_t(rows.size()));
    out.y = val_rows(y_, rows.front(), int64_t(rows.size()));
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
  size_t device_bytes() const override { return x_.data.nbytes() + y_.data.nbytes(); }
  bool device_resident() const override { return true; }
  void gather_into(const std::vector<Tensor>& buffers) override {
    TG_CHECK(buffers.size() == 2, "device cache: gather_into takes the x and y buffers, got ",
             buffers.size(), " tensors");
    targets_ = buffers;
  }

 private:
  // The cached rows of x or y: elements of the batch dtype, or (half-width data, half the memory)
  // the stored 16-bit values in a float32 tensor used as bytes, widened when a batch is built.
  struct Cached {
    Tensor data;
    Shape shape;  // of the whole dataset, in elements
    io::ElementType type = io::ElementType::Float32;
    int64_t row_elems = 0;
    bool half() const { return io::is_half_width(type); }
    const uint16_t* bits(int64_t row) const {
      return static_cast<const uint16_t*>(data.raw_data()) + row * row_elems;
    }
    size_t row_bytes() const { return size_t(row_elems) * (half() ? 2 : dtype_size(data.dtype())); }
  };

  Cached allocate(const Shape& shape, io::ElementType stored) const {
    Cached c;
    c.shape = shape;
    c.type = io::is_half_width(stored) ? stored : io::element_type_of(reader_.options().dtype);
    c.row_elems = checked_numel(Shape(shape.begin() + 1, shape.end()));
    c.data = c.half() ? Tensor::empty(half_buffer_shape(shape), DType::Float32, Device::CUDA)
                      : Tensor::empty(shape, reader_.options().dtype, Device::CUDA);
    return c;
  }

  // Copies rows [first, first + rows) of a host batch (widened, or 16-bit values) into the cache.
  static void put_rows(Cached& c, int64_t first, int64_t rows, const Tensor& host,
                       const io::HalfRows& half) {
    TG_CHECK(host.defined() != c.half(), "device cache: rows ", first, "..", first + rows - 1,
             " came in the wrong form for a cache of ", io::element_type_name(c.type));
    const void* src = host.defined() ? host.raw_data() : half.bytes.raw_data();
    char* dst = static_cast<char*>(c.data.raw_data()) + size_t(first) * c.row_bytes();
    copy_bytes(dst, Device::CUDA, src, Device::CPU, size_t(rows) * c.row_bytes());
  }

  // Every row of the file (training and validation), in file order, read through a second reader
  // in chunks of about 256 MiB into pinned buffers (it reads the next chunk while this one copies).
  void load(const std::function<void(int64_t, int64_t)>& on_progress) {
    const io::DatasetInfo& info = reader_.info();
    x_ = allocate(info.x_shape, info.x_type);
    y_ = allocate(info.y_shape, info.y_type);
    const int64_t n = reader_.num_samples();
    const size_t row_bytes = x_.row_bytes() + y_.row_bytes();
    io::DatasetReaderOptions lo = reader_.options();
    lo.keep_half_width = true;
    lo.shuffle = false;
    lo.shard_index = 0;
    lo.shard_count = 1;
    lo.drop_last = false;
    lo.prefetch = true;
    lo.pinned = true;
    lo.batch_size =
        std::max<int64_t>(1, int64_t((size_t(256) << 20) / std::max<size_t>(row_bytes, 1)));
    io::DatasetReader loader(lo);
    int64_t done = 0;
    auto put = [&](const io::Batch& b) {
      const int64_t first = b.indices.front(), rows = int64_t(b.indices.size());
      put_rows(x_, first, rows, b.x, b.x_half);
      put_rows(y_, first, rows, b.y, b.y_half);
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

  // Rows `rows` (n of them, on the device) of the cache as a batch: in `target` when it has the
  // batch's shape and dtype (ordered after its last reader: both on the compute stream), else new.
  Tensor gather(const Cached& c, int64_t n, const int64_t* rows, Tensor target) const {
    Shape s = c.shape;
    s[0] = n;
    const DType dt = reader_.options().dtype;
    const bool reuse = target.defined() && target.shape() == s && target.dtype() == dt &&
                       target.device() == Device::CUDA;
    Tensor out = reuse ? target : Tensor::empty(s, dt, Device::CUDA);
    if (reuse) out.bump_version();
    if (c.half())
      gather_widen_rows_cuda(out.raw_data(), dt, c.bits(0), c.type, rows, n, c.row_elems);
    else
      gather_rows_cuda(out.raw_data(), c.data.raw_data(), rows, n, c.row_bytes());
    return out;
  }

  // Consecutive rows: a view of the cache, or their 16-bit values widened into a new tensor.
  Tensor val_rows(const Cached& c, int64_t first, int64_t n) const {
    if (!c.half()) return c.data.view_rows(first, n);
    Shape s = c.shape;
    s[0] = n;
    Tensor out = Tensor::empty(s, reader_.options().dtype, Device::CUDA);
    widen_half_cuda(out.raw_data(), out.dtype(), c.bits(first), c.type, out.numel(),
                    cuda::stream());
    return out;
  }

  io::DatasetReader& reader_;
  Cached x_, y_;
  int64_t* d_rows_ = nullptr;  // the epoch's batch rows, concatenated, on the device
  int64_t* h_rows_ = nullptr;  // pinned staging for their upload
  Event uploaded_;
  std::vector<std::vector<int64_t>> batches_, val_;
  std::vector<size_t> offsets_;
  std::vector<Tensor> targets_;  // gather_into's buffers (x, y), or none
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
