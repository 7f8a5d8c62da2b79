// Element types and devices.
#pragma once

#include <cstddef>
#include <ostream>
#include <string>

namespace tg {

enum class DType { Float32, Float64 };
enum class Device { CPU, CUDA };

inline size_t dtype_size(DType t) { return t == DType::Float32 ? 4 : 8; }
inline const char* dtype_name(DType t) { return t == DType::Float32 ? "float32" : "float64"; }
inline const char* device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }
/// Parses "float32"/"float64" (also "f32"/"f64"); throws tg::Error otherwise.
DType parse_dtype(const std::string& s);
/// Parses "cpu"/"cuda"; throws tg::Error otherwise.
Device parse_device(const std::string& s);

inline std::ostream& operator<<(std::ostream& os, DType t) { return os << dtype_name(t); }
inline std::ostream& operator<<(std::ostream& os, Device d) { return os << device_name(d); }

template <typename T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() { return DType::Float32; }
template <>
constexpr DType dtype_of<double>() { return DType::Float64; }

/// Calls f with a value of the C++ type that matches t: dispatch_dtype(t, [&](auto tag) { using T =
/// decltype(tag); ... }).
template <typename F>
decltype(auto) dispatch_dtype(DType t, F&& f) {
  if (t == DType::Float32) return f(float{});
  return f(double{});
}

}  // namespace tg
