// Internal: the caching allocator's private pools for CUDA graphs (defined in
// core/cuda_context_cuda.cpp, used by core/cuda_graph_cuda.cpp). CUDA builds only.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tg::cuda::detail {

/// A new, empty private pool of device's allocator (ids start at 1).
uint64_t create_graph_pool(int device);
/// The pool's graph is gone: its cached blocks return to the allocator's cache, blocks in use
/// follow when they are freed. Never throws.
void release_graph_pool(int device, uint64_t pool) noexcept;
/// From now on this thread's allocations and frees on device go to pool (0: back to normal).
void set_capture_pool(int device, uint64_t pool) noexcept;
/// The pool this thread captures into (0: none).
uint64_t capture_pool() noexcept;

}  // namespace tg::cuda::detail
