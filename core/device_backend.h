// Internal: the raw CUDA functions that core's host code calls. Defined in core/*_cuda.cpp and
// core/tensor_kernels.cu; only declared (and only called) when TG_WITH_CUDA is set.
#pragma once

#include <cstddef>
#include <cstdint>

#include "dtype.h"

namespace tg::detail {

void* cuda_alloc(size_t nbytes);
void cuda_free(void* ptr, size_t nbytes);
void* pinned_alloc(size_t nbytes);
void pinned_free(void* ptr);
/// Copies between host and device (or device and device) on the device stream; waits when the
/// destination is the host.
void cuda_copy(void* dst, bool dst_on_device, const void* src, bool src_on_device, size_t nbytes);

// Kernels of core/tensor_kernels.cu (all on the current stream, asynchronous).
void fill_cuda(void* data, DType dtype, int64_t n, double value);
void axpy_cuda(void* y, const void* x, DType dtype, int64_t n, double alpha);  // y += alpha * x
void convert_cuda(void* dst, DType dst_dtype, const void* src, DType src_dtype, int64_t n);

}  // namespace tg::detail
