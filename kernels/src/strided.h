// Copying a strided MLX view into a packed row-major buffer (shared by the kernels' ops).
#pragma once

#include <cstddef>
#include <cstdint>

#include "mlx/array.h"

namespace anvyl {

// dst[i] = the i-th element, in row-major order, of the view (shape, strides) starting at src.
inline void gather_strided(
    const float* src,
    float* dst,
    const mlx::core::Shape& shape,
    const mlx::core::Strides& strides,
    size_t n) {
  for (size_t i = 0; i < n; i++) {
    int64_t loc = 0;
    size_t rest = i;
    for (int d = static_cast<int>(shape.size()) - 1; d >= 0; d--) {
      loc += static_cast<int64_t>(rest % shape[d]) * strides[d];
      rest /= shape[d];
    }
    dst[i] = src[loc];
  }
}

} // namespace anvyl
