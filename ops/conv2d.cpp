// conv2d: y = conv(x, w) + b, NCHW, weight (Cout, Cin, kH, kW), one group, no dilation.
//
// CPU path (this file), per sample n, with K = Cin*kH*kW and P = Hout*Wout:
//   col_n (K, P) = im2col(x_n)            row (ci, i, j), column (oh, ow); zero where padded
//   y_n (Cout, P) = W (Cout, K) * col_n + b
//   dW = sum_n dy_n * col_n^T,  db = sum over (n, P) of dy,  dx_n = col2im(W^T * dy_n)
// Matrices are row-major Eigen maps over the tensors' memory. im2col and col2im find the in-bounds
// output columns once per kernel column, so their inner loops have no branch (a plain copy at
// stride 1). The forward is parallel over n (OpenMP, one col buffer per thread). The backward is
// parallel over a fixed number of batch chunks that each sum their own dW/db partial; the partials
// are added in chunk order, so the result does not depend on the number of threads. Saved for the backward: x (when weight requires grad) and
// weight (when x requires grad). CUDA: conv2d_cuda.cpp (cuDNN) and conv2d.cu (bias gradient).
#include "conv2d.h"

#include <Eigen/Core>

#include <algorithm>
#include <atomic>
#include <climits>
#include <memory>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "../core/autograd.h"
#include "../core/cuda_context.h"

namespace tg::ops {

// ---- global switches ----------------------------------------------------------------------------

namespace conv {
namespace {
std::atomic<bool> g_allow_tf32{true};
std::atomic<bool> g_deterministic{false};
std::atomic<bool> g_benchmark{false};
}  // namespace

void set_allow_tf32(bool value) { g_allow_tf32 = value; }
bool allow_tf32() { return g_allow_tf32; }
void set_deterministic(bool value) { g_deterministic = value; }
bool deterministic() { return g_deterministic; }
void set_benchmark(bool value) { g_benchmark = value; }
bool benchmark() { return g_benchmark; }

#ifndef TG_WITH_CUDA
// Without CUDA there is no algorithm cache (conv2d_cuda.cpp defines these in a CUDA build).
size_t algorithm_cache_size() { return 0; }
void clear_algorithm_cache() {}
#endif
}  // namespace conv

// ---- CPU kernels --------------------------------------------------------------------------------

namespace detail {

Conv2dParams conv2d_params(const Tensor& x, const Tensor& weight, const Conv2dOptions& opt) {
  Conv2dParams p;
  p.N = x.size(0);
  p.Cin = x.size(1);
  p.H = x.size(2);
  p.W = x.size(3);
  p.Cout = weight.size(0);
  p.kH = weight.size(2);
  p.kW = weight.size(3);
  p.stride = opt.stride;
  p.padding = opt.padding;
  p.Hout = (p.H + 2 * p.padding - p.kH) / p.stride + 1;
  p.Wout = (p.W + 2 * p.padding - p.kW) / p.stride + 1;
  return p;
}
namespace {

template <typename T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using MatMap = Eigen::Map<RowMat<T>>;
template <typename T>
using ConstMatMap = Eigen::Map<const RowMat<T>>;

int max_threads() {
#ifdef _OPENMP
  return std::max(1, omp_get_max_threads());
#else
  return 1;
#endif
}

int thread_id() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

// The output columns [lo, hi) whose input column ow*stride - padding + j lies inside [0, W); the
// others read padding. Lets im2col and col2im run branch-free inner loops (a plain copy at stride 1).
struct ColRange {
  int64_t lo, hi;
};

ColRange valid_columns(const Conv2dParams& p, int64_t j) {
  const int64_t a = p.padding - j;             // ow*stride >= a
  const int64_t b = p.W - 1 + p.padding - j;   // ow*stride <= b
  if (b < 0) return {0, 0};
  const int64_t lo = a <= 0 ? 0 : std::min(p.Wout, (a + p.stride - 1) / p.stride);
  const int64_t hi = std::min(p.Wout, b / p.stride + 1);
  return {std::min(lo, hi), hi};
}

// col (K, Hout*Wout) from one sample x_n (Cin, H, W).
template <typename T>
void im2col(const Conv2dParams& p, const T* xn, T* col) {
  const int64_t P = p.Hout * p.Wout;
  for (int64_t ci = 0; ci < p.Cin; ++ci) {
    const T* plane = xn + ci * p.H * p.W;
    for (int64_t i = 0; i < p.kH; ++i) {
      for (int64_t j = 0; j < p.kW; ++j) {
        T* row = col + ((ci * p.kH + i) * p.kW + j) * P;
        const ColRange r = valid_columns(p, j);
        const int64_t shift = j - p.padding;  // input column = ow * stride + shift
        for (int64_t oh = 0; oh < p.Hout; ++oh) {
          T* out = row + oh * p.Wout;
          const int64_t ih = oh * p.stride - p.padding + i;
          if (ih < 0 || ih >= p.H) {
            std::fill(out, out + p.Wout, T(0));
            continue;
          }
          const T* in = plane + ih * p.W;
          std::fill(out, out + r.lo, T(0));
          if (r.lo < r.hi && p.stride == 1) {
            std::copy(in + (r.lo + shift), in + (r.hi + shift), out + r.lo);
          } else {
            for (int64_t ow = r.lo; ow < r.hi; ++ow) out[ow] = in[ow * p.stride + shift];
          }
          std::fill(out + r.hi, out + p.Wout, T(0));
        }
      }
    }
  }
}

// dx_n (Cin, H, W) = for each input element, the sum of the col entries read from it.
template <typename T>
void col2im(const Conv2dParams& p, const T* col, T* dxn) {
  const int64_t P = p.Hout * p.Wout;
  std::fill(dxn, dxn + p.Cin * p.H * p.W, T(0));
  for (int64_t ci = 0; ci < p.Cin; ++ci) {
    T* plane = dxn + ci * p.H * p.W;
    for (int64_t i = 0; i < p.kH; ++i) {
      for (int64_t j = 0; j < p.kW; ++j) {
        const T* row = col + ((ci * p.kH + i) * p.kW + j) * P;
        const ColRange r = valid_columns(p, j);
        const int64_t shift = j - p.padding;
        for (int64_t oh = 0; oh < p.Hout; ++oh) {
          const int64_t ih = oh * p.stride - p.padding + i;
          if (ih < 0 || ih >= p.H) continue;
          const T* in = row + oh * p.Wout;
          T* out = plane + ih * p.W;
          for (int64_t ow = r.lo; ow < r.hi; ++ow) out[ow * p.stride + shift] += in[ow];
        }
      }
    }
  }
}

}  // namespace

template <typename T>
void conv2d_forward_cpu(const Conv2dParams& p, const T* x, const T* w, const T* b, T* y) {
  const int64_t K = p.Cin * p.kH * p.kW;
  const int64_t P = p.Hout * p.Wout;
  const int nthreads = int(std::min<int64_t>(max_threads(), p.N));
  std::vector<T> cols(size_t(nthreads) * size_t(K * P));
  ConstMatMap<T> wm(w, p.Cout, K);
  // With N == 1 the loop runs on one thread and Eigen may parallelise the GEMM itself.
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
  for (int64_t n = 0; n < p.N; ++n) {
    T* col = cols.data() + size_t(thread_id()) * size_t(K * P);
    im2col(p, x + n * p.Cin * p.H * p.W, col);
    MatMap<T> yn(y + n * p.Cout * P, p.Cout, P);
    yn.noalias() = wm * ConstMatMap<T>(col, K, P);
    if (b) yn.colwise() += Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>>(b, p.Cout);
  }
}

template <typename T>
void conv2d_backward_cpu(const Conv2dParams& p, const T* x, const T* w, const T* dy, T* dx, T* dw,
                         T* db) {
  if (!dx && !dw && !db) return;
  const int64_t K = p.Cin * p.kH * p.kW;
  const int64_t P = p.Hout * p.Wout;
  const int64_t x_stride = p.Cin * p.H * p.W;
  // A fixed chunking of the batch: the partial sums, and so the bits of dw and db, do not depend on
  // the number of threads.
  const int64_t chunks = std::min<int64_t>(p.N, 32);
  const int nthreads = int(std::min<int64_t>(max_threads(), chunks));
  const bool need_col = dx || dw;
  std::vector<T> cols(need_col ? size_t(nthreads) * size_t(K * P) : 0);
  std::vector<T> dw_part(dw ? size_t(chunks) * size_t(p.Cout * K) : 0, T(0));
  std::vector<T> db_part(db ? size_t(chunks) * size_t(p.Cout) : 0, T(0));
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    T* col = need_col ? cols.data() + size_t(thread_id()) * size_t(K * P) : nullptr;
    const int64_t n_begin = p.N * c / chunks, n_end = p.N * (c + 1) / chunks;
    for (int64_t n = n_begin; n < n_end; ++n) {
      ConstMatMap<T> dyn(dy + n * p.Cout * P, p.Cout, P);
      if (db) {
        Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, 1>>(db_part.data() + c * p.Cout, p.Cout) +=
            dyn.rowwise().sum();
      }
      if (dw) {
        im2col(p, x + n * x_stride, col);
        MatMap<T>(dw_part.data() + c * p.Cout * K, p.Cout, K).noalias() +=
            dyn * ConstMatMap<T>(col, K, P).transpose();
      }
      if (dx) {
        MatMap<T>(col, K, P).noalias() = ConstMatMap<T>(w, p.Cout, K).transpose() * dyn;
        col2im(p, col, dx + n * x_stride);
      }
    }
  }
  if (dw) {
    std::copy(dw_part.begin(), dw_part.begin() + p.Cout * K, dw);
    for (int64_t c = 1; c < chunks; ++c) {
      for (int64_t i = 0; i < p.Cout * K; ++i) dw[i] += dw_part[size_t(c * p.Cout * K + i)];
    }
  }
  if (db) {
    std::copy(db_part.begin(), db_part.begin() + p.Cout, db);
    for (int64_t c = 1; c < chunks; ++c) {
      for (int64_t i = 0; i < p.Cout; ++i) db[i] += db_part[size_t(c * p.Cout + i)];
    }
  }
}

template void conv2d_forward_cpu<float>(const Conv2dParams&, const float*, const float*,
                                        const float*, float*);
template void conv2d_forward_cpu<double>(const Conv2dParams&, const double*, const double*,
                                         const double*, double*);
template void conv2d_backward_cpu<float>(const Conv2dParams&, const float*, const float*,
                                         const float*, float*, float*, float*);
template void conv2d_backward_cpu<double>(const Conv2dParams&, const double*, const double*,
                                          const double*, double*, double*, double*);

}  // namespace detail

// ---- validation and dispatch --------------------------------------------------------------------

namespace {

detail::Conv2dParams check_conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                  const Conv2dOptions& opt) {
  TG_CHECK(x.defined(), "conv2d: expected a defined input x, got an undefined tensor");
  TG_CHECK(weight.defined(), "conv2d: expected a defined weight, got an undefined tensor");
  TG_CHECK(x.dim() == 4, "conv2d: expected x of 4 dimensions (N, Cin, H, W), got ", x.shape());
  TG_CHECK(weight.dim() == 4, "conv2d: expected weight of 4 dimensions (Cout, Cin, kH, kW), got ",
           weight.shape());
  TG_CHECK(x.numel() > 0, "conv2d: expected x with every dimension > 0, got ", x.shape());
  TG_CHECK(weight.numel() > 0, "conv2d: expected weight with every dimension > 0, got ",
           weight.shape());
  TG_CHECK(weight.dtype() == x.dtype(), "conv2d: expected weight of x's dtype ", x.dtype(),
           ", got ", weight.dtype());
  TG_CHECK(weight.device() == x.device(), "conv2d: expected weight on x's device ", x.device(),
           ", got ", weight.device());
  TG_CHECK(opt.stride >= 1, "conv2d: expected stride >= 1, got ", opt.stride);
  TG_CHECK(opt.padding >= 0, "conv2d: expected padding >= 0, got ", opt.padding);
  detail::Conv2dParams p = detail::conv2d_params(x, weight, opt);
  TG_CHECK(weight.size(1) == p.Cin, "conv2d: expected weight with Cin = ", p.Cin,
           " input channels (x is ", x.shape(), "), got weight ", weight.shape());
  const int64_t Hp = p.H + 2 * p.padding, Wp = p.W + 2 * p.padding;
  TG_CHECK(p.kH <= Hp && p.kW <= Wp, "conv2d: expected a kernel no larger than the padded input ",
           Shape{Hp, Wp}, " (x ", x.shape(), ", padding ", p.padding, "), got kernel ",
           Shape{p.kH, p.kW});
  if (bias.defined()) {
    TG_CHECK(bias.dim() == 1 && bias.size(0) == p.Cout, "conv2d: expected bias of shape ",
             Shape{p.Cout}, " (Cout), got ", bias.shape());
    TG_CHECK(bias.dtype() == x.dtype(), "conv2d: expected bias of x's dtype ", x.dtype(), ", got ",
             bias.dtype());
    TG_CHECK(bias.device() == x.device(), "conv2d: expected bias on x's device ", x.device(),
             ", got ", bias.device());
  }
  if (x.is_cuda()) {
    // cuDNN's 4-D descriptors take int sizes and strides.
    const int64_t biggest = std::max({x.numel(), weight.numel(), p.N * p.Cout * p.Hout * p.Wout});
    TG_CHECK(biggest <= INT_MAX, "conv2d: expected tensors of at most ", INT_MAX,
             " elements on CUDA (cuDNN limit), got ", biggest);
  }
  return p;
}

// The data pointer of t, or null for an undefined tensor (unused in a build without CUDA).
[[maybe_unused]] void* raw_or_null(const Tensor& t) { return t.defined() ? t.raw_data() : nullptr; }

void forward_impl(const detail::Conv2dParams& p, const Tensor& x, const Tensor& w, const Tensor& b,
                  Tensor& y) {
  if (x.is_cuda()) {
    TG_IF_CUDA(detail::conv2d_forward_cuda(p, x.dtype(), x.raw_data(), w.raw_data(), raw_or_null(b),
                                           y.raw_data()));
    return;
  }
  dispatch_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    detail::conv2d_forward_cpu<T>(p, x.data<T>(), w.data<T>(), b.defined() ? b.data<T>() : nullptr,
                                  y.data<T>());
  });
}

// x is needed for dweight, w for dx; either may be undefined when its gradient is not asked for.
Conv2dGrads backward_impl(const detail::Conv2dParams& p, const Tensor& dy, const Tensor& x,
                          const Tensor& w, bool need_dx, bool need_dw, bool need_db) {
  Conv2dGrads g;
  const DType dt = dy.dtype();
  const Device dev = dy.device();
  if (need_dx) g.dx = Tensor::empty({p.N, p.Cin, p.H, p.W}, dt, dev);
  if (need_dw) g.dweight = Tensor::empty({p.Cout, p.Cin, p.kH, p.kW}, dt, dev);
  if (need_db) g.dbias = Tensor::empty({p.Cout}, dt, dev);
  if (!need_dx && !need_dw && !need_db) return g;
  if (dev == Device::CUDA) {
    TG_IF_CUDA(detail::conv2d_backward_cuda(p, dt, raw_or_null(x), raw_or_null(w), dy.raw_data(),
                                            raw_or_null(g.dx), raw_or_null(g.dweight),
                                            raw_or_null(g.dbias)));
    return g;
  }
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    auto typed = [](const Tensor& t) { return t.defined() ? t.data<T>() : nullptr; };
    detail::conv2d_backward_cpu<T>(p, typed(x), typed(w), dy.data<T>(), typed(g.dx),
                                   typed(g.dweight), typed(g.dbias));
  });
  return g;
}

void check_grad_output(const detail::Conv2dParams& p, const Tensor& dy, DType dtype,
                       Device device) {
  TG_CHECK(dy.defined(), "conv2d backward: expected a defined dy, got an undefined tensor");
  const Shape expected{p.N, p.Cout, p.Hout, p.Wout};
  TG_CHECK(dy.shape() == expected, "conv2d backward: expected dy of shape ", expected, ", got ",
           dy.shape());
  TG_CHECK(dy.dtype() == dtype && dy.device() == device, "conv2d backward: expected dy of ", dtype,
           " on ", device, ", got ", dy.dtype(), " on ", dy.device());
}

// Inputs on the tape: {x, weight} or {x, weight, bias}.
class Conv2dNode : public autograd::Node {
 public:
  const char* name() const override { return "conv2d"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    const bool need_dx = needs_input_grad(0);
    const bool need_dw = needs_input_grad(1);
    const bool need_db = has_bias_ && needs_input_grad(2);
    check_grad_output(params_, grads[0], dtype_, device_);
    const Tensor x = need_dw ? saved_x_.get("conv2d") : Tensor();
    const Tensor w = need_dx ? saved_w_.get("conv2d") : Tensor();
    Conv2dGrads g = backward_impl(params_, grads[0], x, w, need_dx, need_dw, need_db);
    std::vector<Tensor> out{g.dx, g.dweight};
    if (has_bias_) out.push_back(g.dbias);
    return out;
  }

  void release_saved() override {
    saved_x_.release();
    saved_w_.release();
  }

  detail::Conv2dParams params_;
  DType dtype_ = DType::Float32;
  Device device_ = Device::CPU;
  bool has_bias_ = false;
  autograd::SavedTensor saved_x_;  // only when weight requires grad
  autograd::SavedTensor saved_w_;  // only when x requires grad
};

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dOptions& opt) {
  const detail::Conv2dParams p = check_conv2d(x, weight, bias, opt);
  Tensor y = Tensor::empty({p.N, p.Cout, p.Hout, p.Wout}, x.dtype(), x.device());
  forward_impl(p, x, weight, bias, y);

  std::vector<Tensor> inputs{x, weight};
  if (bias.defined()) inputs.push_back(bias);
  if (autograd::should_record(inputs)) {
    auto node = std::make_shared<Conv2dNode>();
    node->params_ = p;
    node->dtype_ = x.dtype();
    node->device_ = x.device();
    node->has_bias_ = bias.defined();
    if (weight.requires_grad()) node->saved_x_ = autograd::SavedTensor(x);
    if (x.requires_grad()) node->saved_w_ = autograd::SavedTensor(weight);
    autograd::record(node, inputs, {y});
  }
  return y;
}

Conv2dGrads conv2d_backward(const Tensor& dy, const Tensor& x, const Tensor& weight,
                            const Conv2dOptions& opt, bool need_dx, bool need_dweight,
                            bool need_dbias) {
  const detail::Conv2dParams p = check_conv2d(x, weight, Tensor(), opt);
  check_grad_output(p, dy, x.dtype(), x.device());
  return backward_impl(p, dy, x, weight, need_dx, need_dweight, need_dbias);
}

}  // namespace tg::ops
