// Mean squared error loss: validation, CPU loops, device dispatch and the autograd node.
//
// L = mean((y - t)^2); saved y and t; dy = 2 (y - t) / numel * g, dt = -dy. The CPU forward
// accumulates in double in index order; the backward computes dy and dt in one loop.
#include "mse_loss.h"

#include <memory>
#include <vector>

#include "../core/autograd.h"
#include "../core/cuda_context.h"
#ifdef TG_WITH_CUDA
#include "../core/cuda_utils.h"
#endif

namespace tg::ops {

namespace detail {

template <typename T>
void mse_loss_forward_cpu(const T* y, const T* t, T* out, int64_t n) {
  double acc = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = double(y[i]) - double(t[i]);
    acc += d * d;
  }
  out[0] = T(acc / double(n));
}

template <typename T>
void mse_loss_backward_cpu(const T* y, const T* t, const T* g, T* dy, T* dt, int64_t n) {
  const T s = T(2.0 * double(g[0]) / double(n));
  for (int64_t i = 0; i < n; ++i) {
    const T d = s * (y[i] - t[i]);
    if (dy) dy[i] = d;
    if (dt) dt[i] = -d;
  }
}

template void mse_loss_forward_cpu<float>(const float*, const float*, float*, int64_t);
template void mse_loss_forward_cpu<double>(const double*, const double*, double*, int64_t);
template void mse_loss_backward_cpu<float>(const float*, const float*, const float*, float*, float*,
                                           int64_t);
template void mse_loss_backward_cpu<double>(const double*, const double*, const double*, double*,
                                            double*, int64_t);

}  // namespace detail

namespace {

void check_mse_inputs(const Tensor& y, const Tensor& t) {
  TG_CHECK(y.defined(), "mse_loss: expected a defined tensor as input, got an undefined tensor");
  TG_CHECK(t.defined(), "mse_loss: expected a defined tensor as target, got an undefined tensor");
  TG_CHECK(y.numel() > 0, "mse_loss: expected a non-empty input, got shape ", y.shape());
  TG_CHECK(y.shape() == t.shape(), "mse_loss: expected target of the same shape as input ",
           y.shape(), ", got ", t.shape());
  TG_CHECK(y.dtype() == t.dtype(), "mse_loss: expected target of the same dtype as input (",
           y.dtype(), "), got ", t.dtype());
  TG_CHECK(y.device() == t.device(), "mse_loss: expected target on the same device as input (",
           y.device(), "), got ", t.device());
}

class MseLossNode : public autograd::Node {
 public:
  const char* name() const override { return "mse_loss"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    const bool want_dy = needs_input_grad(0);
    const bool want_dt = needs_input_grad(1);
    if (!want_dy && !want_dt) return {Tensor(), Tensor()};
    const Tensor& y = saved_y.get("mse_loss");
    const Tensor& t = saved_t.get("mse_loss");
    const Tensor& g = grads[0];
    Tensor dy, dt;
    if (want_dy) dy = Tensor::empty(y.shape(), y.dtype(), y.device());
    if (want_dt) dt = Tensor::empty(y.shape(), y.dtype(), y.device());
    dispatch_dtype(y.dtype(), [&](auto tag) {
      using T = decltype(tag);
      T* dyp = want_dy ? dy.data<T>() : nullptr;
      T* dtp = want_dt ? dt.data<T>() : nullptr;
      if (y.is_cuda()) {
        TG_IF_CUDA(detail::mse_loss_backward_cuda<T>(y.data<T>(), t.data<T>(), g.data<T>(), dyp,
                                                     dtp, y.numel(), cuda::stream()));
      } else {
        detail::mse_loss_backward_cpu<T>(y.data<T>(), t.data<T>(), g.data<T>(), dyp, dtp,
                                         y.numel());
      }
    });
    return {dy, dt};
  }

  void release_saved() override {
    saved_y.release();
    saved_t.release();
  }

  autograd::SavedTensor saved_y;
  autograd::SavedTensor saved_t;
};

}  // namespace

Tensor mse_loss(const Tensor& input, const Tensor& target) {
  check_mse_inputs(input, target);
  const int64_t n = input.numel();
  Tensor loss = Tensor::empty(Shape{}, input.dtype(), input.device());
  dispatch_dtype(input.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if (input.is_cuda()) {
      TG_IF_CUDA({
        Tensor partials = Tensor::empty({detail::mse_loss_blocks(n)}, DType::Float64, Device::CUDA);
        detail::mse_loss_forward_cuda<T>(input.data<T>(), target.data<T>(), loss.data<T>(), n,
                                         partials.data<double>(), cuda::stream());
      });
    } else {
      detail::mse_loss_forward_cpu<T>(input.data<T>(), target.data<T>(), loss.data<T>(), n);
    }
  });
  if (autograd::should_record({input, target})) {
    auto node = std::make_shared<MseLossNode>();
    node->saved_y = autograd::SavedTensor(input);
    node->saved_t = autograd::SavedTensor(target);
    autograd::record(node, {input, target}, {loss});
  }
  return loss;
}

}  // namespace tg::ops
