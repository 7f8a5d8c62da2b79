// Per-device context (stream, cuDNN handle, properties), created lazily, and the caching allocator.
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "cuda_context.h"
#include "cuda_graph.h"
#include "cuda_graph_pool.h"
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
// The private pool this thread captures a CUDA graph into, and its device (core/cuda_graph.h).
thread_local uint64_t t_capture_pool = 0;
thread_local int t_capture_device = -1;

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

// Blocks live in free lists keyed by size: the shared cache (free_), or the private pool of a CUDA
// graph (core/cuda_graph.h). A thread that captures passes its pool to allocate and free: it is
// served from the pool, then from the shared cache (the block moves into the pool), then by
// cudaMalloc; every block it frees joins the pool. Pool blocks go back to the shared cache only
// once their graph has released the pool.
class CachingAllocator {
 public:
  void* allocate(size_t nbytes, uint64_t capture_pool) {
    std::lock_guard<std::mutex> lock(mutex_);
    size_t size = round_size(nbytes);
    if (capture_pool != 0) {
      Pool& pool = pools_.at(capture_pool);
      if (void* p = take(pool.free, size, capture_pool)) return p;
      if (void* p = take(free_, size, capture_pool)) {
        adopt(pool, in_use_.at(p).size);
        return p;
      }
    } else if (void* p = take(free_, size, 0)) {
      return p;
    }
    void* p = nullptr;
    cudaError_t err = malloc_block(&p, size, capture_pool != 0);
    if (err != cudaSuccess && capture_pool == 0) {
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
               mib(free_b), " MiB free of ", mib(total_b), " MiB",
               capture_pool != 0 ? " (during a CUDA graph capture, where the cache is not emptied)"
                                 : "");
    }
    stats_.cuda_mallocs += 1;
    stats_.bytes_reserved += size;
    in_use_[p] = Block{size, capture_pool};
    if (capture_pool != 0) adopt(pools_.at(capture_pool), size);
    stats_.bytes_in_use += size;
    update_peak();
    return p;
  }

  void free(void* p, uint64_t capture_pool) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = in_use_.find(p);
    if (it == in_use_.end()) {
      std::fprintf(stderr, "tapegrad: cuda free of an unknown pointer %p\n", p);
      return;
    }
    Block b = it->second;
    in_use_.erase(it);
    stats_.bytes_in_use -= b.size;
    // A block freed during a capture may be used by a recorded kernel: the capturing graph keeps
    // it, unless another live graph's pool holds it already (then that one keeps it).
    if (capture_pool != 0 && b.pool != capture_pool &&
        (b.pool == 0 || pools_.at(b.pool).released)) {
      if (b.pool != 0) disown(b.pool, b.size);
      b.pool = capture_pool;
      adopt(pools_.at(capture_pool), b.size);
    }
    if (b.pool != 0) {
      Pool& pool = pools_.at(b.pool);
      if (!pool.released) {
        pool.free.emplace(b.size, p);
        return;
      }
      disown(b.pool, b.size);
    }
    free_.emplace(b.size, p);
  }

  uint64_t create_pool() {
    std::lock_guard<std::mutex> lock(mutex_);
    const uint64_t id = next_pool_++;
    pools_[id];
    return id;
  }

  void release_pool(uint64_t id) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = pools_.find(id);
    if (it == pools_.end()) return;
    it->second.released = true;
    std::multimap<size_t, void*> cached;
    cached.swap(it->second.free);
    for (auto& [size, p] : cached) {
      disown(id, size);  // erases the pool with its last block
      free_.emplace(size, p);
    }
    auto left = pools_.find(id);
    if (left != pools_.end() && left->second.bytes == 0) pools_.erase(left);
  }

  size_t pool_bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return pool_bytes_;
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
  struct Block {
    size_t size = 0;
    uint64_t pool = 0;  // 0: the shared cache
  };
  struct Pool {
    std::multimap<size_t, void*> free;
    size_t bytes = 0;       // blocks owned by the pool, in use or cached
    bool released = false;  // its graph is gone
  };

  static double mib(size_t b) { return double(b) / (1024.0 * 1024.0); }
  void update_peak() {
    if (stats_.bytes_in_use > stats_.peak_bytes) stats_.peak_bytes = stats_.bytes_in_use;
  }
  // Best fit among the blocks of list, accepting at most 1/8 waste (exact for small blocks); the
  // block is marked in use, owned by pool (0: the shared cache).
  void* take(std::multimap<size_t, void*>& list, size_t size, uint64_t pool) {
    auto it = list.lower_bound(size);
    const size_t slack = size < kLargeThreshold ? 0 : size / 8;
    if (it == list.end() || it->first > size + slack) return nullptr;
    void* p = it->second;
    const size_t block = it->first;
    list.erase(it);
    in_use_[p] = Block{block, pool};
    stats_.bytes_in_use += block;
    stats_.cache_hits += 1;
    update_peak();
    return p;
  }
  void adopt(Pool& pool, size_t size) {
    pool.bytes += size;
    pool_bytes_ += size;
  }
  void disown(uint64_t id, size_t size) {
    Pool& pool = pools_.at(id);
    pool.bytes -= size;
    pool_bytes_ -= size;
    if (pool.released && pool.bytes == 0) pools_.erase(id);
  }
  // cudaMalloc; during a capture in relaxed mode for this thread, because ThreadLocal capture mode
  // refuses cudaMalloc as "potentially unsafe" although it enqueues nothing on the stream.
  static cudaError_t malloc_block(void** p, size_t size, bool capturing) {
    cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    if (capturing) cudaThreadExchangeStreamCaptureMode(&mode);
    const cudaError_t err = cudaMalloc(p, size);
    if (capturing) cudaThreadExchangeStreamCaptureMode(&mode);
    return err;
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
  std::unordered_map<void*, Block> in_use_;
  std::unordered_map<uint64_t, Pool> pools_;
  uint64_t next_pool_ = 1;
  size_t pool_bytes_ = 0;
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
  TG_CHECK(!is_capturing(), "cuda::synchronize() during a CUDA graph capture: waiting for the device "
           "cannot be recorded in a graph; synchronize outside the captured function");
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
  if (!is_available()) return;
  TG_CHECK(!is_capturing(), "cuda::empty_cache() during a CUDA graph capture: freeing memory waits "
           "for the device; call it outside the captured function");
  allocator(t_current_device).empty_cache();
}

bool is_capturing() {
  if (t_capture_pool != 0) return true;
  if (!is_available()) return false;
  // A capture that tapegrad did not start (a host framework's, on a StreamGuard stream).
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream(), &status) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return status != cudaStreamCaptureStatusNone;
}

size_t graph_pool_bytes() {
  if (!is_available()) return 0;
  return allocator(t_current_device).pool_bytes();
}

namespace detail {

uint64_t create_graph_pool(int device) { return allocator(device).create_pool(); }

void release_graph_pool(int device, uint64_t pool) noexcept {
  if (pool != 0) allocator(device).release_pool(pool);
}

void set_capture_pool(int device, uint64_t pool) noexcept {
  t_capture_pool = pool;
  t_capture_device = pool != 0 ? device : -1;
}

uint64_t capture_pool() noexcept { return t_capture_pool; }

}  // namespace detail

}  // namespace tg::cuda

namespace tg::detail {

void* cuda_alloc(size_t nbytes) {
  TG_CHECK(cuda::is_available(), "cannot allocate ", nbytes,
           " bytes on CUDA: no usable CUDA device was found");
  cuda::stream();  // make sure the device is selected and initialised
  const int device = cuda::current_device();
  return cuda::allocator(device).allocate(nbytes, device == cuda::t_capture_device ? cuda::t_capture_pool : 0);
}

void cuda_free(void* ptr, size_t) {
  const int device = cuda::current_device();
  cuda::allocator(device).free(ptr, device == cuda::t_capture_device ? cuda::t_capture_pool : 0);
}

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
  // Such a copy reads or writes the host now, and waits: in a graph it would do neither at replay.
  if (!dst_on_device || !src_on_device)
    TG_CHECK(!cuda::is_capturing(), "a copy of ", nbytes, " bytes ",
             dst_on_device ? "from the host to the device" : "from the device to the host",
             " during a CUDA graph capture (item(), to_vector(), cpu(), to(), from_vector() or "
             "copy_() between host and device in the captured function): a replay would not repeat "
             "it; move it out of the captured function");
  TG_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, kind, s));
  // A host source may be freed or changed as soon as we return, and a host destination is read next:
  // both need the copy to have finished. Device-to-device copies stay asynchronous.
  if (!dst_on_device || !src_on_device) TG_CUDA_CHECK(cudaStreamSynchronize(s));
}

}  // namespace tg::detail
