// Watches the training loss without a host sync per step. Each step's loss (a 0-d tensor on the
// training device) is folded into a 4-double state on the same device, in stream order:
//   state = {sum of weight * loss over the epoch's finite losses, their count,
//            the first step whose loss was not finite (0: none yet), that loss}
// On CUDA a one-thread kernel per step (train/loss_monitor.cu) does the update, on the CPU the same
// function runs inline. read() copies the state to the host: the Trainer calls it at logged steps,
// at epoch ends and before every save, so a non-finite loss is never missed and never saved.
#pragma once

#include <cstdint>

#include "../core/tensor.h"

#ifndef TG_HOST_DEVICE
#if defined(__CUDACC__)
#define TG_HOST_DEVICE __host__ __device__
#else
#define TG_HOST_DEVICE
#endif
#endif

namespace tg::train {

class LossMonitor {
 public:
  explicit LossMonitor(Device device);

  /// Folds in the loss of step (a one-element float32/float64 tensor on the monitor's device),
  /// weighted by weight (1 in one process; the rank's share of the global batch under mpirun).
  void record(const Tensor& loss, int64_t step, double weight = 1.0);

  struct Snapshot {
    double sum = 0;
    int64_t count = 0;
    int64_t first_nonfinite_step = 0;  ///< 0: every recorded loss was finite
    double first_nonfinite_loss = 0;
  };
  /// The state on the host (a sync on CUDA).
  Snapshot read() const;
  /// Starts an epoch's sum over with the given values (0, 0; or a resumed epoch's saved ones).
  /// Keeps the non-finite record.
  void reset_epoch(double sum = 0, int64_t count = 0);

 private:
  Device device_;
  Tensor state_;  ///< float64 [4] on device_
};

namespace detail {

/// The update of the state by one loss value, shared by the CPU path and the CUDA kernel.
TG_HOST_DEVICE inline void loss_monitor_update(double* state, double loss, double weight,
                                               int64_t step) {
  const bool finite = loss - loss == 0.0;  // false for NaN and +-Inf
  if (finite) {
    state[0] += weight * loss;
    state[1] += 1.0;
  } else if (state[2] == 0.0) {
    state[2] = double(step);
    state[3] = loss;
  }
}

/// Queues the update on the current device's stream: loss points to one float (or double when
/// is_double) on the device, state to the 4 doubles. Defined in loss_monitor.cu (CUDA builds).
void loss_monitor_record_cuda(double* state, const void* loss, bool is_double, double weight,
                              int64_t step);

}  // namespace detail
}  // namespace tg::train
