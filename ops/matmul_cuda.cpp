// cuBLAS side of ops/matmul.h: one cached handle per device, bound to the device's stream at each
// call; row-major products through the column-major identity C^T = op(B)^T op(A)^T.
#include <cublas_v2.h>

#include <mutex>
#include <vector>

#include "../core/cuda_context.h"
#include "../core/cuda_utils.h"
#include "matmul.h"

#define TG_CUBLAS_CHECK(expr)                                                  \
  do {                                                                         \
    cublasStatus_t tg_st_ = (expr);                                            \
    if (tg_st_ != CUBLAS_STATUS_SUCCESS)                                       \
      TG_THROW("cuBLAS error in ", #expr, ": ", cublasGetStatusString(tg_st_)); \
  } while (0)

namespace tg::ops::detail {
namespace {

// Handles live for the process (destroying them at exit could run after the driver shut down).
cublasHandle_t handle_for_current_device() {
  static std::mutex mutex;
  static std::vector<cublasHandle_t> handles;
  const int dev = tg::cuda::current_device();
  std::lock_guard<std::mutex> lock(mutex);
  if (size_t(dev) >= handles.size()) handles.resize(size_t(dev) + 1, nullptr);
  if (!handles[size_t(dev)]) TG_CUBLAS_CHECK(cublasCreate(&handles[size_t(dev)]));
  return handles[size_t(dev)];
}

cublasStatus_t gemm_batched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                            int n, int k, const float* A, int lda, long long sa, const float* B,
                            int ldb, long long sb, float* C, int ldc, long long sc, int batch) {
  const float one = 1.0f, zero = 0.0f;
  return cublasSgemmStridedBatched(h, ta, tb, m, n, k, &one, A, lda, sa, B, ldb, sb, &zero, C, ldc,
                                   sc, batch);
}
cublasStatus_t gemm_batched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                            int n, int k, const double* A, int lda, long long sa, const double* B,
                            int ldb, long long sb, double* C, int ldc, long long sc, int batch) {
  const double one = 1.0, zero = 0.0;
  return cublasDgemmStridedBatched(h, ta, tb, m, n, k, &one, A, lda, sa, B, ldb, sb, &zero, C, ldc,
                                   sc, batch);
}

}  // namespace

template <typename T>
void gemm_cuda(bool ta, bool tb, int64_t batch, int64_t M, int64_t N, int64_t K, const T* A,
               int64_t stride_a, const T* B, int64_t stride_b, T* C, cudaStream_t stream) {
  const int64_t limit = 0x7fffffff;
  TG_CHECK(M <= limit && N <= limit && K <= limit && batch <= limit,
           "matmul: sizes beyond cuBLAS's 32-bit limit (batch ", batch, ", M ", M, ", N ", N, ", K ",
           K, ")");
  cublasHandle_t h = handle_for_current_device();
  TG_CUBLAS_CHECK(cublasSetStream(h, stream));
  TG_CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
  // Column-major view: C^T (N x M) = op(B)^T (N x K) * op(A)^T (K x M).
  TG_CUBLAS_CHECK(gemm_batched(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                               int(N), int(M), int(K), B, int(tb ? K : N), stride_b, A,
                               int(ta ? M : K), stride_a, C, int(N), M * N, int(batch)));
}

template void gemm_cuda<float>(bool, bool, int64_t, int64_t, int64_t, int64_t, const float*, int64_t,
                               const float*, int64_t, float*, cudaStream_t);
template void gemm_cuda<double>(bool, bool, int64_t, int64_t, int64_t, int64_t, const double*,
                                int64_t, const double*, int64_t, double*, cudaStream_t);

}  // namespace tg::ops::detail
