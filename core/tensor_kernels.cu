// The few kernels core itself needs: fill, y += alpha * x (gradient accumulation), dtype conversion.
// One thread per element, grid-stride loops.
#include "cuda_utils.h"
#include "device_backend.h"

namespace tg::detail {
namespace {

template <typename T>
__global__ void fill_kernel(T* data, int64_t n, T value) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    data[i] = value;
}

template <typename T>
__global__ void axpy_kernel(T* y, const T* x, int64_t n, T alpha) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] += alpha * x[i];
}

template <typename D, typename S>
__global__ void convert_kernel(D* dst, const S* src, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = static_cast<D>(src[i]);
}

}  // namespace

void fill_cuda(void* data, DType dtype, int64_t n, double value) {
  if (n == 0) return;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    fill_kernel<T><<<cuda::grid_for(n), 256, 0, cuda::stream()>>>(static_cast<T*>(data), n, T(value));
  });
  TG_CUDA_CHECK_LAUNCH();
}

void axpy_cuda(void* y, const void* x, DType dtype, int64_t n, double alpha) {
  if (n == 0) return;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    axpy_kernel<T><<<cuda::grid_for(n), 256, 0, cuda::stream()>>>(static_cast<T*>(y),
                                                                   static_cast<const T*>(x), n, T(alpha));
  });
  TG_CUDA_CHECK_LAUNCH();
}

void convert_cuda(void* dst, DType dst_dtype, const void* src, DType src_dtype, int64_t n) {
  if (n == 0) return;
  auto grid = cuda::grid_for(n);
  auto s = cuda::stream();
  if (dst_dtype == DType::Float32 && src_dtype == DType::Float64)
    convert_kernel<<<grid, 256, 0, s>>>(static_cast<float*>(dst), static_cast<const double*>(src), n);
  else if (dst_dtype == DType::Float64 && src_dtype == DType::Float32)
    convert_kernel<<<grid, 256, 0, s>>>(static_cast<double*>(dst), static_cast<const float*>(src), n);
  else
    TG_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * dtype_size(src_dtype), cudaMemcpyDeviceToDevice, s));
  TG_CUDA_CHECK_LAUNCH();
}

}  // namespace tg::detail
