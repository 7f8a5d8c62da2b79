#include "tensor.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <iomanip>
#include <new>
#include <sstream>

#include "autograd.h"
#include "cuda_context.h"
#include "device_backend.h"
#include "rng.h"
#include "size.h"

namespace tg {

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

DType parse_dtype(const std::string& s) {
  if (s == "float32" || s == "f32" || s == "float") return DType::Float32;
  if (s == "float64" || s == "f64" || s == "double") return DType::Float64;
  TG_THROW("unknown dtype '", s, "': expected float32 or float64");
}

Device parse_device(const std::string& s) {
  if (s == "cpu") return Device::CPU;
  if (s == "cuda" || s == "gpu") return Device::CUDA;
  TG_THROW("unknown device '", s, "': expected cpu or cuda");
}

namespace {

std::atomic<uint64_t> g_next_id{1};

std::shared_ptr<TensorImpl> make_impl(const Shape& shape, DType dtype, Device device, bool pinned) {
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->dtype = dtype;
  impl->numel = checked_numel(shape);
  impl->storage =
      allocate_storage(checked_nbytes(shape, dtype_size(dtype)), device, pinned, &shape);
  impl->id = g_next_id.fetch_add(1);
  return impl;
}

template <typename T>
void fill_host(void* data, int64_t n, double value) {
  std::fill_n(static_cast<T*>(data), n, T(value));
}

// Host-side conversion between the two dtypes.
void convert_host(void* dst, DType dt, const void* src, DType st, int64_t n) {
  if (dt == st) {
    std::memcpy(dst, src, checked_bytes(n, dtype_size(dt), "dtype conversion"));
    return;
  }
  if (dt == DType::Float32) {
    auto* d = static_cast<float*>(dst);
    auto* s = static_cast<const double*>(src);
    for (int64_t i = 0; i < n; ++i) d[i] = float(s[i]);
  } else {
    auto* d = static_cast<double*>(dst);
    auto* s = static_cast<const float*>(src);
    for (int64_t i = 0; i < n; ++i) d[i] = double(s[i]);
  }
}

}  // namespace

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) {
  if (nbytes == 0) return;
  if (dst_device == Device::CPU && src_device == Device::CPU) {
    std::memcpy(dst, src, nbytes);
    return;
  }
  TG_IF_CUDA(detail::cuda_copy(dst, dst_device == Device::CUDA, src, src_device == Device::CUDA, nbytes));
}

// ---- factories ----------------------------------------------------------------------------------

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  return Tensor(make_impl(shape, dtype, device, false));
}

Tensor Tensor::from_external(void* data, const Shape& shape, DType dtype, Device device) {
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->dtype = dtype;
  impl->numel = checked_numel(shape);
  impl->storage = std::make_shared<Storage>();
  impl->storage->data = data;
  impl->storage->nbytes = checked_nbytes(shape, dtype_size(dtype));
  impl->storage->device = device;
  impl->storage->owned = false;
  TG_CHECK(data != nullptr || impl->numel == 0, "from_external: got a null pointer for ",
           impl->numel, " elements of shape ", shape);
  impl->id = g_next_id.fetch_add(1);
  return Tensor(impl);
}

Tensor Tensor::empty_pinned(const Shape& shape, DType dtype) {
  return Tensor(make_impl(shape, dtype, Device::CPU, true));
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  return full(shape, 0.0, dtype, device);
}

Tensor Tensor::ones(const Shape& shape, DType dtype, Device device) {
  return full(shape, 1.0, dtype, device);
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}

namespace {
template <typename Draw>
Tensor random_tensor(const Shape& shape, DType dtype, Device device, Draw draw) {
  Tensor host = Tensor::empty(shape, dtype, Device::CPU);
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    T* p = host.data<T>();
    for (int64_t i = 0; i < host.numel(); ++i) p[i] = T(draw());
  });
  return host.to(device);
}
}  // namespace

Tensor Tensor::rand(const Shape& shape, Generator& gen, DType dtype, Device device, double low,
                    double high) {
  return random_tensor(shape, dtype, device, [&] { return gen.uniform(low, high); });
}

Tensor Tensor::randn(const Shape& shape, Generator& gen, DType dtype, Device device, double mean,
                     double std) {
  return random_tensor(shape, dtype, device, [&] { return mean + std * gen.normal(); });
}

Tensor Tensor::rand(const Shape& shape, uint64_t seed, DType dtype, Device device) {
  Generator gen(seed);
  return rand(shape, gen, dtype, device);
}

Tensor Tensor::randn(const Shape& shape, uint64_t seed, DType dtype, Device device) {
  Generator gen(seed);
  return randn(shape, gen, dtype, device);
}

// ---- metadata -----------------------------------------------------------------------------------

size_t Tensor::nbytes() const {
  return checked_bytes(numel(), dtype_size(dtype()), "Tensor::nbytes");
}

const TensorImpl& Tensor::checked() const {
  TG_CHECK(impl_ != nullptr, "use of an undefined tensor");
  return *impl_;
}

const Shape& Tensor::shape() const { return checked().shape; }

int64_t Tensor::size(int64_t i) const {
  int64_t d = dim();
  int64_t j = i < 0 ? i + d : i;
  TG_CHECK(j >= 0 && j < d, "size(", i, "): tensor of shape ", shape(), " has ", d, " dimensions");
  return shape()[size_t(j)];
}

int64_t Tensor::numel() const { return checked().numel; }
DType Tensor::dtype() const { return checked().dtype; }
Device Tensor::device() const { return checked().storage->device; }
bool Tensor::is_pinned() const { return checked().storage->pinned; }

std::string Tensor::describe() const {
  if (!defined()) return "undefined tensor";
  std::ostringstream os;
  os << dtype_name(dtype()) << " " << device_name(device()) << " " << shape_str(shape());
  return os.str();
}

// ---- data ---------------------------------------------------------------------------------------

void* Tensor::raw_data() const {
  const TensorImpl& t = checked();
  return static_cast<char*>(t.storage->data) +
         checked_bytes(t.offset, dtype_size(t.dtype), "tensor offset");
}

template <typename T>
T* Tensor::data() const {
  TG_CHECK(dtype() == dtype_of<T>(), "data<", dtype_name(dtype_of<T>()), ">() on a ",
           dtype_name(dtype()), " tensor");
  return static_cast<T*>(raw_data());
}
template float* Tensor::data<float>() const;
template double* Tensor::data<double>() const;

double Tensor::item() const {
  TG_CHECK(numel() == 1, "item(): expected a tensor with one element, got shape ", shape());
  return to_vector<double>()[0];
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
  Tensor host = to(Device::CPU).to(dtype_of<T>());
  const T* p = host.data<T>();
  try {
    return std::vector<T>(p, p + host.numel());
  } catch (const std::bad_alloc&) {
    TG_THROW("to_vector: out of host memory: could not allocate ",
             checked_bytes(host.numel(), sizeof(T), "to_vector"), " bytes for the values of a ",
             describe(), " tensor");
  }
}
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;

Tensor Tensor::to(Device device) const {
  if (device == this->device()) return *this;
  Tensor out = empty(shape(), dtype(), device);
  copy_bytes(out.raw_data(), device, raw_data(), this->device(), nbytes());
  return out;
}

Tensor Tensor::to(DType dtype) const {
  if (dtype == this->dtype()) return *this;
  Tensor out = empty(shape(), dtype, device());
  if (device() == Device::CPU) {
    convert_host(out.raw_data(), dtype, raw_data(), this->dtype(), numel());
  } else {
    TG_IF_CUDA(detail::convert_cuda(out.raw_data(), dtype, raw_data(), this->dtype(), numel()));
  }
  return out;
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape(), dtype(), device());
  copy_bytes(out.raw_data(), device(), raw_data(), device(), nbytes());
  return out;
}

Tensor Tensor::view(const Shape& new_shape) const {
  TG_CHECK(checked_numel(new_shape) == numel(), "view: cannot view a tensor of shape ", shape(),
           " (", numel(), " elements) as ", new_shape);
  TG_CHECK(!(requires_grad() && autograd::grad_mode_enabled()),
           "view: the tensor takes part in autograd; view a detach()ed tensor instead");
  auto impl = std::make_shared<TensorImpl>(*impl_);
  impl->shape = new_shape;
  impl->id = g_next_id.fetch_add(1);
  impl->requires_grad = false;
  impl->grad.reset();
  impl->grad_fn.reset();
  impl->has_grad_fn = false;
  return Tensor(impl);
}

// ---- in place -----------------------------------------------------------------------------------

Tensor Tensor::view_rows(int64_t start, int64_t count) const {
  TG_CHECK(dim() >= 1, "view_rows: expected a tensor with at least one dimension, got shape ",
           shape());
  TG_CHECK(start >= 0 && count >= 0 && count <= size(0) - start, "view_rows: rows [", start, ", ",
           start, " + ", count, ") are outside the ", size(0), " rows of shape ", shape());
  Shape rows = shape();
  rows[0] = count;
  Tensor out = view(shape());  // a fresh handle (own id) on the same storage
  const int64_t row_elems = size(0) == 0 ? 0 : numel() / size(0);
  out.impl_->shape = rows;
  out.impl_->numel = checked_mul(count, row_elems, "view_rows");
  out.impl_->offset = impl_->offset + checked_mul(start, row_elems, "view_rows");
  return out;
}

Tensor& Tensor::fill_(double value) {
  if (device() == Device::CPU) {
    dispatch_dtype(dtype(), [&](auto tag) { fill_host<decltype(tag)>(raw_data(), numel(), value); });
  } else {
    TG_IF_CUDA(detail::fill_cuda(raw_data(), dtype(), numel(), value));
  }
  bump_version();
  return *this;
}

Tensor& Tensor::copy_(const Tensor& src) {
  TG_CHECK(src.shape() == shape(), "copy_: expected a source of shape ", shape(), ", got ",
           src.shape());
  Tensor s = src.to(dtype());
  copy_bytes(raw_data(), device(), s.raw_data(), s.device(), nbytes());
  bump_version();
  return *this;
}

Tensor& Tensor::add_(const Tensor& other, double alpha) {
  TG_CHECK(other.shape() == shape() && other.dtype() == dtype() && other.device() == device(),
           "add_: expected a tensor like ", describe(), ", got ", other.describe());
  if (device() == Device::CPU) {
    dispatch_dtype(dtype(), [&](auto tag) {
      using T = decltype(tag);
      T* y = data<T>();
      const T* x = other.data<T>();
      for (int64_t i = 0; i < numel(); ++i) y[i] += T(alpha) * x[i];
    });
  } else {
    TG_IF_CUDA(detail::axpy_cuda(raw_data(), other.raw_data(), dtype(), numel(), alpha));
  }
  bump_version();
  return *this;
}

// ---- autograd -----------------------------------------------------------------------------------

bool Tensor::requires_grad() const { return defined() && impl_->requires_grad; }

Tensor& Tensor::set_requires_grad(bool value) {
  TG_CHECK(!checked().has_grad_fn, "set_requires_grad: only leaf tensors can be marked; this tensor was "
                                "produced by a taped op");
  impl_->requires_grad = value;
  return *this;
}

bool Tensor::is_leaf() const { return !checked().has_grad_fn; }

Tensor Tensor::grad() const { return Tensor(checked().grad); }

void Tensor::set_grad(const Tensor& g) {
  checked();
  if (g.defined())
    TG_CHECK(g.shape() == shape() && g.dtype() == dtype() && g.device() == device(),
             "set_grad: expected a gradient like ", describe(), ", got ", g.describe());
  impl_->grad = g.impl_;
}

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>(checked());
  impl->id = g_next_id.fetch_add(1);
  impl->requires_grad = false;
  impl->grad.reset();
  impl->grad_fn.reset();
  impl->has_grad_fn = false;
  return Tensor(impl);
}

void Tensor::backward(const Tensor& gradient, bool retain_graph) const {
  Tensor g = gradient;
  if (!g.defined()) {
    TG_CHECK(numel() == 1, "backward: a tensor of shape ", shape(),
             " needs an explicit gradient (only one-element tensors get an implicit 1)");
    g = Tensor::ones(shape(), dtype(), device());
  }
  autograd::backward({*this}, {g}, retain_graph);
}

uint64_t Tensor::version() const { return checked().storage->version; }
void Tensor::bump_version() const { checked().storage->version += 1; }
uint64_t Tensor::id() const { return checked().id; }

// ---- Generator ----------------------------------------------------------------------------------

double Generator::normal() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  double u1 = 0.0;
  while (u1 <= 0.0) u1 = uniform();
  double u2 = uniform();
  double r = std::sqrt(-2.0 * std::log(u1));
  double theta = 2.0 * M_PI * u2;
  spare_ = r * std::sin(theta);
  has_spare_ = true;
  return r * std::cos(theta);
}

}  // namespace tg
