// Elementwise ops and full reductions: validation, CPU loops, device dispatch and autograd nodes.
//
// Formulas and what each op saves are in ops/elementwise.h. The CPU path is plain loops templated
// on float/double; reductions accumulate in double in a fixed order. Backward functions call the
// raw kernels below directly, so they never record on the tape.
#include "elementwise.h"

#include <cmath>
#include <memory>
#include <string>
#include <utility>

#include "../core/autograd.h"
#include "../core/cuda_context.h"
#include "pointwise.h"
#ifdef TG_WITH_CUDA
#include "../core/cuda_utils.h"
#endif

namespace tg::ops {

// ---- CPU kernels --------------------------------------------------------------------------------

namespace detail {

namespace {

template <typename T, typename F>
void binary_loop(const T* a, const T* b, T* out, const BinaryParams& p, F f) {
  if (!p.a_per_channel && !p.b_per_channel) {
    for (int64_t i = 0; i < p.n; ++i) out[i] = f(a[i], b[i]);
    return;
  }
  // One (n, c) plane of HxW elements at a time; the per-channel operand is constant over a plane.
  const int64_t planes = p.n / p.HxW;
  for (int64_t plane = 0; plane < planes; ++plane) {
    const int64_t c = plane % p.C;
    const int64_t base = plane * p.HxW;
    const T* ap = p.a_per_channel ? a + c : a + base;
    const T* bp = p.b_per_channel ? b + c : b + base;
    const int64_t sa = p.a_per_channel ? 0 : 1;
    const int64_t sb = p.b_per_channel ? 0 : 1;
    for (int64_t j = 0; j < p.HxW; ++j) out[base + j] = f(ap[j * sa], bp[j * sb]);
  }
}

template <typename T>
T sigmoid_of(T x) {
  // Never exponentiates a positive number, so nothing overflows.
  if (x >= T(0)) return T(1) / (T(1) + std::exp(-x));
  const T e = std::exp(x);
  return e / (T(1) + e);
}

}  // namespace

template <typename T>
void binary_cpu(BinaryOp op, const T* a, const T* b, T* out, const BinaryParams& p) {
  switch (op) {
    case BinaryOp::Add:
      binary_loop(a, b, out, p, [](T x, T y) { return x + y; });
      break;
    case BinaryOp::Sub:
      binary_loop(a, b, out, p, [](T x, T y) { return x - y; });
      break;
    case BinaryOp::Mul:
      binary_loop(a, b, out, p, [](T x, T y) { return x * y; });
      break;
  }
}

template <typename T>
void affine_cpu(const T* x, T* out, int64_t n, double alpha, double beta) {
  const T a = T(alpha), b = T(beta);
  for (int64_t i = 0; i < n; ++i) out[i] = a * x[i] + b;
}

template <typename T>
void sigmoid_forward_cpu(const T* x, T* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = sigmoid_of(x[i]);
}

template <typename T>
void sigmoid_backward_cpu(const T* y, const T* dy, T* dx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * y[i] * (T(1) - y[i]);
}

template <typename T>
void square_backward_cpu(const T* x, const T* dy, T* dx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dx[i] = T(2) * x[i] * dy[i];
}

template <typename T>
void sum_cpu(const T* x, T* out, int64_t n, double scale) {
  double acc = 0.0;
  for (int64_t i = 0; i < n; ++i) acc += double(x[i]);
  out[0] = T(scale * acc);
}

template <typename T>
void fill_scaled_cpu(const T* g, T* out, int64_t n, double scale) {
  const T v = T(scale * double(g[0]));
  for (int64_t i = 0; i < n; ++i) out[i] = v;
}

template <typename T>
void channel_sum_cpu(const T* g, const T* other, T* out, int64_t N, int64_t C, int64_t HxW,
                     double scale) {
  for (int64_t c = 0; c < C; ++c) {
    double acc = 0.0;
    for (int64_t n = 0; n < N; ++n) {
      const int64_t base = (n * C + c) * HxW;
      if (other) {
        for (int64_t j = 0; j < HxW; ++j) acc += double(g[base + j]) * double(other[base + j]);
      } else {
        for (int64_t j = 0; j < HxW; ++j) acc += double(g[base + j]);
      }
    }
    out[c] = T(scale * acc);
  }
}

#define TG_INSTANTIATE_ELEMENTWISE_CPU(T)                                             \
  template void binary_cpu<T>(BinaryOp, const T*, const T*, T*, const BinaryParams&); \
  template void affine_cpu<T>(const T*, T*, int64_t, double, double);                 \
  template void sigmoid_forward_cpu<T>(const T*, T*, int64_t);                        \
  template void sigmoid_backward_cpu<T>(const T*, const T*, T*, int64_t);             \
  template void square_backward_cpu<T>(const T*, const T*, T*, int64_t);              \
  template void sum_cpu<T>(const T*, T*, int64_t, double);                            \
  template void fill_scaled_cpu<T>(const T*, T*, int64_t, double);                    \
  template void channel_sum_cpu<T>(const T*, const T*, T*, int64_t, int64_t, int64_t, double);
TG_INSTANTIATE_ELEMENTWISE_CPU(float)
TG_INSTANTIATE_ELEMENTWISE_CPU(double)
#undef TG_INSTANTIATE_ELEMENTWISE_CPU

}  // namespace detail

namespace {

using detail::BinaryOp;
using detail::BinaryParams;
using detail::PointwiseOp;

const char* binary_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::Add:
      return "add";
    case BinaryOp::Sub:
      return "sub";
    case BinaryOp::Mul:
      return "mul";
  }
  return "?";
}

// ---- validation ---------------------------------------------------------------------------------

using detail::check_operand;

// p is (C,1,1) and x is NCHW with size(1) == C.
bool is_per_channel_of(const Tensor& p, const Tensor& x) {
  return x.dim() == 4 && p.dim() == 3 && p.size(0) == x.size(1) && p.size(1) == 1 && p.size(2) == 1;
}

// Checks a binary op's operands; returns the layout of the fast paths (same shapes, or a (C,1,1)
// operand against NCHW) and sets *out_shape; p.n == 0 means the general broadcasting path.
BinaryParams check_binary(const char* op, const Tensor& a, const Tensor& b, Shape* out_shape) {
  check_operand(op, a, "a");
  check_operand(op, b, "b");
  TG_CHECK(a.dtype() == b.dtype(), op, ": expected operands of the same dtype, got a ", a.dtype(),
           " and b ", b.dtype());
  TG_CHECK(a.device() == b.device(), op, ": expected operands on the same device, got a on ",
           a.device(), " and b on ", b.device());
  BinaryParams p;
  if (a.shape() == b.shape()) {
    p.n = a.numel();
    *out_shape = a.shape();
    return p;
  }
  const bool a_chan = is_per_channel_of(a, b);
  const bool b_chan = is_per_channel_of(b, a);
  if (a_chan || b_chan) {
    const Tensor& x = a_chan ? b : a;
    p.n = x.numel();
    p.C = x.size(1);
    p.HxW = x.size(2) * x.size(3);
    p.a_per_channel = a_chan;
    p.b_per_channel = b_chan;
    *out_shape = x.shape();
    return p;
  }
  // Any other pair of shapes takes the general NumPy broadcasting path (n = 0 marks it).
  *out_shape = detail::broadcast_shapes(op, a.shape(), b.shape());
  p.n = 0;
  return p;
}

// ---- raw ops (no autograd) ----------------------------------------------------------------------

Tensor binary_raw(BinaryOp op, const Tensor& a, const Tensor& b, const BinaryParams& p,
                  const Shape& shape) {
  Tensor out = Tensor::empty(shape, a.dtype(), a.device());
  dispatch_dtype(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if (a.is_cuda()) {
      TG_IF_CUDA(
          detail::binary_cuda<T>(op, a.data<T>(), b.data<T>(), out.data<T>(), p, cuda::stream()));
    } else {
      detail::binary_cpu<T>(op, a.data<T>(), b.data<T>(), out.data<T>(), p);
    }
  });
  return out;
}

Tensor affine_raw(const Tensor& x, double alpha, double beta) {
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  dispatch_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if (x.is_cuda()) {
      TG_IF_CUDA(detail::affine_cuda<T>(x.data<T>(), out.data<T>(), x.numel(), alpha, beta,
                                        cuda::stream()));
    } else {
      detail::affine_cpu<T>(x.data<T>(), out.data<T>(), x.numel(), alpha, beta);
    }
  });
  return out;
}

// out (shape) = scale * per-channel sum of g (times other, when given) over (n, h, w).
Tensor channel_sum_raw(const Tensor& g, const Tensor* other, const BinaryParams& p,
                       const Shape& shape, double scale) {
  const int64_t N = p.n / (p.C * p.HxW);
  Tensor out = Tensor::empty(shape, g.dtype(), g.device());
  dispatch_dtype(g.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* o = other ? other->data<T>() : nullptr;
    if (g.is_cuda()) {
      TG_IF_CUDA({
        const int64_t chunks = detail::channel_reduce_chunks(p.C, N * p.HxW);
        Tensor partials = Tensor::empty({p.C * chunks}, DType::Float64, Device::CUDA);
        detail::channel_sum_cuda<T>(g.data<T>(), o, out.data<T>(), N, p.C, p.HxW, scale,
                                    partials.data<double>(), cuda::stream());
      });
    } else {
      detail::channel_sum_cpu<T>(g.data<T>(), o, out.data<T>(), N, p.C, p.HxW, scale);
    }
  });
  return out;
}

// A 0-dim tensor: scale * sum of x.
Tensor sum_raw(const Tensor& x, double scale) {
  Tensor out = Tensor::empty(Shape{}, x.dtype(), x.device());
  dispatch_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if (x.is_cuda()) {
      TG_IF_CUDA({
        Tensor partials =
            Tensor::empty({detail::reduce_blocks(x.numel())}, DType::Float64, Device::CUDA);
        detail::sum_cuda<T>(x.data<T>(), out.data<T>(), x.numel(), scale, partials.data<double>(),
                            cuda::stream());
      });
    } else {
      detail::sum_cpu<T>(x.data<T>(), out.data<T>(), x.numel(), scale);
    }
  });
  return out;
}

// A tensor of the given shape filled with scale * g (g has one element; read on the device).
Tensor fill_scaled_raw(const Tensor& g, const Shape& shape, double scale) {
  Tensor out = Tensor::empty(shape, g.dtype(), g.device());
  dispatch_dtype(g.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if (g.is_cuda()) {
      TG_IF_CUDA(detail::fill_scaled_cuda<T>(g.data<T>(), out.data<T>(), out.numel(), scale,
                                             cuda::stream()));
    } else {
      detail::fill_scaled_cpu<T>(g.data<T>(), out.data<T>(), out.numel(), scale);
    }
  });
  return out;
}

// ---- binary ops: a op b -------------------------------------------------------------------------

class BinaryNode : public autograd::Node {
 public:
  BinaryNode(BinaryOp op, const BinaryParams& p) : op_(op), p_(p) {}
  const char* name() const override { return binary_name(op_); }

  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    const Tensor& g = grads[0];
    std::vector<Tensor> d(2);
    for (size_t i = 0; i < 2; ++i) {
      if (!needs_input_grad(i)) continue;
      const bool chan = i == 0 ? p_.a_per_channel : p_.b_per_channel;
      const Shape& shape = inputs()[i].shape;
      if (op_ == BinaryOp::Mul) {
        // d a = g * b and d b = g * a, summed per channel for a (C,1,1) operand.
        const Tensor& other = saved_[1 - i].get("mul");
        if (chan) {
          d[i] = channel_sum_raw(g, &other, p_, shape, 1.0);
        } else {
          BinaryParams q = p_;
          q.a_per_channel = false;
          q.b_per_channel = i == 0 ? p_.b_per_channel : p_.a_per_channel;
          d[i] = binary_raw(BinaryOp::Mul, g, other, q, g.shape());
        }
      } else {
        const double sign = (op_ == BinaryOp::Sub && i == 1) ? -1.0 : 1.0;
        if (chan) {
          d[i] = channel_sum_raw(g, nullptr, p_, shape, sign);
        } else {
          d[i] = sign > 0 ? g : affine_raw(g, -1.0, 0.0);
        }
      }
    }
    return d;
  }

  void release_saved() override {
    saved_[0].release();
    saved_[1].release();
  }

  autograd::SavedTensor saved_[2];  ///< a and b; mul saves each only when the other needs a grad

 private:
  BinaryOp op_;
  BinaryParams p_;
};

Tensor broadcast_op(const char* name, PointwiseOp op, const Tensor& a, const Tensor& b);

PointwiseOp pointwise_of(BinaryOp op) {
  switch (op) {
    case BinaryOp::Add:
      return PointwiseOp::Add;
    case BinaryOp::Sub:
      return PointwiseOp::Sub;
    case BinaryOp::Mul:
      return PointwiseOp::Mul;
  }
  return PointwiseOp::Add;
}

Tensor binary_op(BinaryOp op, const Tensor& a, const Tensor& b) {
  Shape shape;
  const BinaryParams p = check_binary(binary_name(op), a, b, &shape);
  if (p.n == 0) return broadcast_op(binary_name(op), pointwise_of(op), a, b);
  Tensor y = binary_raw(op, a, b, p, shape);
  if (autograd::should_record({a, b})) {
    auto node = std::make_shared<BinaryNode>(op, p);
    if (op == BinaryOp::Mul) {
      if (b.requires_grad()) node->saved_[0] = autograd::SavedTensor(a);
      if (a.requires_grad()) node->saved_[1] = autograd::SavedTensor(b);
    }
    autograd::record(node, {a, b}, {y});
  }
  return y;
}

// ---- the general broadcasting path (NumPy rules; also div, maximum, minimum) -------------------

// Gradients are computed at the output's shape and summed down to each operand's shape.
class BroadcastBinaryNode : public autograd::Node {
 public:
  BroadcastBinaryNode(const char* name, PointwiseOp op) : name_(name), op_(op) {}
  const char* name() const override { return name_; }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    const Tensor& g = grads[0];
    std::vector<Tensor> d(2);
    for (size_t i = 0; i < 2; ++i) {
      if (!needs_input_grad(i)) continue;
      d[i] = detail::sum_to_shape(grad_at_output(i, g), inputs()[i].shape);
    }
    return d;
  }
  void release_saved() override {
    saved_[0].release();
    saved_[1].release();
  }
  autograd::SavedTensor saved_[2];  ///< a and b, when the gradients need them

 private:
  Tensor grad_at_output(size_t i, const Tensor& g) const {
    using detail::pointwise;
    switch (op_) {
      case PointwiseOp::Add:
        return g;
      case PointwiseOp::Sub:
        return i == 0 ? g : pointwise(PointwiseOp::Affine, {g}, -1.0, 0.0);
      case PointwiseOp::Mul:
        return pointwise(PointwiseOp::Mul, {g, saved_[1 - i].get(name_)});
      case PointwiseOp::Div:
        if (i == 0) return pointwise(PointwiseOp::Div, {g, saved_[1].get(name_)});
        return pointwise(PointwiseOp::DivGradB, {g, saved_[0].get(name_), saved_[1].get(name_)});
      case PointwiseOp::Maximum:
      case PointwiseOp::Minimum: {
        const PointwiseOp gop = op_ == PointwiseOp::Maximum ? PointwiseOp::MaxGrad : PointwiseOp::MinGrad;
        return pointwise(gop, {g, saved_[i].get(name_), saved_[1 - i].get(name_)});
      }
      default:
        TG_THROW(name_, ": no broadcasting backward for this op");
    }
  }
  const char* name_;
  PointwiseOp op_;
};

Tensor broadcast_op(const char* name, PointwiseOp op, const Tensor& a, const Tensor& b) {
  check_operand(name, a, "a");
  check_operand(name, b, "b");
  detail::check_same_kind(name, a, b);
  const Shape shape = detail::broadcast_shapes(name, a.shape(), b.shape());
  Tensor y = detail::pointwise_to(op, shape, {a, b});
  if (autograd::should_record({a, b})) {
    auto node = std::make_shared<BroadcastBinaryNode>(name, op);
    const bool both = op == PointwiseOp::Div || op == PointwiseOp::Maximum || op == PointwiseOp::Minimum;
    if (both || (op == PointwiseOp::Mul && b.requires_grad())) node->saved_[0] = autograd::SavedTensor(a);
    if (both || (op == PointwiseOp::Mul && a.requires_grad())) node->saved_[1] = autograd::SavedTensor(b);
    autograd::record(node, {a, b}, {y});
  }
  return y;
}

// ---- affine: alpha x + beta (the tensor-scalar ops) ---------------------------------------------

class AffineNode : public autograd::Node {
 public:
  AffineNode(const char* name, double alpha) : name_(name), alpha_(alpha) {}
  const char* name() const override { return name_; }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    if (!needs_input_grad(0)) return {Tensor()};
    return {alpha_ == 1.0 ? grads[0] : affine_raw(grads[0], alpha_, 0.0)};
  }

 private:
  const char* name_;
  double alpha_;
};

Tensor affine(const char* op, const Tensor& x, double alpha, double beta) {
  check_operand(op, x, "x");
  Tensor y = affine_raw(x, alpha, beta);
  if (autograd::should_record({x})) {
    autograd::record(std::make_shared<AffineNode>(op, alpha), {x}, {y});
  }
  return y;
}

// ---- sigmoid ------------------------------------------------------------------------------------

class SigmoidNode : public autograd::Node {
 public:
  const char* name() const override { return "sigmoid"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    if (!needs_input_grad(0)) return {Tensor()};
    const Tensor& y = saved_y.get("sigmoid");
    const Tensor& g = grads[0];
    Tensor dx = Tensor::empty(y.shape(), y.dtype(), y.device());
    dispatch_dtype(y.dtype(), [&](auto tag) {
      using T = decltype(tag);
      if (y.is_cuda()) {
        TG_IF_CUDA(detail::sigmoid_backward_cuda<T>(y.data<T>(), g.data<T>(), dx.data<T>(),
                                                    y.numel(), cuda::stream()));
      } else {
        detail::sigmoid_backward_cpu<T>(y.data<T>(), g.data<T>(), dx.data<T>(), y.numel());
      }
    });
    return {dx};
  }
  void release_saved() override { saved_y.release(); }

  autograd::SavedTensor saved_y;
};

// ---- square -------------------------------------------------------------------------------------

class SquareNode : public autograd::Node {
 public:
  const char* name() const override { return "square"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    if (!needs_input_grad(0)) return {Tensor()};
    const Tensor& x = saved_x.get("square");
    const Tensor& g = grads[0];
    Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
    dispatch_dtype(x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      if (x.is_cuda()) {
        TG_IF_CUDA(detail::square_backward_cuda<T>(x.data<T>(), g.data<T>(), dx.data<T>(),
                                                   x.numel(), cuda::stream()));
      } else {
        detail::square_backward_cpu<T>(x.data<T>(), g.data<T>(), dx.data<T>(), x.numel());
      }
    });
    return {dx};
  }
  void release_saved() override { saved_x.release(); }

  autograd::SavedTensor saved_x;
};

// ---- sum and mean -------------------------------------------------------------------------------

class ReduceNode : public autograd::Node {
 public:
  ReduceNode(const char* name, double scale) : name_(name), scale_(scale) {}
  const char* name() const override { return name_; }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    if (!needs_input_grad(0)) return {Tensor()};
    return {fill_scaled_raw(grads[0], inputs()[0].shape, scale_)};
  }

 private:
  const char* name_;
  double scale_;
};

Tensor reduce(const char* op, const Tensor& x, bool average) {
  check_operand(op, x, "x");
  const double scale = average ? 1.0 / double(x.numel()) : 1.0;
  Tensor y = sum_raw(x, scale);
  if (autograd::should_record({x})) {
    autograd::record(std::make_shared<ReduceNode>(op, scale), {x}, {y});
  }
  return y;
}

}  // namespace

// ---- public functions ---------------------------------------------------------------------------

Tensor add(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Add, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Sub, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Mul, a, b); }

Tensor div(const Tensor& a, const Tensor& b) { return broadcast_op("div", PointwiseOp::Div, a, b); }
Tensor maximum(const Tensor& a, const Tensor& b) {
  return broadcast_op("maximum", PointwiseOp::Maximum, a, b);
}
Tensor minimum(const Tensor& a, const Tensor& b) {
  return broadcast_op("minimum", PointwiseOp::Minimum, a, b);
}

Tensor add(const Tensor& x, double s) { return affine("add", x, 1.0, s); }
Tensor sub(const Tensor& x, double s) { return affine("sub", x, 1.0, -s); }
Tensor mul(const Tensor& x, double s) { return affine("mul", x, s, 0.0); }
Tensor div(const Tensor& x, double s) {
  TG_CHECK(s != 0.0, "div: division of a tensor by the scalar 0");
  return affine("div", x, 1.0 / s, 0.0);
}

Tensor sigmoid(const Tensor& x) {
  check_operand("sigmoid", x, "x");
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  dispatch_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if (x.is_cuda()) {
      TG_IF_CUDA(
          detail::sigmoid_forward_cuda<T>(x.data<T>(), y.data<T>(), x.numel(), cuda::stream()));
    } else {
      detail::sigmoid_forward_cpu<T>(x.data<T>(), y.data<T>(), x.numel());
    }
  });
  if (autograd::should_record({x})) {
    auto node = std::make_shared<SigmoidNode>();
    node->saved_y = autograd::SavedTensor::output(y);
    autograd::record(node, {x}, {y});
  }
  return y;
}

Tensor square(const Tensor& x) {
  check_operand("square", x, "x");
  Tensor y = binary_raw(BinaryOp::Mul, x, x, BinaryParams{x.numel()}, x.shape());
  if (autograd::should_record({x})) {
    auto node = std::make_shared<SquareNode>();
    node->saved_x = autograd::SavedTensor(x);
    autograd::record(node, {x}, {y});
  }
  return y;
}

Tensor sum(const Tensor& x) { return reduce("sum", x, false); }
Tensor mean(const Tensor& x) { return reduce("mean", x, true); }

}  // namespace tg::ops

namespace tg {

Tensor operator+(const Tensor& a, const Tensor& b) { return ops::add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return ops::sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return ops::mul(a, b); }
Tensor operator+(const Tensor& x, double s) { return ops::add(x, s); }
Tensor operator-(const Tensor& x, double s) { return ops::sub(x, s); }
Tensor operator*(const Tensor& x, double s) { return ops::mul(x, s); }
Tensor operator+(double s, const Tensor& x) { return ops::add(x, s); }
Tensor operator*(double s, const Tensor& x) { return ops::mul(x, s); }
Tensor operator-(double s, const Tensor& x) { return ops::affine("sub", x, -1.0, s); }
Tensor operator-(const Tensor& x) { return ops::affine("neg", x, -1.0, 0.0); }
Tensor operator/(const Tensor& a, const Tensor& b) { return ops::div(a, b); }
Tensor operator/(const Tensor& x, double s) { return ops::div(x, s); }
Tensor operator/(double s, const Tensor& x) {
  ops::check_operand("div", x, "b");
  return ops::div(Tensor::full({}, s, x.dtype(), x.device()), x);
}

}  // namespace tg
