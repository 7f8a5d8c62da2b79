// The CPU loop of ops/pointwise.h and the tensor-level helpers (broadcasting, strided runs).
#include "pointwise.h"

#include <algorithm>

#include "../core/cuda_context.h"
#include "reduce.h"
#ifdef TG_WITH_CUDA
#include "../core/cuda_utils.h"
#endif

namespace tg::ops::detail {

// ---- CPU loop -----------------------------------------------------------------------------------

template <typename T>
void pointwise_cpu(PointwiseOp op, T* out, const T* a, const T* b, const T* c,
                   const PointwiseParams& p) {
  const T s0 = T(p.s0), s1 = T(p.s1);
  const T* in[3] = {a, b, c};
  if (p.flat) {
    const int64_t step[3] = {p.in_single[0] ? 0 : 1, p.in_single[1] ? 0 : 1,
                             p.in_single[2] ? 0 : 1};
    const T zero = T(0);
    for (int64_t i = 0; i < p.n; ++i) {
      out[i] = apply_pointwise<T>(op, in[0] ? in[0][i * step[0]] : zero,
                                  in[1] ? in[1][i * step[1]] : zero,
                                  in[2] ? in[2][i * step[2]] : zero, s0, s1);
    }
    return;
  }
  // Odometer over the index space: coordinates and the four running offsets.
  int64_t coord[kMaxDims] = {};
  int64_t off_out = 0, off[3] = {0, 0, 0};
  for (int64_t i = 0; i < p.n; ++i) {
    out[off_out] = apply_pointwise<T>(op, in[0] ? in[0][off[0]] : T(0),
                                      in[1] ? in[1][off[1]] : T(0),
                                      in[2] ? in[2][off[2]] : T(0), s0, s1);
    for (int d = p.ndim - 1; d >= 0; --d) {
      off_out += p.out_stride[d];
      for (int k = 0; k < 3; ++k) off[k] += p.in_stride[k][d];
      if (++coord[d] < p.shape[d]) break;
      off_out -= p.out_stride[d] * p.shape[d];
      for (int k = 0; k < 3; ++k) off[k] -= p.in_stride[k][d] * p.shape[d];
      coord[d] = 0;
    }
  }
}

template void pointwise_cpu<float>(PointwiseOp, float*, const float*, const float*, const float*,
                                   const PointwiseParams&);
template void pointwise_cpu<double>(PointwiseOp, double*, const double*, const double*,
                                    const double*, const PointwiseParams&);

// ---- shapes -------------------------------------------------------------------------------------

Shape contiguous_strides(const Shape& shape) {
  Shape s(shape.size(), 1);
  for (int64_t d = int64_t(shape.size()) - 2; d >= 0; --d) s[d] = s[d + 1] * shape[d + 1];
  return s;
}

Shape broadcast_shapes(const char* op, const Shape& a, const Shape& b) {
  const size_t nd = std::max(a.size(), b.size());
  Shape out(nd);
  for (size_t i = 0; i < nd; ++i) {
    // i counts from the last dimension.
    const int64_t x = i < a.size() ? a[a.size() - 1 - i] : 1;
    const int64_t y = i < b.size() ? b[b.size() - 1 - i] : 1;
    if (x != y && x != 1 && y != 1) {
      // The lower-dimensional operand is named first ("cannot broadcast [4, 1, 1] against ...").
      const bool a_first = a.size() < b.size();
      TG_THROW(op, ": cannot broadcast ", a_first ? a : b, " against ", a_first ? b : a,
               ": sizes ", x, " and ", y, " at dimension -", i + 1,
               " differ and neither is 1 (NumPy broadcasting)");
    }
    out[nd - 1 - i] = x == 1 ? y : x;
  }
  return out;
}

Shape broadcast_strides(const Shape& from, const Shape& to) {
  const Shape cs = contiguous_strides(from);
  Shape s(to.size(), 0);
  const size_t lead = to.size() - from.size();
  for (size_t d = 0; d < from.size(); ++d) s[lead + d] = from[d] == 1 ? 0 : cs[d];
  return s;
}

// ---- runs ---------------------------------------------------------------------------------------

void run_pointwise(PointwiseOp op, const Tensor& out, int64_t out_offset, const Shape& out_strides,
                   const Shape& shape, const std::vector<StridedOperand>& in, double s0,
                   double s1) {
  TG_CHECK(shape.size() <= size_t(kMaxDims), "pointwise ops support at most ", kMaxDims,
           " dimensions, got shape ", shape);
  TG_CHECK(in.size() <= 3, "pointwise ops take at most 3 inputs");
  PointwiseParams p;
  p.ndim = int(shape.size());
  p.nin = int(in.size());
  p.n = checked_numel(shape);
  p.s0 = s0;
  p.s1 = s1;
  if (p.n == 0) return;
  const Shape cs = contiguous_strides(shape);
  // Size-1 dimensions never move an offset, so their strides do not matter for flatness.
  auto same_as_contiguous = [&](const Shape& s) {
    for (size_t d = 0; d < shape.size(); ++d)
      if (shape[d] != 1 && s[d] != cs[d]) return false;
    return true;
  };
  auto all_zero = [&](const Shape& s) {
    for (size_t d = 0; d < shape.size(); ++d)
      if (shape[d] != 1 && s[d] != 0) return false;
    return true;
  };
  p.flat = same_as_contiguous(out_strides);
  for (size_t d = 0; d < shape.size(); ++d) {
    p.shape[d] = shape[d];
    p.out_stride[d] = out_strides[d];
  }
  for (size_t k = 0; k < in.size(); ++k) {
    p.in_single[k] = all_zero(in[k].strides);
    p.flat = p.flat && (p.in_single[k] || same_as_contiguous(in[k].strides));
    for (size_t d = 0; d < shape.size(); ++d) p.in_stride[k][d] = in[k].strides[d];
  }
  dispatch_dtype(out.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* ptr[3] = {nullptr, nullptr, nullptr};
    for (size_t k = 0; k < in.size(); ++k) ptr[k] = in[k].tensor.data<T>() + in[k].offset;
    T* o = out.data<T>() + out_offset;
    if (out.is_cuda()) {
      TG_IF_CUDA(pointwise_cuda<T>(op, o, ptr[0], ptr[1], ptr[2], p, cuda::stream()));
    } else {
      pointwise_cpu<T>(op, o, ptr[0], ptr[1], ptr[2], p);
    }
  });
}

Tensor pointwise_to(PointwiseOp op, const Shape& shape, const std::vector<Tensor>& inputs,
                    double s0, double s1) {
  Tensor out = Tensor::empty(shape, inputs[0].dtype(), inputs[0].device());
  std::vector<StridedOperand> in;
  for (const Tensor& t : inputs) in.push_back({t, 0, broadcast_strides(t.shape(), shape)});
  run_pointwise(op, out, 0, contiguous_strides(shape), shape, in, s0, s1);
  return out;
}

Tensor pointwise(PointwiseOp op, const std::vector<Tensor>& inputs, double s0, double s1) {
  Shape shape = inputs[0].shape();
  for (size_t k = 1; k < inputs.size(); ++k)
    shape = broadcast_shapes("pointwise", shape, inputs[k].shape());
  return pointwise_to(op, shape, inputs, s0, s1);
}

Tensor sum_to_shape(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  const Shape& gs = g.shape();
  const size_t lead = gs.size() - shape.size();
  std::vector<int64_t> dims;
  for (size_t d = 0; d < gs.size(); ++d)
    if (d < lead || (shape[d - lead] == 1 && gs[d] != 1)) dims.push_back(int64_t(d));
  Tensor r = dims.empty() ? g : reduce_raw(ReduceOp::Sum, g, dims, 1.0);
  return r.view(shape);
}

void check_operand(const char* op, const Tensor& t, const char* name) {
  TG_CHECK(t.defined(), op, ": expected a defined tensor as ", name, ", got an undefined tensor");
  TG_CHECK(t.numel() > 0, op, ": expected a non-empty tensor as ", name, ", got shape ", t.shape());
}

void check_same_kind(const char* op, const Tensor& a, const Tensor& b) {
  TG_CHECK(a.dtype() == b.dtype(), op, ": expected operands of the same dtype, got a ", a.dtype(),
           " and b ", b.dtype());
  TG_CHECK(a.device() == b.device(), op, ": expected operands on the same device, got a on ",
           a.device(), " and b on ", b.device());
}

}  // namespace tg::ops::detail
