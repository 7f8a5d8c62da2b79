// Element access, Tensor::from_blob and printing (declared in core/tensor.h).
#include <cstdio>
#include <cstring>
#include <ostream>
#include <string>
#include <vector>

#include "tensor.h"

namespace tg {

Tensor Tensor::from_blob(const void* data, const Shape& shape, DType dtype, Device device) {
  const int64_t n = checked_numel(shape);
  TG_CHECK(data != nullptr || n == 0, "from_blob: null data for a tensor of shape ", shape);
  Tensor host = empty(shape, dtype, Device::CPU);
  if (n > 0) std::memcpy(host.raw_data(), data, host.nbytes());
  return host.to(device);
}

int64_t Tensor::element_offset(const std::vector<int64_t>& index) const {
  TG_CHECK(defined(), "at: use of an undefined tensor");
  TG_CHECK(device() == Device::CPU, "at: element access needs a host tensor, got ", describe(),
           "; copy it with cpu() first");
  const Shape& s = shape();
  TG_CHECK(index.size() == s.size(), "at: expected ", s.size(), " indices for shape ", s, ", got ",
           Shape(index));
  int64_t off = 0;
  for (size_t d = 0; d < s.size(); ++d) {
    const int64_t i = index[d] < 0 ? index[d] + s[d] : index[d];
    TG_CHECK(i >= 0 && i < s[d], "at: index ", index[d], " is out of range for dimension ", d,
             " of size ", s[d], " (shape ", s, ")");
    off = off * s[d] + i;
  }
  return off;
}

namespace {

constexpr int64_t kSummarizeThreshold = 1000;  // as torch's print options
constexpr int64_t kEdgeItems = 3;

std::string format_value(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.4f", v);
  return buf;
}

// Writes dimension d of the block starting at flat offset base; indent is the column of '['.
void print_dim(std::ostream& os, const std::vector<double>& v, const Shape& shape,
               const Shape& strides, size_t d, int64_t base, bool summarize, size_t width,
               size_t indent) {
  const int64_t n = shape[d];
  os << "[";
  auto item = [&](int64_t i) {
    if (d + 1 == shape.size()) {
      const std::string s = format_value(v[size_t(base + i)]);
      os << std::string(width > s.size() ? width - s.size() : 0, ' ') << s;
    } else {
      print_dim(os, v, shape, strides, d + 1, base + i * strides[d], summarize, width, indent + 1);
    }
  };
  const std::string sep = d + 1 == shape.size()
                              ? std::string(", ")
                              : "," + std::string(shape.size() - d - 1, '\n') + std::string(indent + 1, ' ');
  const bool cut = summarize && n > 2 * kEdgeItems;
  for (int64_t i = 0; i < n; ++i) {
    if (cut && i == kEdgeItems) {
      os << "..." << sep;
      i = n - kEdgeItems;
    }
    item(i);
    if (i + 1 < n) os << sep;
  }
  os << "]";
}

}  // namespace

std::ostream& operator<<(std::ostream& os, const Tensor& t) {
  if (!t.defined()) return os << "tensor(undefined)";
  os << "tensor(";
  const Shape& shape = t.shape();
  if (t.numel() == 0) {
    os << "[]";
  } else {
    const auto v = t.to_vector<double>();
    const bool summarize = t.numel() > kSummarizeThreshold;
    size_t width = 0;
    for (double x : v) width = std::max(width, format_value(x).size());
    if (shape.empty()) {
      os << format_value(v[0]);
    } else {
      Shape strides(shape.size(), 1);
      for (int64_t d = int64_t(shape.size()) - 2; d >= 0; --d) strides[d] = strides[d + 1] * shape[d + 1];
      print_dim(os, v, shape, strides, 0, 0, summarize, width, 7);  // 7 = strlen("tensor(")
    }
  }
  os << ", shape=" << shape_str(shape) << ", dtype=" << dtype_name(t.dtype())
     << ", device=" << device_name(t.device());
  if (t.requires_grad()) os << ", requires_grad=True";
  return os << ")";
}

}  // namespace tg
