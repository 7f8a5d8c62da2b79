#include "float16.h"

#include <algorithm>
#include <type_traits>
#ifdef __F16C__
#include <immintrin.h>
#endif

#include "../core/error.h"

namespace tg::io {

ElementType parse_element_type(const std::string& s) {
  for (ElementType t :
       {ElementType::Float32, ElementType::Float64, ElementType::Float16, ElementType::BFloat16}) {
    if (s == element_type_name(t)) return t;
  }
  TG_THROW("unknown element type '", s, "': expected float32, float64, float16 or bfloat16");
}

namespace {

// One loop per type so that each vectorises (the conversions are branch-free selects); float16 to
// float32 with F16C's vcvtph2ps where the compiler targets it (exact, 3x faster than the loop).
template <typename Out>
void widen(ElementType t, const uint16_t* src, Out* dst, size_t n) {
  if (t == ElementType::Float16) {
    size_t i = 0;
#ifdef __F16C__
    if constexpr (std::is_same_v<Out, float>) {
      for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
      }
    }
#endif
    for (; i < n; ++i) dst[i] = Out(half_bits::f16_to_float(src[i]));
  } else {
    for (size_t i = 0; i < n; ++i) dst[i] = Out(half_bits::bf16_to_float(src[i]));
  }
}

}  // namespace

void widen_half(ElementType t, const uint16_t* src, float* dst, size_t n) { widen(t, src, dst, n); }
void widen_half(ElementType t, const uint16_t* src, double* dst, size_t n) {
  widen(t, src, dst, n);
}

void narrow_to_half(ElementType t, const float* src, uint16_t* dst, size_t n) {
  TG_CHECK(is_half_width(t), "narrow_to_half: expected float16 or bfloat16, got ",
           element_type_name(t));
  if (t == ElementType::Float16) {
    for (size_t i = 0; i < n; ++i) dst[i] = half_bits::float_to_f16(src[i]);
  } else {
    for (size_t i = 0; i < n; ++i) dst[i] = half_bits::float_to_bf16(src[i]);
  }
}

int64_t first_nonfinite_half(ElementType t, const uint16_t* p, size_t n) {
  // Non-finite: all exponent bits set, i.e. |bits| >= the infinity's. Per block, the largest
  // |bits| (a max reduction, which vectorises) says whether to look for the first one.
  const uint16_t limit = t == ElementType::Float16 ? 0x7c00u : 0x7f80u;
  constexpr size_t kBlock = 512;
  for (size_t base = 0; base < n; base += kBlock) {
    const size_t end = std::min(n, base + kBlock);
    uint16_t m = 0;
    for (size_t i = base; i < end; ++i) m = std::max<uint16_t>(m, p[i] & 0x7fffu);
    if (m < limit) continue;
    for (size_t i = base; i < end; ++i) {
      if ((p[i] & 0x7fffu) >= limit) return int64_t(i);
    }
  }
  return -1;
}

}  // namespace tg::io
