// The CUDA side of LossMonitor: one thread folds one step's loss into the state (see
// train/loss_monitor.h), queued on the training stream after the loss's own kernels, so no host
// sync happens per step.
#include <cuda_runtime.h>

#include "../core/cuda_utils.h"
#include "loss_monitor.h"

namespace tg::train::detail {

namespace {

template <typename T>
__global__ void loss_monitor_kernel(double* __restrict__ state, const T* __restrict__ loss,
                                    double weight, int64_t step) {
  if (blockIdx.x == 0 && threadIdx.x == 0) loss_monitor_update(state, double(*loss), weight, step);
}

}  // namespace

void loss_monitor_record_cuda(double* state, const void* loss, bool is_double, double weight,
                              int64_t step) {
  cudaStream_t s = cuda::stream();
  if (is_double) {
    loss_monitor_kernel<double>
        <<<1, 1, 0, s>>>(state, static_cast<const double*>(loss), weight, step);
  } else {
    loss_monitor_kernel<float>
        <<<1, 1, 0, s>>>(state, static_cast<const float*>(loss), weight, step);
  }
  TG_CUDA_CHECK_LAUNCH();
}

}  // namespace tg::train::detail
