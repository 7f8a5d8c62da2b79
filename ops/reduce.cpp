// Reductions over dimensions: validation, the CPU loop, passes over runs of dimensions, autograd.
#include "reduce.h"

#include <algorithm>
#include <limits>
#include <memory>

#include "../core/autograd.h"
#include "../core/cuda_context.h"
#include "pointwise.h"
#ifdef TG_WITH_CUDA
#include "../core/cuda_utils.h"
#endif

namespace tg::ops {
namespace detail {

template <typename T>
void reduce_cpu(ReduceOp op, const T* x, T* out, int64_t outer, int64_t reduced, int64_t inner,
                double scale) {
  for (int64_t o = 0; o < outer; ++o) {
    const T* base = x + o * reduced * inner;
    for (int64_t i = 0; i < inner; ++i) {
      if (op == ReduceOp::Sum) {
        double acc = 0.0;
        for (int64_t r = 0; r < reduced; ++r) acc += double(base[r * inner + i]);
        out[o * inner + i] = T(scale * acc);
      } else {
        T m = base[i];
        for (int64_t r = 1; r < reduced; ++r) {
          const T v = base[r * inner + i];
          if (v > m || v != v) m = v;
          if (m != m) break;
        }
        out[o * inner + i] = m;
      }
    }
  }
}
template void reduce_cpu<float>(ReduceOp, const float*, float*, int64_t, int64_t, int64_t, double);
template void reduce_cpu<double>(ReduceOp, const double*, double*, int64_t, int64_t, int64_t,
                                 double);

std::vector<int64_t> normalize_dims(const char* op, const std::vector<int64_t>& dims,
                                    const Shape& shape) {
  const int64_t rank = int64_t(shape.size());
  std::vector<int64_t> out;
  if (dims.empty()) {
    for (int64_t d = 0; d < rank; ++d) out.push_back(d);
    return out;
  }
  for (int64_t d : dims) {
    const int64_t j = d < 0 ? d + rank : d;
    TG_CHECK(j >= 0 && j < rank, op, ": dimension ", d, " is out of range for a tensor of shape ",
             shape, " (expected -", rank, " <= dim < ", rank, ")");
    TG_CHECK(std::find(out.begin(), out.end(), j) == out.end(), op, ": dimension ", d,
             " appears more than once in the list of dimensions");
    out.push_back(j);
  }
  std::sort(out.begin(), out.end());
  return out;
}

Tensor reduce_raw(ReduceOp op, const Tensor& x, const std::vector<int64_t>& dims, double scale) {
  Shape shape = x.shape();
  Tensor cur = x;
  // Runs of adjacent reduced dimensions, from the last one backwards.
  size_t k = dims.size();
  bool first = true;
  if (dims.empty()) {
    Tensor out = Tensor::empty(shape, x.dtype(), x.device());
    out.copy_(x);
    return out;
  }
  while (k > 0) {
    size_t j = k - 1;
    while (j > 0 && dims[j - 1] == dims[j] - 1) --j;
    const int64_t d0 = dims[j], d1 = dims[k - 1];
    int64_t outer = 1, reduced = 1, inner = 1;
    for (int64_t d = 0; d < d0; ++d) outer *= shape[d];
    for (int64_t d = d0; d <= d1; ++d) reduced *= shape[d];
    for (int64_t d = d1 + 1; d < int64_t(shape.size()); ++d) inner *= shape[d];
    for (int64_t d = d0; d <= d1; ++d) shape[d] = 1;
    Tensor out = Tensor::empty(shape, x.dtype(), x.device());
    const double s = first ? scale : 1.0;
    dispatch_dtype(x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      if (x.is_cuda()) {
        TG_IF_CUDA(reduce_cuda<T>(op, cur.data<T>(), out.data<T>(), outer, reduced, inner, s,
                                  cuda::stream()));
      } else {
        reduce_cpu<T>(op, cur.data<T>(), out.data<T>(), outer, reduced, inner, s);
      }
    });
    cur = out;
    first = false;
    k = j;
  }
  return cur;
}

}  // namespace detail

namespace {

using detail::PointwiseOp;
using detail::ReduceOp;

Shape reduced_shape(const Shape& shape, const std::vector<int64_t>& dims, bool keepdim) {
  Shape out;
  for (int64_t d = 0; d < int64_t(shape.size()); ++d) {
    const bool r = std::find(dims.begin(), dims.end(), d) != dims.end();
    if (!r) out.push_back(shape[d]);
    else if (keepdim) out.push_back(1);
  }
  return out;
}

Shape keep_shape(const Shape& shape, const std::vector<int64_t>& dims) {
  return reduced_shape(shape, dims, true);
}

// sum and mean: dx = scale * dy broadcast over the reduced dimensions.
class SumDimsNode : public autograd::Node {
 public:
  SumDimsNode(const char* name, std::vector<int64_t> dims, double scale)
      : name_(name), dims_(std::move(dims)), scale_(scale) {}
  const char* name() const override { return name_; }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    if (!needs_input_grad(0)) return {Tensor()};
    const Shape& xs = inputs()[0].shape;
    Tensor g = grads[0].view(keep_shape(xs, dims_));
    return {detail::pointwise_to(PointwiseOp::Affine, xs, {g}, scale_, 0.0)};
  }

 private:
  const char* name_;
  std::vector<int64_t> dims_;
  double scale_;
};

// amax: dx = dy * (x == y) / count(x == y), broadcast over the reduced dimensions.
class AmaxNode : public autograd::Node {
 public:
  explicit AmaxNode(std::vector<int64_t> dims) : dims_(std::move(dims)) {}
  const char* name() const override { return "amax"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    if (!needs_input_grad(0)) return {Tensor()};
    const Tensor& x = saved_x.get("amax");
    const Shape ks = keep_shape(x.shape(), dims_);
    const Tensor y = saved_y.get("amax").view(ks);
    const Tensor mask = detail::pointwise(PointwiseOp::Equal, {x, y});
    const Tensor count = detail::reduce_raw(ReduceOp::Sum, mask, dims_, 1.0);
    return {detail::pointwise_to(PointwiseOp::MulDiv, x.shape(), {grads[0].view(ks), mask, count})};
  }
  void release_saved() override {
    saved_x.release();
    saved_y.release();
  }
  autograd::SavedTensor saved_x, saved_y;

 private:
  std::vector<int64_t> dims_;
};

Tensor reduce_dims(const char* op, const Tensor& x, const std::vector<int64_t>& dims_in,
                   bool keepdim, bool average) {
  detail::check_operand(op, x, "x");
  const std::vector<int64_t> dims = detail::normalize_dims(op, dims_in, x.shape());
  int64_t count = 1;
  for (int64_t d : dims) count *= x.shape()[d];
  const double scale = average ? 1.0 / double(count) : 1.0;
  Tensor y = detail::reduce_raw(ReduceOp::Sum, x, dims, scale).view(
      reduced_shape(x.shape(), dims, keepdim));
  if (autograd::should_record({x})) {
    autograd::record(std::make_shared<SumDimsNode>(op, dims, scale), {x}, {y});
  }
  return y;
}

}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return reduce_dims("sum", x, dims, keepdim, false);
}

Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return reduce_dims("mean", x, dims, keepdim, true);
}

Tensor amax(const Tensor& x, const std::vector<int64_t>& dims_in, bool keepdim) {
  detail::check_operand("amax", x, "x");
  const std::vector<int64_t> dims = detail::normalize_dims("amax", dims_in, x.shape());
  Tensor y = detail::reduce_raw(ReduceOp::Max, x, dims, 1.0).view(
      reduced_shape(x.shape(), dims, keepdim));
  if (autograd::should_record({x})) {
    auto node = std::make_shared<AmaxNode>(dims);
    node->saved_x = autograd::SavedTensor(x);
    node->saved_y = autograd::SavedTensor::output(y);
    autograd::record(node, {x}, {y});
  }
  return y;
}

}  // namespace tg::ops
