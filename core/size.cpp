#include "size.h"

#include <cstdint>
#include <limits>

namespace tg {

static_assert(std::numeric_limits<ptrdiff_t>::max() == std::numeric_limits<int64_t>::max(),
              "byte counts are checked against INT64_MAX, which must equal PTRDIFF_MAX");

int64_t checked_mul(int64_t a, int64_t b, std::string_view what) {
  TG_CHECK(a >= 0 && b >= 0, what, ": expected non-negative sizes, got ", a, " and ", b);
  int64_t r = 0;
  TG_CHECK(!__builtin_mul_overflow(a, b, &r), what, ": ", a, " * ", b,
           " does not fit in 64 bits (more than 2^63 - 1)");
  return r;
}

int64_t checked_add(int64_t a, int64_t b, std::string_view what) {
  TG_CHECK(a >= 0 && b >= 0, what, ": expected non-negative sizes, got ", a, " and ", b);
  int64_t r = 0;
  TG_CHECK(!__builtin_add_overflow(a, b, &r), what, ": ", a, " + ", b,
           " does not fit in 64 bits (more than 2^63 - 1)");
  return r;
}

int64_t checked_numel(const Shape& shape) {
  // The product of the non-zero dimensions must fit too: ops multiply sub-shapes (H * W, C * H * W)
  // of an empty tensor as well.
  int64_t n = 1;
  bool empty = false;
  for (int64_t d : shape) {
    TG_CHECK(d >= 0, "tensor shape ", shape, " has a negative dimension");
    empty = empty || d == 0;
    TG_CHECK(d == 0 || !__builtin_mul_overflow(n, d, &n), "tensor shape ", shape,
             " has more elements than fit in 64 bits (2^63 - 1)",
             empty ? " (counting only its non-zero dimensions)" : "");
  }
  return empty ? 0 : n;
}

size_t checked_nbytes(const Shape& shape, size_t elem_size) {
  const int64_t n = checked_numel(shape);
  int64_t bytes = 0;
  TG_CHECK(!__builtin_mul_overflow(n, int64_t(elem_size), &bytes), "tensor shape ", shape, " (", n,
           " elements of ", elem_size, " bytes) needs more bytes than fit in 64 bits (2^63 - 1)");
  return size_t(bytes);
}

size_t checked_bytes(int64_t count, size_t elem_size, std::string_view what) {
  TG_CHECK(count >= 0, what, ": expected a non-negative element count, got ", count);
  int64_t bytes = 0;
  TG_CHECK(!__builtin_mul_overflow(count, int64_t(elem_size), &bytes), what, ": ", count,
           " elements of ", elem_size, " bytes need more bytes than fit in 64 bits (2^63 - 1)");
  return size_t(bytes);
}

}  // namespace tg
