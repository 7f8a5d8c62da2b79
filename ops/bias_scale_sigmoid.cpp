// bias_scale_sigmoid: s = sigmoid((z + bias_c) * scale_c), NCHW; see ops/bias_scale_sigmoid.h.
// Validation, dispatch, the CPU path (OpenMP over the N * C planes, sums in double) and the
// autograd node, which saves z, bias and scale and recomputes s in the backward.
#include "bias_scale_sigmoid.h"

#include <cmath>
#include <memory>
#include <vector>

#include "../core/autograd.h"
#include "../core/cuda_context.h"
#include "../core/error.h"

#ifdef TG_WITH_CUDA
#include "../core/cuda_utils.h"
#endif

namespace tg::ops {
namespace detail {

namespace {
template <typename T>
inline T sigmoid(T u) {
  return T(1) / (T(1) + std::exp(-u));
}
}  // namespace

template <typename T>
void bias_scale_sigmoid_forward_cpu(const BiasScaleSigmoidParams& p, const T* z, const T* bias,
                                    const T* scale, T* s) {
  const int64_t planes = p.N * p.C;
  const int64_t HxW = p.HxW;
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < planes; ++pl) {
    const int64_t c = pl % p.C;
    const T b = bias[c], k = scale[c];
    const T* zp = z + pl * HxW;
    T* sp = s + pl * HxW;
    for (int64_t i = 0; i < HxW; ++i) sp[i] = sigmoid((zp[i] + b) * k);
  }
}

template <typename T>
void bias_scale_sigmoid_backward_cpu(const BiasScaleSigmoidParams& p, const T* ds, const T* z,
                                     const T* bias, const T* scale, T* dz, T* dbias, T* dscale) {
  const int64_t planes = p.N * p.C;
  const int64_t HxW = p.HxW;
  const bool reduce = dbias != nullptr || dscale != nullptr;
  if (dz == nullptr && !reduce) return;
  // Per-plane sums of du and du * (z + bias), in double; summed over n below in a fixed order.
  std::vector<double> sum_du(reduce ? planes : 0), sum_du_zb(reduce ? planes : 0);
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < planes; ++pl) {
    const int64_t c = pl % p.C;
    const T b = bias[c], k = scale[c];
    const T* zp = z + pl * HxW;
    const T* dsp = ds + pl * HxW;
    T* dzp = dz ? dz + pl * HxW : nullptr;
    double a1 = 0, a2 = 0;
    for (int64_t i = 0; i < HxW; ++i) {
      const T zb = zp[i] + b;
      const T sv = sigmoid(zb * k);
      const T du = dsp[i] * sv * (T(1) - sv);
      if (dzp) dzp[i] = du * k;
      a1 += double(du);
      a2 += double(du) * double(zb);
    }
    if (reduce) {
      sum_du[pl] = a1;
      sum_du_zb[pl] = a2;
    }
  }
  if (!reduce) return;
  for (int64_t c = 0; c < p.C; ++c) {
    double a1 = 0, a2 = 0;
    for (int64_t n = 0; n < p.N; ++n) {
      a1 += sum_du[n * p.C + c];
      a2 += sum_du_zb[n * p.C + c];
    }
    if (dbias) dbias[c] = T(double(scale[c]) * a1);
    if (dscale) dscale[c] = T(a2);
  }
}

template void bias_scale_sigmoid_forward_cpu<float>(const BiasScaleSigmoidParams&, const float*,
                                                    const float*, const float*, float*);
template void bias_scale_sigmoid_forward_cpu<double>(const BiasScaleSigmoidParams&, const double*,
                                                     const double*, const double*, double*);
template void bias_scale_sigmoid_backward_cpu<float>(const BiasScaleSigmoidParams&, const float*,
                                                     const float*, const float*, const float*,
                                                     float*, float*, float*);
template void bias_scale_sigmoid_backward_cpu<double>(const BiasScaleSigmoidParams&, const double*,
                                                      const double*, const double*, const double*,
                                                      double*, double*, double*);

}  // namespace detail

namespace {

constexpr const char* kOp = "bias_scale_sigmoid";

// bias / scale: (C, 1, 1) or (C), same dtype and device as z.
void check_channel_param(const Tensor& t, const char* what, const Tensor& z, int64_t C) {
  TG_CHECK(t.defined(), kOp, ": expected a defined ", what, " tensor of shape (", C, ", 1, 1) or (",
           C, "), got an undefined tensor");
  const Shape& s = t.shape();
  const bool ok =
      (s.size() == 3 && s[0] == C && s[1] == 1 && s[2] == 1) || (s.size() == 1 && s[0] == C);
  TG_CHECK(ok, kOp, ": expected ", what, " of shape (", C, ", 1, 1) or (", C, ") for z of shape ",
           z.shape(), ", got ", s);
  TG_CHECK(t.dtype() == z.dtype(), kOp, ": expected ", what, " of dtype ", z.dtype(),
           " (the dtype of z), got ", t.dtype());
  TG_CHECK(t.device() == z.device(), kOp, ": expected ", what, " on device ", z.device(),
           " (the device of z), got ", t.device());
}

detail::BiasScaleSigmoidParams check_inputs(const Tensor& z, const Tensor& bias,
                                            const Tensor& scale) {
  TG_CHECK(z.defined(), kOp,
           ": expected a defined input z of shape (N, C, H, W), got an undefined tensor");
  TG_CHECK(z.dim() == 4, kOp, ": expected z of shape (N, C, H, W), got ", z.shape());
  TG_CHECK(z.numel() > 0, kOp, ": expected a non-empty z, got shape ", z.shape());
  detail::BiasScaleSigmoidParams p;
  p.N = z.size(0);
  p.C = z.size(1);
  p.HxW = z.size(2) * z.size(3);
  check_channel_param(bias, "bias", z, p.C);
  check_channel_param(scale, "scale", z, p.C);
  return p;
}

class BiasScaleSigmoidNode : public autograd::Node {
 public:
  const char* name() const override { return kOp; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
    const Tensor& z = z_.get(kOp);
    const Tensor& bias = bias_.get(kOp);
    const Tensor& scale = scale_.get(kOp);
    BiasScaleSigmoidGrads g =
        bias_scale_sigmoid_backward(grad_outputs.at(0), z, bias, scale, needs_input_grad(0),
                                    needs_input_grad(1), needs_input_grad(2));
    return {g.dz, g.dbias, g.dscale};
  }

  void release_saved() override {
    z_.release();
    bias_.release();
    scale_.release();
  }

  autograd::SavedTensor z_, bias_, scale_;
};

}  // namespace

Tensor bias_scale_sigmoid(const Tensor& z, const Tensor& bias, const Tensor& scale) {
  const detail::BiasScaleSigmoidParams p = check_inputs(z, bias, scale);
  Tensor s = Tensor::empty(z.shape(), z.dtype(), z.device());
  dispatch_dtype(z.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if (z.is_cuda()) {
      TG_IF_CUDA(detail::bias_scale_sigmoid_forward_cuda<T>(
          p, z.data<T>(), bias.data<T>(), scale.data<T>(), s.data<T>(), cuda::stream()));
    } else {
      detail::bias_scale_sigmoid_forward_cpu<T>(p, z.data<T>(), bias.data<T>(), scale.data<T>(),
                                                s.data<T>());
    }
  });
  if (autograd::should_record({z, bias, scale})) {
    auto node = std::make_shared<BiasScaleSigmoidNode>();
    node->z_ = autograd::SavedTensor(z);
    node->bias_ = autograd::SavedTensor(bias);
    node->scale_ = autograd::SavedTensor(scale);
    autograd::record(node, {z, bias, scale}, {s});
  }
  return s;
}

BiasScaleSigmoidGrads bias_scale_sigmoid_backward(const Tensor& ds, const Tensor& z,
                                                  const Tensor& bias, const Tensor& scale,
                                                  bool need_dz, bool need_dbias, bool need_dscale) {
  const detail::BiasScaleSigmoidParams p = check_inputs(z, bias, scale);
  TG_CHECK(ds.defined(), kOp, ": backward expected a defined gradient ds of shape ", z.shape(),
           ", got an undefined tensor");
  TG_CHECK(ds.shape() == z.shape(), kOp, ": backward expected ds of shape ", z.shape(), ", got ",
           ds.shape());
  TG_CHECK(ds.dtype() == z.dtype(), kOp, ": backward expected ds of dtype ", z.dtype(), ", got ",
           ds.dtype());
  TG_CHECK(ds.device() == z.device(), kOp, ": backward expected ds on device ", z.device(),
           ", got ", ds.device());
  BiasScaleSigmoidGrads g;
  if (!need_dz && !need_dbias && !need_dscale) return g;
  if (need_dz) g.dz = Tensor::empty(z.shape(), z.dtype(), z.device());
  if (need_dbias) g.dbias = Tensor::empty(bias.shape(), z.dtype(), z.device());
  if (need_dscale) g.dscale = Tensor::empty(scale.shape(), z.dtype(), z.device());
  dispatch_dtype(z.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* dz = need_dz ? g.dz.data<T>() : nullptr;
    T* dbias = need_dbias ? g.dbias.data<T>() : nullptr;
    T* dscale = need_dscale ? g.dscale.data<T>() : nullptr;
    if (z.is_cuda()) {
      TG_IF_CUDA({
        Tensor workspace;
        if (need_dbias || need_dscale) {
          workspace =
              Tensor::empty({detail::bias_scale_sigmoid_workspace_size(p)}, z.dtype(), z.device());
        }
        detail::bias_scale_sigmoid_backward_cuda<T>(
            p, ds.data<T>(), z.data<T>(), bias.data<T>(), scale.data<T>(), dz, dbias, dscale,
            workspace.defined() ? workspace.data<T>() : nullptr, cuda::stream());
      });
    } else {
      detail::bias_scale_sigmoid_backward_cpu<T>(p, ds.data<T>(), z.data<T>(), bias.data<T>(),
                                                 scale.data<T>(), dz, dbias, dscale);
    }
  });
  return g;
}

}  // namespace tg::ops
