// AdamW with PyTorch's update rule (torch.optim.AdamW, amsgrad=False, maximize=False), with
// parameter groups (per-group lr and weight decay).
//
// For each parameter p with gradient g (parameters without a gradient are skipped and their step
// count does not advance), with t its own step count after incrementing:
//   p = p * (1 - lr * weight_decay)
//   m = m + (1 - beta1) * (g - m)              (lerp; m and v start at zero)
//   v = beta2 * v + (1 - beta2) * g * g
//   p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// The bias corrections are computed in double on the host; the element update in the parameter's
// dtype. CPU: one loop per parameter. CUDA: multi-tensor apply as optim/sgd.cu, with the per-tensor
// descriptors passed as kernel arguments: one launch per step for up to kAdamWTensorsPerLaunch
// parameters (one more launch per further block of that many).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "../core/tensor.h"
#include "optimizer.h"

struct CUstream_st;

#ifndef TG_HOST_DEVICE
#if defined(__CUDACC__)
#define TG_HOST_DEVICE __host__ __device__
#else
#define TG_HOST_DEVICE
#endif
#endif

namespace tg::optim {

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
};

/// A parameter group: its parameters and, when set (>= 0), its own lr and weight decay; unset
/// values take the optimizer's defaults.
struct ParamGroup {
  std::vector<std::pair<std::string, Tensor>> params;
  double lr = -1;
  double weight_decay = -1;
};

class AdamW : public Optimizer {
 public:
  /// One group of named parameters (for example a module's named_parameters()).
  AdamW(std::vector<std::pair<std::string, Tensor>> named_params, AdamWOptions options = {});
  /// Several groups; names must be unique across groups.
  AdamW(std::vector<ParamGroup> groups, AdamWOptions options);

  void step() override;
  void zero_grad(bool set_to_none = true) override;
  size_t num_groups() const override { return groups_.size(); }
  double group_lr(size_t g) const override;
  void set_group_lr(size_t g, double lr) override;
  double group_weight_decay(size_t g) const;

  const AdamWOptions& options() const { return options_; }
  /// The step count of parameter i (in construction order) and its moment estimates (undefined
  /// before its first update).
  int64_t param_step(size_t i) const { return steps_.at(i); }
  const Tensor& exp_avg(size_t i) const { return exp_avg_.at(i); }
  const Tensor& exp_avg_sq(size_t i) const { return exp_avg_sq_.at(i); }

 private:
  struct Group {
    double lr, weight_decay;
    std::vector<size_t> params;  ///< indices into params_
  };
  std::vector<Group> groups_;
  AdamWOptions options_;
  std::vector<Tensor> params_;
  std::vector<std::string> names_;
  std::vector<Tensor> exp_avg_, exp_avg_sq_;
  std::vector<int64_t> steps_;
  Device device_ = Device::CPU;
};

namespace detail {

/// Per-tensor scalars of one AdamW update (computed on the host in double).
struct AdamWScalars {
  double decay = 1;       ///< 1 - lr * weight_decay
  double step_size = 0;   ///< lr / (1 - beta1^t)
  double bc2_sqrt = 1;    ///< sqrt(1 - beta2^t)
};

/// The update of one element, shared by the CPU loop and the CUDA kernel.
template <typename T>
TG_HOST_DEVICE inline void adamw_update_element(T& p, T g, T& m, T& v, T decay, T one_minus_beta1,
                                                T beta2, T one_minus_beta2, T step_size,
                                                T bc2_sqrt, T eps) {
  using std::sqrt;
  p = p * decay;
  m = m + one_minus_beta1 * (g - m);
  v = beta2 * v + one_minus_beta2 * g * g;
  p = p - step_size * (m / (sqrt(v) / bc2_sqrt + eps));
}

template <typename T>
void adamw_step_cpu(T* p, const T* g, T* m, T* v, int64_t n, const AdamWScalars& s,
                    const AdamWOptions& o);

/// One tensor of the CUDA multi-tensor update.
struct AdamWTensorDesc {
  void* param = nullptr;
  const void* grad = nullptr;
  void* exp_avg = nullptr;
  void* exp_avg_sq = nullptr;
  int64_t numel = 0;
  int64_t chunk_begin = 0;
  AdamWScalars s;
  int32_t is_double = 0;
};

constexpr int kAdamWTensorsPerLaunch = 40;  ///< keeps the kernel arguments under 4 KB
constexpr int64_t kAdamWChunk = 4096;

struct AdamWLaunch {
  AdamWTensorDesc tensors[kAdamWTensorsPerLaunch];
  int32_t num_tensors = 0;
  int64_t total_chunks = 0;
};

/// One launch over the tensors of launch (defined in adamw.cu, CUDA builds only).
void adamw_multi_tensor_step_cuda(const AdamWLaunch& launch, const AdamWOptions& o,
                                  CUstream_st* stream);

}  // namespace detail
}  // namespace tg::optim
