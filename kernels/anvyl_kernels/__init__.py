"""Anvyl's CPU kernels for MLX: `qmm`, a quantized matmul for the few rows of a decode step."""

import mlx.core  # noqa: F401  (loads libmlx.so and the array type before the extension)

from anvyl_kernels._ext import dequantize, num_threads, qmm, qmm_many, set_num_threads, simd

__all__ = ["dequantize", "num_threads", "qmm", "qmm_many", "set_num_threads", "simd"]
