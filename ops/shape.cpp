// Shape ops (ops/shape.h): validation, strided copies through run_pointwise, autograd nodes.
#include "shape.h"

#include <memory>

#include "../core/autograd.h"
#include "pointwise.h"

namespace tg::ops {
namespace {

using detail::contiguous_strides;
using detail::PointwiseOp;

int64_t normalize_dim(const char* op, int64_t dim, int64_t rank, const Shape& shape) {
  const int64_t d = dim < 0 ? dim + rank : dim;
  TG_CHECK(d >= 0 && d < rank, op, ": dimension ", dim, " is out of range for a tensor of shape ",
           shape, " (expected -", rank, " <= dim < ", rank, ")");
  return d;
}

// y = x with dimensions reordered by dims (a validated permutation).
Tensor permute_raw(const Tensor& x, const std::vector<int64_t>& dims) {
  const Shape xs = contiguous_strides(x.shape());
  Shape shape, strides;
  for (int64_t d : dims) {
    shape.push_back(x.shape()[d]);
    strides.push_back(xs[d]);
  }
  Tensor y = Tensor::empty(shape, x.dtype(), x.device());
  detail::run_pointwise(PointwiseOp::Affine, y, 0, contiguous_strides(shape), shape, {{x, 0, strides}},
                        1.0, 0.0);
  return y;
}

// Copies src (contiguous) into the slice [start, start + src.size(dim)) of dst along dim.
void write_slice(const Tensor& dst, const Tensor& src, int64_t dim, int64_t start) {
  const Shape ds = contiguous_strides(dst.shape());
  detail::run_pointwise(PointwiseOp::Affine, dst, start * ds[dim], ds, src.shape(),
                        {{src, 0, contiguous_strides(src.shape())}}, 1.0, 0.0);
}

// The slice [start, start + length) of x along dim, as a new tensor.
Tensor read_slice(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
  Shape shape = x.shape();
  shape[dim] = length;
  Tensor y = Tensor::empty(shape, x.dtype(), x.device());
  const Shape xs = contiguous_strides(x.shape());
  detail::run_pointwise(PointwiseOp::Affine, y, 0, contiguous_strides(shape), shape,
                        {{x, start * xs[dim], xs}}, 1.0, 0.0);
  return y;
}

class PermuteNode : public autograd::Node {
 public:
  explicit PermuteNode(std::vector<int64_t> dims) : dims_(std::move(dims)) {}
  const char* name() const override { return "permute"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    if (!needs_input_grad(0)) return {Tensor()};
    std::vector<int64_t> inverse(dims_.size());
    for (size_t i = 0; i < dims_.size(); ++i) inverse[dims_[i]] = int64_t(i);
    return {permute_raw(grads[0], inverse)};
  }

 private:
  std::vector<int64_t> dims_;
};

class CatNode : public autograd::Node {
 public:
  explicit CatNode(int64_t dim) : dim_(dim) {}
  const char* name() const override { return "cat"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    std::vector<Tensor> d(inputs().size());
    int64_t start = 0;
    for (size_t i = 0; i < inputs().size(); ++i) {
      const int64_t len = inputs()[i].shape[dim_];
      if (needs_input_grad(i)) d[i] = read_slice(grads[0], dim_, start, len);
      start += len;
    }
    return d;
  }

 private:
  int64_t dim_;
};

class NarrowNode : public autograd::Node {
 public:
  NarrowNode(int64_t dim, int64_t start) : dim_(dim), start_(start) {}
  const char* name() const override { return "narrow"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    if (!needs_input_grad(0)) return {Tensor()};
    const auto& in = inputs()[0];
    Tensor dx = Tensor::zeros(in.shape, in.dtype, in.device);
    write_slice(dx, grads[0], dim_, start_);
    return {dx};
  }

 private:
  int64_t dim_, start_;
};

}  // namespace

Tensor reshape(const Tensor& x, const Shape& shape) { return x.reshape(shape); }

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims_in) {
  detail::check_operand("permute", x, "x");
  const int64_t rank = x.dim();
  TG_CHECK(int64_t(dims_in.size()) == rank, "permute: expected ", rank,
           " dimensions for a tensor of shape ", x.shape(), ", got ", Shape(dims_in));
  std::vector<int64_t> dims;
  std::vector<bool> seen(size_t(rank), false);
  for (int64_t d : dims_in) {
    const int64_t j = normalize_dim("permute", d, rank, x.shape());
    TG_CHECK(!seen[size_t(j)], "permute: dimension ", d, " appears more than once in ", Shape(dims_in));
    seen[size_t(j)] = true;
    dims.push_back(j);
  }
  Tensor y = permute_raw(x, dims);
  if (autograd::should_record({x})) autograd::record(std::make_shared<PermuteNode>(dims), {x}, {y});
  return y;
}

Tensor cat(const std::vector<Tensor>& tensors, int64_t dim_in) {
  TG_CHECK(!tensors.empty(), "cat: expected at least one tensor, got none");
  for (size_t i = 0; i < tensors.size(); ++i)
    TG_CHECK(tensors[i].defined(), "cat: tensor ", i, " is undefined");
  const Tensor& first = tensors[0];
  TG_CHECK(first.dim() > 0, "cat: cannot concatenate 0-dim tensors");
  const int64_t dim = normalize_dim("cat", dim_in, first.dim(), first.shape());
  Shape shape = first.shape();
  shape[dim] = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    TG_CHECK(t.dtype() == first.dtype() && t.device() == first.device(), "cat: tensor ", i, " is ",
             t.describe(), ", expected the dtype and device of tensor 0 (", first.describe(), ")");
    bool ok = t.dim() == first.dim();
    for (int64_t d = 0; ok && d < first.dim(); ++d) ok = d == dim || t.shape()[d] == first.shape()[d];
    TG_CHECK(ok, "cat: tensor ", i, " has shape ", t.shape(), "; expected ", first.shape(),
             " except in dimension ", dim);
    shape[dim] += t.shape()[dim];
  }
  Tensor y = Tensor::empty(shape, first.dtype(), first.device());
  int64_t start = 0;
  for (const Tensor& t : tensors) {
    if (t.numel() > 0) write_slice(y, t, dim, start);
    start += t.shape()[dim];
  }
  if (autograd::should_record(tensors)) autograd::record(std::make_shared<CatNode>(dim), tensors, {y});
  return y;
}

Tensor narrow(const Tensor& x, int64_t dim_in, int64_t start, int64_t length) {
  TG_CHECK(x.defined(), "narrow: expected a defined tensor as x, got an undefined tensor");
  TG_CHECK(x.dim() > 0, "narrow: cannot narrow a 0-dim tensor");
  const int64_t dim = normalize_dim("narrow", dim_in, x.dim(), x.shape());
  const int64_t size = x.shape()[dim];
  TG_CHECK(start >= 0 && length >= 0 && start + length <= size, "narrow: start ", start,
           " and length ", length, " do not fit dimension ", dim_in, " of size ", size, " (shape ",
           x.shape(), ")");
  Tensor y = read_slice(x, dim, start, length);
  if (autograd::should_record({x}))
    autograd::record(std::make_shared<NarrowNode>(dim, start), {x}, {y});
  return y;
}

}  // namespace tg::ops
