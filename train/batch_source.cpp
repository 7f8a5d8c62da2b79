#include "batch_source.h"

#include "../core/cuda_context.h"
#include "../core/size.h"
#ifdef TG_WITH_CUDA
#include "batch_source_cuda.h"
#endif

namespace tg::train {

DataCache parse_data_cache(const std::string& s) {
  if (s == "auto") return DataCache::Auto;
  if (s == "device") return DataCache::Device;
  if (s == "off") return DataCache::Off;
  TG_THROW("unknown data cache mode '", s, "': expected auto, device or off");
}

const char* data_cache_name(DataCache c) {
  return c == DataCache::Auto ? "auto" : c == DataCache::Device ? "device" : "off";
}

namespace {

// A half-width dataset is cached as its 16-bit values, in 4-byte words (see io::HalfRows).
int64_t cache_bytes(const Shape& shape, io::ElementType stored, DType dtype) {
  if (!io::is_half_width(stored)) return int64_t(checked_nbytes(shape, dtype_size(dtype)));
  return checked_mul((checked_numel(shape) + 1) / 2, int64_t(4), "device cache bytes");
}

}  // namespace

size_t device_cache_bytes(const io::DatasetReader& reader) {
  const io::DatasetInfo& info = reader.info();
  const DType dt = reader.options().dtype;
  return size_t(checked_add(cache_bytes(info.x_shape, info.x_type, dt),
                            cache_bytes(info.y_shape, info.y_type, dt), "device cache bytes"));
}

namespace {

// CPU training: the reader's batches as they are (the reader reads ahead on its own thread).
class HostSource final : public BatchSource {
 public:
  explicit HostSource(io::DatasetReader& reader) : reader_(reader) {}
  void start_epoch(int64_t epoch, int64_t skip) override { reader_.start_epoch(epoch, skip); }
  bool next(io::Batch& out) override { return reader_.next(out); }
  void start_val() override { reader_.start_val(); }
  bool next_val(io::Batch& out) override { return reader_.next_val(out); }
  std::string describe() const override { return "host"; }
  size_t device_bytes() const override { return 0; }

 private:
  io::DatasetReader& reader_;
};

double mib(size_t b) { return double(b) / (1024.0 * 1024.0); }

}  // namespace

std::unique_ptr<BatchSource> make_host_source(io::DatasetReader& reader) {
  return std::make_unique<HostSource>(reader);
}

std::unique_ptr<BatchSource> make_streaming_source([[maybe_unused]] io::DatasetReader& reader) {
  TG_IF_CUDA(return detail::make_streaming_source_cuda(reader));
}

std::unique_ptr<BatchSource> make_device_cache_source(
    [[maybe_unused]] io::DatasetReader& reader,
    [[maybe_unused]] const std::function<void(int64_t, int64_t)>& on_load_progress) {
  TG_IF_CUDA(return detail::make_device_cache_source_cuda(reader, on_load_progress));
}

std::unique_ptr<BatchSource> make_batch_source(io::DatasetReader& reader, Device device,
                                               const BatchSourceOptions& o) {
  if (device == Device::CPU) return make_host_source(reader);
  if (o.cache == DataCache::Off) return make_streaming_source(reader);
  const size_t need = device_cache_bytes(reader);
  size_t free_b = 0;
  TG_IF_CUDA(free_b = detail::cuda_free_bytes());
  if (o.cache == DataCache::Device) {
    TG_CHECK(need + o.step_bytes <= free_b, "--data-cache device: the dataset '",
             reader.options().path, "' needs ", mib(need), " MiB on the GPU and the training step ",
             mib(o.step_bytes), " MiB, but only ", mib(free_b),
             " MiB are free; use --data-cache auto or off to stream it");
    return make_device_cache_source(reader, o.on_load_progress);
  }
  const size_t budget = free_b > o.step_bytes ? (free_b - o.step_bytes) / 2 : 0;
  if (need <= budget) return make_device_cache_source(reader, o.on_load_progress);
  return make_streaming_source(reader);
}

}  // namespace tg::train
