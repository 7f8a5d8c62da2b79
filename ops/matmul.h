// Matrix products: matmul(a, b) for 2-D and batched 3-D operands (row-major, contiguous).
//
//   (M, K) @ (K, N) -> (M, N);  (B, M, K) @ (B, K, N) -> (B, M, N);
//   (B, M, K) @ (K, N) -> (B, M, N) (one (B*M, K) @ (K, N) product);
//   (M, K) @ (B, K, N) -> (B, M, N) (a broadcast over the batch).
// Backward: da = dy @ b^T, db = a^T @ dy (summed over the batch for a broadcast operand). Saved: a
// when b needs a gradient, b when a does. CPU: Eigen (row-major maps). CUDA: cuBLAS strided-batched
// GEMM on the device's stream with one cached handle per device; strict FP32/FP64 (no TF32, as
// PyTorch's default for matmul).
#pragma once

#include <cstdint>

#include "../core/tensor.h"

struct CUstream_st;

namespace tg::ops {

/// a @ b (shapes above); a and b agree in dtype and device.
Tensor matmul(const Tensor& a, const Tensor& b);

namespace detail {

/// C[i] = op(A[i]) @ op(B[i]) for i < batch, with op(A[i]) (M, K) and op(B[i]) (K, N); A[i] is stored
/// row-major as (M, K), or (K, M) when ta; B[i] as (K, N), or (N, K) when tb. Strides in elements
/// between batch entries (0 broadcasts). C is (batch, M, N), contiguous.
template <typename T>
void gemm_cpu(bool ta, bool tb, int64_t batch, int64_t M, int64_t N, int64_t K, const T* A,
              int64_t stride_a, const T* B, int64_t stride_b, T* C);
template <typename T>
void gemm_cuda(bool ta, bool tb, int64_t batch, int64_t M, int64_t N, int64_t K, const T* A,
               int64_t stride_a, const T* B, int64_t stride_b, T* C, CUstream_st* stream);

}  // namespace detail
}  // namespace tg::ops
