// The machinery under every elementwise, broadcasting and copying op: one strided loop (CPU) and one
// kernel (CUDA) that evaluate apply_pointwise (ops/pointwise_math.h) over an index space, plus the
// tensor-level helpers that ops build on. Nothing here records on the tape.
//
// Layout: the output and up to three inputs are addressed by strides (in elements) over a common
// shape of at most kMaxDims dimensions. A broadcast input has stride 0 along the broadcast
// dimensions; a permuted or sliced input has the strides of its source. When every operand is
// contiguous (or a single broadcast element), the flat index is used directly.
//
// CUDA thread mapping: a grid-stride loop, one thread per output element, 256 threads per block.
#pragma once

#include <cstdint>
#include <vector>

#include "../core/tensor.h"
#include "pointwise_math.h"

struct CUstream_st;

namespace tg::ops::detail {

constexpr int kMaxDims = 8;

struct PointwiseParams {
  int ndim = 0;
  int nin = 0;
  int64_t n = 0;                     ///< elements of the index space
  int64_t shape[kMaxDims] = {};
  int64_t out_stride[kMaxDims] = {};
  int64_t in_stride[3][kMaxDims] = {};
  bool flat = false;                 ///< every operand contiguous or a single element
  bool in_single[3] = {};            ///< (when flat) input i is one element read everywhere
  double s0 = 0.0, s1 = 0.0;
};

/// out[.] = apply_pointwise(op, in[0][.], in[1][.], in[2][.], s0, s1) over p's index space.
/// Host pointers; unused inputs may be null.
template <typename T>
void pointwise_cpu(PointwiseOp op, T* out, const T* a, const T* b, const T* c,
                   const PointwiseParams& p);
/// The same on the device, queued on stream.
template <typename T>
void pointwise_cuda(PointwiseOp op, T* out, const T* a, const T* b, const T* c,
                    const PointwiseParams& p, CUstream_st* stream);

// ---- tensor-level helpers (no autograd) ---------------------------------------------------------

/// Row-major strides of a contiguous tensor of this shape.
Shape contiguous_strides(const Shape& shape);
/// NumPy's broadcast of two shapes; throws "<op>: cannot broadcast ..." naming both shapes.
Shape broadcast_shapes(const char* op, const Shape& a, const Shape& b);
/// Strides that read a tensor of shape `from` (contiguous) as if it had shape `to` (broadcast).
Shape broadcast_strides(const Shape& from, const Shape& to);

/// A strided operand: the tensor's data pointer plus an element offset and strides over the index
/// space.
struct StridedOperand {
  Tensor tensor;
  int64_t offset = 0;
  Shape strides;
};

/// Runs op over `shape` writing out (at out_offset with out_strides) from the given operands. All
/// tensors share dtype and device.
void run_pointwise(PointwiseOp op, const Tensor& out, int64_t out_offset, const Shape& out_strides,
                   const Shape& shape, const std::vector<StridedOperand>& in, double s0 = 0.0,
                   double s1 = 0.0);

/// A new tensor of the broadcast shape of the inputs: op applied elementwise with NumPy
/// broadcasting. The inputs must agree in dtype and device (checked by the caller).
Tensor pointwise(PointwiseOp op, const std::vector<Tensor>& inputs, double s0 = 0.0,
                 double s1 = 0.0);
/// A new tensor of shape `shape`: op applied with each input broadcast to shape.
Tensor pointwise_to(PointwiseOp op, const Shape& shape, const std::vector<Tensor>& inputs,
                    double s0 = 0.0, double s1 = 0.0);

/// g summed down to `shape` (the reverse of broadcasting shape to g's shape): leading dimensions
/// and those where shape has size 1 are summed. Returns g itself when the shapes are equal.
Tensor sum_to_shape(const Tensor& g, const Shape& shape);

/// Checks that t is a defined, non-empty tensor (the message names op and the operand).
void check_operand(const char* op, const Tensor& t, const char* name);
/// Checks that a and b agree in dtype and device.
void check_same_kind(const char* op, const Tensor& a, const Tensor& b);

}  // namespace tg::ops::detail
