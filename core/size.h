// Checked size arithmetic. Every product or sum of sizes in the library (element counts, byte
// counts, offsets, step counts) goes through these helpers, so a size that does not fit in 64 bits
// is a tg::Error that names what was being computed, never a wrapped number.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "error.h"

namespace tg {

/// a * b for a, b >= 0; throws tg::Error naming `what` when an operand is negative or the product
/// exceeds INT64_MAX.
int64_t checked_mul(int64_t a, int64_t b, std::string_view what);
/// a + b for a, b >= 0; throws like checked_mul.
int64_t checked_add(int64_t a, int64_t b, std::string_view what);
/// The product of the dimensions of shape; throws tg::Error naming the shape on a negative
/// dimension or when the count, or for an empty shape the product of its non-zero dimensions,
/// exceeds INT64_MAX.
int64_t checked_numel(const Shape& shape);
/// numel(shape) * elem_size in bytes; throws tg::Error naming the shape when it exceeds
/// PTRDIFF_MAX (the most any allocation or pointer difference can hold).
size_t checked_nbytes(const Shape& shape, size_t elem_size);
/// count * elem_size in bytes (count >= 0); throws tg::Error naming `what` when it exceeds
/// PTRDIFF_MAX.
size_t checked_bytes(int64_t count, size_t elem_size, std::string_view what);

}  // namespace tg
