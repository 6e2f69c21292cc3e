"""Anvyl's CPU kernels for MLX: a quantized matmul for decode steps and the rest of a layer."""

import mlx.core  # noqa: F401  (loads libmlx.so and the array type before the extension)

from anvyl_kernels._ext import (
    attention,
    dequantize,
    geglu,
    num_threads,
    qmm,
    qmm_many,
    rms_norm,
    rope_heads,
    set_num_threads,
    simd,
    simd_bits,
    swiglu,
)

__all__ = [
    "attention",
    "dequantize",
    "geglu",
    "num_threads",
    "qmm",
    "qmm_many",
    "rms_norm",
    "rope_heads",
    "set_num_threads",
    "simd",
    "simd_bits",
    "swiglu",
]
