// Per-device context (stream, cuDNN handle, properties), created lazily, and the caching allocator.
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "cuda_context.h"
#include "cuda_utils.h"
#include "device_backend.h"
#include "memory.h"

namespace tg::cuda {

namespace {

constexpr int kMaxDevices = 16;
thread_local int t_current_device = 0;
// StreamGuard's stream and the device it applies to (-1: none).
thread_local cudaStream_t t_stream_override = nullptr;
thread_local int t_override_device = -1;

struct Context {
  std::once_flag stream_once, cudnn_once, props_once;
  cudaStream_t stream = nullptr;
  cudnnHandle_t cudnn = nullptr;
  cudaStream_t cudnn_stream = nullptr;  // the stream cudnn is bound to
  cudaDeviceProp props{};
};

// Contexts live for the whole process and are never destroyed: tearing down streams and handles after
// the driver has shut down at exit would fail.
Context& context(int device) {
  static Context* contexts = new Context[kMaxDevices];
  TG_CHECK(device >= 0 && device < kMaxDevices, "cuda: device index ", device, " out of range");
  return contexts[device];
}

// ---- caching allocator --------------------------------------------------------------------------
constexpr size_t kSmallRound = 512;
constexpr size_t kLargeThreshold = size_t(1) << 20;
constexpr size_t kLargeRound = size_t(2) << 20;

size_t round_size(size_t n) {
  if (n < kLargeThreshold) return (n + kSmallRound - 1) / kSmallRound * kSmallRound;
  return (n + kLargeRound - 1) / kLargeRound * kLargeRound;
}

class CachingAllocator {
 public:
  void* allocate(size_t nbytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    size_t size = round_size(nbytes);
    // Best fit among cached blocks, accepting at most 1/8 waste (exact for small blocks).
    auto it = free_.lower_bound(size);
    size_t slack = size < kLargeThreshold ? 0 : size / 8;
    if (it != free_.end() && it->first <= size + slack) {
      void* p = it->second;
      size_t block = it->first;
      free_.erase(it);
      in_use_[p] = block;
      stats_.bytes_in_use += block;
      stats_.cache_hits += 1;
      update_peak();
      return p;
    }
    void* p = nullptr;
    cudaError_t err = cudaMalloc(&p, size);
    if (err != cudaSuccess) {
      cudaGetLastError();
      release_cache_locked();
      err = cudaMalloc(&p, size);
    }
    if (err != cudaSuccess) {
      cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      TG_THROW("CUDA out of memory: tried to allocate ", nbytes, " bytes (", mib(nbytes),
               " MiB); tapegrad tensors hold ", mib(stats_.bytes_in_use), " MiB, the GPU has ",
               mib(free_b), " MiB free of ", mib(total_b), " MiB");
    }
    stats_.cuda_mallocs += 1;
    stats_.bytes_reserved += size;
    in_use_[p] = size;
    stats_.bytes_in_use += size;
    update_peak();
    return p;
  }

  void free(void* p) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = in_use_.find(p);
    if (it == in_use_.end()) {
      std::fprintf(stderr, "tapegrad: cuda free of an unknown pointer %p\n", p);
      return;
    }
    stats_.bytes_in_use -= it->second;
    free_.emplace(it->second, p);
    in_use_.erase(it);
  }

  MemoryStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }
  void reset_peak() {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.peak_bytes = stats_.bytes_in_use;
  }
  void empty_cache() {
    std::lock_guard<std::mutex> lock(mutex_);
    release_cache_locked();
  }

 private:
  static double mib(size_t b) { return double(b) / (1024.0 * 1024.0); }
  void update_peak() {
    if (stats_.bytes_in_use > stats_.peak_bytes) stats_.peak_bytes = stats_.bytes_in_use;
  }
  void release_cache_locked() {
    if (free_.empty()) return;
    cudaDeviceSynchronize();
    for (auto& [size, p] : free_) {
      cudaFree(p);
      stats_.bytes_reserved -= size;
    }
    free_.clear();
  }

  std::mutex mutex_;
  std::multimap<size_t, void*> free_;
  std::unordered_map<void*, size_t> in_use_;
  MemoryStats stats_;
};

CachingAllocator& allocator(int device) {
  static CachingAllocator* allocators = new CachingAllocator[kMaxDevices];
  return allocators[device];
}

}  // namespace

bool is_available() { return device_count() > 0; }

int device_count() {
  static int count = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      cudaGetLastError();  // no driver or no device: "no GPU"
      return 0;
    }
    return n;
  }();
  return count;
}

void set_device(int index) {
  TG_CHECK(index >= 0 && index < device_count(), "cuda::set_device: expected an index in [0, ",
           device_count(), "), got ", index);
  TG_CUDA_CHECK(cudaSetDevice(index));
  t_current_device = index;
}

int current_device() { return t_current_device; }

void synchronize() {
  if (!is_available()) return;
  TG_CUDA_CHECK(cudaStreamSynchronize(stream()));
}

StreamGuard::StreamGuard(void* stream)
    : prev_stream_(t_stream_override), prev_device_(t_override_device) {
  t_stream_override = static_cast<cudaStream_t>(stream);
  t_override_device = t_current_device;
}

StreamGuard::~StreamGuard() {
  t_stream_override = static_cast<cudaStream_t>(prev_stream_);
  t_override_device = prev_device_;
}

cudaStream_t stream() {
  if (t_override_device == t_current_device) return t_stream_override;
  Context& c = context(t_current_device);
  std::call_once(c.stream_once, [&] {
    TG_CHECK(is_available(), "CUDA was asked for, but no usable CUDA device was found");
    TG_CUDA_CHECK(cudaSetDevice(t_current_device));
    TG_CUDA_CHECK(cudaStreamCreateWithFlags(&c.stream, cudaStreamNonBlocking));
  });
  return c.stream;
}

cudnnHandle_t cudnn_handle() {
  Context& c = context(t_current_device);
  std::call_once(c.cudnn_once, [&] {
    TG_CUDNN_CHECK(cudnnCreate(&c.cudnn));
    c.cudnn_stream = stream();
    TG_CUDNN_CHECK(cudnnSetStream(c.cudnn, c.cudnn_stream));
  });
  cudaStream_t s = stream();
  if (s != c.cudnn_stream) {  // a StreamGuard began or ended
    TG_CUDNN_CHECK(cudnnSetStream(c.cudnn, s));
    c.cudnn_stream = s;
  }
  return c.cudnn;
}

const cudaDeviceProp& device_properties() {
  Context& c = context(t_current_device);
  std::call_once(c.props_once,
                 [&] { TG_CUDA_CHECK(cudaGetDeviceProperties(&c.props, t_current_device)); });
  return c.props;
}

MemoryStats memory_stats() {
  if (!is_available()) return {};
  return allocator(t_current_device).stats();
}
void reset_peak_memory() {
  if (is_available()) allocator(t_current_device).reset_peak();
}
void empty_cache() {
  if (is_available()) allocator(t_current_device).empty_cache();
}

}  // namespace tg::cuda

namespace tg::detail {

void* cuda_alloc(size_t nbytes) {
  TG_CHECK(cuda::is_available(), "cannot allocate ", nbytes,
           " bytes on CUDA: no usable CUDA device was found");
  cuda::stream();  // make sure the device is selected and initialised
  return cuda::allocator(cuda::current_device()).allocate(nbytes);
}

void cuda_free(void* ptr, size_t) { cuda::allocator(cuda::current_device()).free(ptr); }

void* pinned_alloc(size_t nbytes) {
  void* p = nullptr;
  TG_CUDA_CHECK(cudaHostAlloc(&p, nbytes, cudaHostAllocDefault));
  return p;
}

void pinned_free(void* ptr) { cudaFreeHost(ptr); }

void cuda_copy(void* dst, bool dst_on_device, const void* src, bool src_on_device, size_t nbytes) {
  if (nbytes == 0) return;
  cudaMemcpyKind kind = dst_on_device ? (src_on_device ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                                      : cudaMemcpyDeviceToHost;
  cudaStream_t s = cuda::stream();
  TG_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, kind, s));
  // A host source may be freed or changed as soon as we return, and a host destination is read next:
  // both need the copy to have finished. Device-to-device copies stay asynchronous.
  if (!dst_on_device || !src_on_device) TG_CUDA_CHECK(cudaStreamSynchronize(s));
}

}  // namespace tg::detail
