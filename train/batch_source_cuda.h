// Internal: the CUDA batch sources (train/batch_source_cuda.cpp) and the gather kernel
// (train/batch_source.cu). Only declared and called when TG_WITH_CUDA is set.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "batch_source.h"

namespace tg::train::detail {

std::unique_ptr<BatchSource> make_streaming_source_cuda(io::DatasetReader& reader);
std::unique_ptr<BatchSource> make_device_cache_source_cuda(
    io::DatasetReader& reader, const std::function<void(int64_t, int64_t)>& on_load_progress);
/// Free device memory in bytes (cudaMemGetInfo).
size_t cuda_free_bytes();

/// dst row i = src row rows[i] for i < n (rows on the device), row_bytes bytes a row, on the
/// current stream.
void gather_rows_cuda(void* dst, const void* src, const int64_t* rows, int64_t n, size_t row_bytes);
/// Widening gather: dst row i (dtype float32 / float64) = src row rows[i] of 16-bit values of type
/// (float16 / bfloat16), row_elems elements a row, on the current stream.
void gather_widen_rows_cuda(void* dst, DType dtype, const uint16_t* src, io::ElementType type,
                            const int64_t* rows, int64_t n, int64_t row_elems);
/// dst[i] = src[i] widened (exactly) for i < n, on `stream`.
void widen_half_cuda(void* dst, DType dtype, const uint16_t* src, io::ElementType type, int64_t n,
                     cudaStream_t stream);
/// Test hook: keeps the current stream busy for about `ms` milliseconds (a spinning kernel), so
/// tests can hold work back and expose ordering bugs.
void spin_stream_cuda(double ms);

}  // namespace tg::train::detail
