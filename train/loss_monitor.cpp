#include "loss_monitor.h"

#include "../core/cuda_context.h"

namespace tg::train {

LossMonitor::LossMonitor(Device device)
    : device_(device), state_(Tensor::zeros({4}, DType::Float64, device)) {}

void LossMonitor::record(const Tensor& loss, int64_t step, double weight) {
  TG_CHECK(loss.numel() == 1 && loss.device() == device_, "LossMonitor::record: expected a ",
           device_, " tensor of one element, got ", loss.describe());
  if (device_ == Device::CPU) {
    detail::loss_monitor_update(state_.data<double>(), loss.item(), weight, step);
    return;
  }
  TG_IF_CUDA(detail::loss_monitor_record_cuda(state_.data<double>(), loss.raw_data(),
                                              loss.dtype() == DType::Float64, weight, step));
}

LossMonitor::Snapshot LossMonitor::read() const {
  const std::vector<double> s = state_.to_vector<double>();
  return {s[0], int64_t(s[1]), int64_t(s[2]), s[3]};
}

void LossMonitor::reset_epoch(double sum, int64_t count) {
  const Snapshot now = read();
  state_ = Tensor::from_vector<double>(
      {sum, double(count), double(now.first_nonfinite_step), now.first_nonfinite_loss}, {4},
      device_);
}

}  // namespace tg::train
