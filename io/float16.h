// The element types of dataset files, and exact conversions of the 16-bit floats.
//
// float16 (IEEE binary16: 1 sign, 5 exponent, 10 mantissa bits) and bfloat16 (1, 8, 7: the upper
// half of a float32) are storage formats only: every value of either is exactly a float32 (and a
// float64), so widening is exact. Narrowing (for writers) rounds to nearest, ties to even; a
// finite value beyond the format's range becomes +-inf, and NaN stays NaN.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#include "../core/dtype.h"

namespace tg::io {

/// How a dataset stores its elements.
enum class ElementType { Float32, Float64, Float16, BFloat16 };

inline size_t element_size(ElementType t) {
  return t == ElementType::Float64 ? 8 : t == ElementType::Float32 ? 4 : 2;
}
inline const char* element_type_name(ElementType t) {
  switch (t) {
    case ElementType::Float32:
      return "float32";
    case ElementType::Float64:
      return "float64";
    case ElementType::Float16:
      return "float16";
    case ElementType::BFloat16:
      return "bfloat16";
  }
  return "?";
}
inline bool is_half_width(ElementType t) {
  return t == ElementType::Float16 || t == ElementType::BFloat16;
}
inline ElementType element_type_of(DType t) {
  return t == DType::Float32 ? ElementType::Float32 : ElementType::Float64;
}
/// Parses "float32", "float64", "float16" or "bfloat16"; throws tg::Error naming the choices.
ElementType parse_element_type(const std::string& s);

namespace half_bits {

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/// float16 bits -> float32, exact. The exponent and mantissa are moved into float32's fields and
/// rebiased by a multiplication by 2^112 (exact: a power of two, and the result is a normal float32
/// for every finite float16, subnormals included; needs no denormals-are-zero mode); inf and NaN
/// keep an all-ones exponent.
inline float f16_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7fffu;
  const uint32_t bits =
      em >= 0x7c00u ? (em << 13) | 0x7f800000u : float_bits(bits_float(em << 13) * 0x1p112f);
  return bits_float(sign | bits);
}

/// bfloat16 bits -> float32, exact (the upper half of a float32).
inline float bf16_to_float(uint16_t h) { return bits_float(uint32_t(h) << 16); }

/// float32 -> float16 bits, round to nearest even; overflow gives +-inf, NaN a quiet NaN.
inline uint16_t float_to_f16(float f) {
  const uint32_t u = float_bits(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return uint16_t(sign | 0x7e00u | ((a >> 13) & 0x3ffu));  // NaN
  if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // >= 65520: rounds to inf (or is inf)
  if (a < 0x38800000u) {  // below 2^-14: a float16 subnormal (or zero)
    // a * 2^24 rounded to an integer is the subnormal's mantissa: do it in float arithmetic,
    // which rounds to nearest even (0.5 * 2^-24 ties go to the even mantissa).
    const float scaled = bits_float(a) * 0x1p24f;  // exact (power of two, stays normal or zero)
    const float rounded = (scaled + 0x1p23f) - 0x1p23f;
    return uint16_t(sign | uint16_t(rounded));
  }
  // Normal: drop 13 mantissa bits with round-to-nearest-even, then rebias the exponent.
  const uint32_t rounded = a + 0xfffu + ((a >> 13) & 1u);
  return uint16_t(sign | ((rounded - 0x38000000u) >> 13));
}

/// float32 -> bfloat16 bits, round to nearest even; overflow gives +-inf, NaN a quiet NaN.
inline uint16_t float_to_bf16(float f) {
  const uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x0040u);  // NaN
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

inline float to_float(ElementType t, uint16_t h) {
  return t == ElementType::Float16 ? f16_to_float(h) : bf16_to_float(h);
}
inline uint16_t from_float(ElementType t, float f) {
  return t == ElementType::Float16 ? float_to_f16(f) : float_to_bf16(f);
}
/// Whether the bits are inf or NaN.
inline bool nonfinite(ElementType t, uint16_t h) {
  return (h & 0x7fffu) >= (t == ElementType::Float16 ? 0x7c00u : 0x7f80u);
}

}  // namespace half_bits

/// Widens n 16-bit values of type t (float16 or bfloat16) to float32 / float64, exactly.
void widen_half(ElementType t, const uint16_t* src, float* dst, size_t n);
void widen_half(ElementType t, const uint16_t* src, double* dst, size_t n);
/// Narrows n float32 values to type t, round to nearest even.
void narrow_to_half(ElementType t, const float* src, uint16_t* dst, size_t n);
/// Index of the first inf or NaN of n 16-bit values of type t, or -1.
int64_t first_nonfinite_half(ElementType t, const uint16_t* p, size_t n);

}  // namespace tg::io
