// tg::Tensor: a cheap handle to (shared storage, shape, dtype, device, offset).
//
// Tensors are always contiguous and row-major (NCHW for images). Copying a Tensor copies the handle;
// clone() copies the data. Data moves between host and device only where the call says so (to(),
// cpu(), to_vector(), item(), copy_()); those calls wait for the device.
#pragma once

#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include <type_traits>
#include <vector>

#include "dtype.h"
#include "error.h"
#include "memory.h"
#include "size.h"

namespace tg {

class Generator;
namespace autograd {
class Node;
}

/// Internal state of a Tensor. Use the Tensor handle; this is public only for the autograd engine.
struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  DType dtype = DType::Float32;
  int64_t offset = 0;  ///< in elements
  int64_t numel = 0;
  // autograd
  uint64_t id = 0;                          ///< unique, never reused; the tape's key for this tensor
  bool requires_grad = false;               ///< a leaf that wants .grad(), or an output of a taped op
  std::shared_ptr<TensorImpl> grad;         ///< accumulated gradient of a leaf
  std::weak_ptr<autograd::Node> grad_fn;    ///< the node that produced this tensor (non-leaves)
  bool has_grad_fn = false;                 ///< was produced by a taped op (grad_fn may since be freed)
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- factories --------------------------------------------------------------------------------
  static Tensor empty(const Shape& shape, DType dtype = DType::Float32, Device device = Device::CPU);
  /// Host tensor in page-locked memory (falls back to ordinary memory in a build without CUDA).
  static Tensor empty_pinned(const Shape& shape, DType dtype = DType::Float32);
  static Tensor zeros(const Shape& shape, DType dtype = DType::Float32, Device device = Device::CPU);
  static Tensor ones(const Shape& shape, DType dtype = DType::Float32, Device device = Device::CPU);
  static Tensor full(const Shape& shape, double value, DType dtype = DType::Float32,
                     Device device = Device::CPU);
  /// Uniform in [low, high), drawn on the host from gen, so CPU and CUDA tensors get the same values.
  static Tensor rand(const Shape& shape, Generator& gen, DType dtype = DType::Float32,
                     Device device = Device::CPU, double low = 0.0, double high = 1.0);
  /// Normal(mean, std), drawn on the host from gen.
  static Tensor randn(const Shape& shape, Generator& gen, DType dtype = DType::Float32,
                      Device device = Device::CPU, double mean = 0.0, double std = 1.0);
  /// Seeded overloads: a fresh Generator(seed) per call.
  static Tensor rand(const Shape& shape, uint64_t seed, DType dtype = DType::Float32,
                     Device device = Device::CPU);
  static Tensor randn(const Shape& shape, uint64_t seed, DType dtype = DType::Float32,
                      Device device = Device::CPU);
  /// A contiguous view of memory that someone else owns and keeps alive (and unchanged in layout)
  /// for as long as the tensor or a copy of its handle lives; tapegrad never frees it.
  static Tensor from_external(void* data, const Shape& shape, DType dtype, Device device);
  /// Copies host values into a new tensor of the given shape (values.size() must equal its numel).
  /// T is float (float32) or double (float64); any other type is a compile error.
  template <typename T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape,
                            Device device = Device::CPU) {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                  "Tensor::from_vector: the element type must be float (float32) or double (float64)");
    TG_CHECK(int64_t(values.size()) == checked_numel(shape), "from_vector: shape ", shape,
             " needs ", checked_numel(shape), " values, got ", values.size());
    return from_blob(values.data(), shape, dtype_of<T>(), device);
  }
  /// A copy of numel(shape) values of dtype read from the host buffer data (which stays the
  /// caller's), on device.
  static Tensor from_blob(const void* data, const Shape& shape, DType dtype,
                          Device device = Device::CPU);

  // ---- metadata ---------------------------------------------------------------------------------
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  int64_t dim() const { return int64_t(shape().size()); }
  /// Size of dimension i; negative i counts from the end.
  int64_t size(int64_t i) const;
  int64_t numel() const;
  DType dtype() const;
  Device device() const;
  bool is_cuda() const { return device() == Device::CUDA; }
  bool is_pinned() const;
  size_t nbytes() const;
  /// "float32 cuda [128, 32, 254, 254]"
  std::string describe() const;

  // ---- data -------------------------------------------------------------------------------------
  void* raw_data() const;
  /// Typed pointer; throws if T does not match dtype().
  template <typename T>
  T* data() const;
  /// The single value of a one-element tensor, as double (waits for the device).
  double item() const;
  /// All values, converted to T, on the host (waits for the device).
  template <typename T>
  std::vector<T> to_vector() const;
  /// The element at index (one coordinate per dimension, negative counted from the end) of a host
  /// tensor whose dtype is T: t.at<float>({n, c, h, w}) = 1. Writing through it does not bump the
  /// version counter. Throws on a device tensor, a dtype mismatch or an index out of range.
  template <typename T>
  T& at(const std::vector<int64_t>& index) const {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                  "Tensor::at: the element type must be float (float32) or double (float64)");
    return data<T>()[element_offset(index)];
  }

  Tensor to(Device device) const;  ///< a copy on device (this tensor itself when already there)
  Tensor to(DType dtype) const;    ///< a converted copy (this tensor itself when already that dtype)
  Tensor cpu() const { return to(Device::CPU); }
  Tensor cuda() const { return to(Device::CUDA); }
  Tensor clone() const;            ///< a copy with its own storage, not recorded by autograd
  /// Same data, new shape with the same numel; shares storage. Not differentiable: throws when the
  /// tensor takes part in autograd.
  Tensor view(const Shape& shape) const;
  /// Rows [start, start + count) of dimension 0, sharing storage (no copy). Not differentiable:
  /// throws like view() when the tensor takes part in autograd.
  Tensor view_rows(int64_t start, int64_t count) const;
  /// Same data, new shape with the same numel (one dimension may be -1: inferred); shares storage.
  /// Differentiable: the gradient is reshaped back (core/reshape.cpp).
  Tensor reshape(const Shape& shape) const;

  // ---- in place (each bumps the version counter) ------------------------------------------------
  Tensor& fill_(double value);
  Tensor& zero_() { return fill_(0.0); }
  /// Copies src's values (same shape; any device; dtype converted) into this tensor.
  Tensor& copy_(const Tensor& src);
  /// this += alpha * other (same shape, dtype and device).
  Tensor& add_(const Tensor& other, double alpha = 1.0);

  // ---- autograd ---------------------------------------------------------------------------------
  bool requires_grad() const;
  /// Marks a leaf as wanting a gradient. Throws on a tensor produced by a taped op.
  Tensor& set_requires_grad(bool value = true);
  bool is_leaf() const;
  /// Accumulated gradient (undefined until a backward reaches this leaf).
  Tensor grad() const;
  void set_grad(const Tensor& g);
  /// Same data, cut from the graph (requires_grad false).
  Tensor detach() const;
  /// Runs the tape backward from this tensor: a one-element tensor gets gradient 1; any other tensor
  /// needs an explicit gradient of its shape. Clears the tape unless retain_graph.
  void backward(const Tensor& gradient = Tensor(), bool retain_graph = false) const;
  uint64_t version() const;
  void bump_version() const;
  uint64_t id() const;

  const std::shared_ptr<TensorImpl>& impl() const { return impl_; }
  bool same(const Tensor& other) const { return impl_ == other.impl_; }

 private:
  const TensorImpl& checked() const;
  /// Flat offset of index in a host tensor (core/tensor_access.cpp); throws with the shape.
  int64_t element_offset(const std::vector<int64_t>& index) const;
  std::shared_ptr<TensorImpl> impl_;
};

/// Prints like PyTorch: tensor([[...], ...], shape=[..], dtype=float32, device=cpu); values nested by
/// dimension, 4 decimals, and past 1000 elements only the first and last 3 of each dimension with
/// "..." between (core/tensor_access.cpp).
std::ostream& operator<<(std::ostream& os, const Tensor& t);

/// Copies count elements between two buffers that may live on different devices (waits for the
/// device when the destination is the host).
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes);

}  // namespace tg
