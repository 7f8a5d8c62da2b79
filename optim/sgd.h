// Stochastic gradient descent with PyTorch's update rule (torch.optim.SGD), for one parameter group.
//
// For each parameter p whose gradient is defined (parameters without a gradient are skipped):
//   g = grad + weight_decay * p
//   if momentum != 0:
//     buf = g                                      on the parameter's first update (a copy)
//     buf = momentum * buf + (1 - dampening) * g   after it
//     g = nesterov ? g + momentum * buf : buf
//   p = p - lr * g
// Arithmetic is done in the parameter's dtype, with the hyperparameters rounded to it (as PyTorch).
// Parameters are updated in place and their version counter is bumped.
//
// CPU: one plain loop per parameter. CUDA: all parameters in ONE kernel launch per step (multi-tensor
// apply): a table of per-tensor descriptors {param, grad, buf, numel, first chunk, first-update flag,
// dtype} lives in device memory; blocks walk the global list of 4096-element chunks (grid-stride)
// and find their tensor by binary search in the table. The table is uploaded from pinned staging with
// cudaMemcpyAsync only when it differs from the previous step's, so a warm step with unchanged
// pointers does no host sync, no upload and no allocation.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../core/memory.h"
#include "../core/tensor.h"
#include "optimizer.h"

struct CUstream_st;  // cudaStream_t is CUstream_st*; declared here so no CUDA header is needed
struct CUevent_st;   // cudaEvent_t is CUevent_st*

#ifndef TG_HOST_DEVICE
#if defined(__CUDACC__)
#define TG_HOST_DEVICE __host__ __device__
#else
#define TG_HOST_DEVICE
#endif
#endif

namespace tg::optim {

struct SGDOptions {
  double lr = 0.01;
  double momentum = 0;
  double dampening = 0;
  bool nesterov = false;
  double weight_decay = 0;
};

/// What SGD needs to resume: the number of step() calls and the momentum buffers by parameter name.
/// A parameter whose buffer does not exist yet (no momentum, or never updated) is absent.
struct SGDState {
  int64_t step = 0;
  std::vector<std::pair<std::string, Tensor>> momentum_buffers;
};

namespace detail {
class SgdDeviceTable;
}

class SGD : public Optimizer {
 public:
  /// params: distinct leaf tensors that require grad, float32 or float64, all on one device.
  /// They are named "0", "1", ... in the state. Throws tg::Error on invalid options or parameters.
  SGD(std::vector<Tensor> params, SGDOptions options = {});
  /// Named parameters (for example a module's named_parameters()); names must be unique and
  /// non-empty; they key the momentum buffers in state().
  SGD(std::vector<std::pair<std::string, Tensor>> named_params, SGDOptions options = {});

  /// One update of every parameter with a defined gradient (under NoGradGuard). Checks that each
  /// gradient matches its parameter's shape, dtype and device before anything is modified.
  void step() override;
  /// set_to_none (the default, as PyTorch): makes every gradient undefined, so the next backward
  /// allocates fresh ones. Otherwise fills the defined gradients with zeros.
  void zero_grad(bool set_to_none = true) override;
  /// One group: its learning rate is options().lr.
  size_t num_groups() const override { return 1; }
  double group_lr(size_t g) const override;
  void set_group_lr(size_t g, double lr) override;

  /// Copies of the momentum buffers (on the parameters' device) and the step count.
  SGDState state() const;
  /// Replaces the optimizer state. Every buffer must name a parameter and have its shape (buffers
  /// are copied and converted to the parameter's dtype and device); parameters absent from state get
  /// no buffer (their next update starts one). Checks everything before changing anything.
  void load_state(const SGDState& state);

  const SGDOptions& options() const { return options_; }
  /// Changes the learning rate (for schedules); throws on lr < 0.
  void set_lr(double lr);
  /// Number of step() calls so far (or as loaded).
  int64_t step_count() const { return step_; }
  const std::vector<Tensor>& params() const { return params_; }
  const std::vector<std::string>& names() const { return names_; }
  /// CUDA diagnostics: how many times the descriptor table was uploaded (0 on the CPU). Warm steps
  /// with unchanged parameter, gradient and buffer pointers upload nothing.
  uint64_t descriptor_uploads() const;

 private:
  void init(std::vector<std::pair<std::string, Tensor>> named_params);
  void step_cpu(const std::vector<size_t>& active, const std::vector<bool>& fresh);
  void step_cuda(const std::vector<size_t>& active, const std::vector<bool>& fresh);

  SGDOptions options_;
  std::vector<Tensor> params_;
  std::vector<std::string> names_;
  std::vector<Tensor> buffers_;  ///< momentum buffers, undefined until a parameter's first update
  int64_t step_ = 0;
  Device device_ = Device::CPU;
  std::shared_ptr<detail::SgdDeviceTable> table_;  ///< CUDA only, created on the first CUDA step
};

namespace detail {

/// Hyperparameters as passed to the update loops (one_minus_dampening is computed in double).
struct SgdHyper {
  double lr = 0;
  double momentum = 0;
  double one_minus_dampening = 1;
  double weight_decay = 0;
  bool nesterov = false;
};

/// The update of one element, shared by the CPU loop and the CUDA kernel. buf is null without
/// momentum; fresh marks the parameter's first update (buf = g).
template <typename T>
TG_HOST_DEVICE inline void sgd_update_element(T& p, T g, T* buf, bool fresh, T lr, T momentum,
                                              T one_minus_dampening, T weight_decay,
                                              bool nesterov) {
  if (weight_decay != T(0)) g = g + weight_decay * p;
  if (buf != nullptr) {
    T b = fresh ? g : momentum * *buf + one_minus_dampening * g;
    *buf = b;
    g = nesterov ? g + momentum * b : b;
  }
  p = p - lr * g;
}

/// CPU update of n elements of one parameter (buf null when momentum is 0).
template <typename T>
void sgd_step_cpu(T* param, const T* grad, T* buf, int64_t n, bool fresh, const SgdHyper& h);

/// One tensor of the CUDA multi-tensor update (48 bytes, no padding: compared with memcmp).
struct SgdTensorDesc {
  void* param = nullptr;
  const void* grad = nullptr;
  void* buf = nullptr;         ///< null when momentum is 0
  int64_t numel = 0;           ///< > 0
  int64_t chunk_begin = 0;     ///< index of this tensor's first chunk in the global chunk list
  int32_t fresh = 0;           ///< 1: first update, buf = g
  int32_t is_double = 0;       ///< 0: float32, 1: float64
};

/// Elements per chunk of the multi-tensor kernel.
constexpr int64_t kSgdChunk = 4096;

/// Launches the multi-tensor update on stream: device_table holds num_tensors descriptors sorted by
/// chunk_begin, covering total_chunks chunks.
void sgd_multi_tensor_step_cuda(const SgdTensorDesc* device_table, int64_t num_tensors,
                                int64_t total_chunks, const SgdHyper& h, CUstream_st* stream);

class SgdDeviceTable;

/// The CUDA step: brings table up to date with descs (sorted by chunk_begin, non-empty) and launches
/// the multi-tensor kernel, both on tg::cuda::stream(). Defined in sgd.cu (CUDA builds only).
void sgd_step_cuda(SgdDeviceTable& table, const std::vector<SgdTensorDesc>& descs,
                   int64_t total_chunks, const SgdHyper& h);

/// The device copy of the descriptor table. update() uploads only when the descriptors differ from
/// the last upload, through one of two pinned staging slots; a slot is rewritten only after an event
/// shows its previous copy has finished. Defined in sgd.cu (CUDA builds only).
class SgdDeviceTable {
 public:
  explicit SgdDeviceTable(size_t capacity);
  ~SgdDeviceTable();
  SgdDeviceTable(const SgdDeviceTable&) = delete;
  SgdDeviceTable& operator=(const SgdDeviceTable&) = delete;

  /// Returns the device pointer of a table equal to descs (descs.size() <= capacity).
  const SgdTensorDesc* update(const std::vector<SgdTensorDesc>& descs, CUstream_st* stream);
  /// Number of uploads so far (a warm step with unchanged pointers adds none).
  uint64_t uploads() const { return uploads_; }

 private:
  size_t capacity_ = 0;
  std::shared_ptr<Storage> device_;
  std::shared_ptr<Storage> staging_[2];
  CUevent_st* copied_[2] = {nullptr, nullptr};
  bool pending_[2] = {false, false};
  int next_slot_ = 0;
  std::vector<SgdTensorDesc> current_;
  bool valid_ = false;
  uint64_t uploads_ = 0;
};

}  // namespace detail
}  // namespace tg::optim
