"""Block conversions against the `gguf` package's dequantization and MLX's own packing."""

from __future__ import annotations

import gguf
import mlx.core as mx
import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT

from anvyl.catalog.gguf_quants import (
    BLOCK_LAYOUT,
    EXACT_TYPES,
    MLX_BITS,
    Affine,
    convert_tensor,
    dequantize,
    pack_bits,
    unpack_bits,
)

ROWS, COLS = 48, 512
# Byte offsets of each block type's float16 scale fields (d, and dmin/m where it has one).
_F16_FIELDS = {
    "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
    "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208],
}  # fmt: skip


def random_blocks(type_name: str, seed: int = 0) -> np.ndarray:
    """Every bit pattern in the quants, finite small float16 scales."""
    rng = np.random.default_rng(seed)
    elems, nbytes = BLOCK_LAYOUT[type_name]
    raw = rng.integers(0, 256, (ROWS, COLS // elems, nbytes), dtype=np.uint8)
    for at in _F16_FIELDS[type_name]:
        d = (rng.standard_normal((ROWS, COLS // elems, 1)) * 0.01).astype(np.float16)
        raw[:, :, at : at + 2] = d.view(np.uint8)
    return raw.reshape(ROWS, -1)


@pytest.mark.parametrize("type_name", sorted(MLX_BITS))
def test_conversion_matches_gguf_and_mlx(type_name: str) -> None:
    raw = random_blocks(type_name)
    expected = gguf.quants.dequantize(raw, QT[type_name]).astype(np.float32).reshape(ROWS, COLS)
    a = convert_tensor(raw, type_name, (ROWS, COLS))
    assert isinstance(a, Affine) and a.bits == MLX_BITS[type_name]
    ours = dequantize(a)
    theirs = np.array(
        mx.dequantize(
            mx.array(a.weight),
            mx.array(a.scales.astype(np.float32)),
            mx.array(a.biases.astype(np.float32)),
            group_size=32,
            bits=a.bits,
        )
    )
    np.testing.assert_array_equal(ours, theirs)  # the packing is MLX's
    err = np.abs(ours - expected).reshape(ROWS, -1, 32)
    if type_name in EXACT_TYPES:
        assert err.max() == 0.0
    else:  # requantized: at most half a step of each 32-value group's 8-bit grid
        groups = expected.reshape(ROWS, -1, 32)
        half_step = np.ptp(groups, axis=2) / 510
        assert (err.max(axis=2) <= half_step * 1.001 + 1e-7).all()


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 8])
def test_pack_bits_is_mlx_layout(bits: int) -> None:
    w = mx.random.normal((8, 128), key=mx.random.key(bits))
    wq = mx.quantize(w, group_size=32, bits=bits)[0]
    q = unpack_bits(np.array(wq), bits)
    np.testing.assert_array_equal(pack_bits(q, bits), np.array(wq))


def test_float_types_pass_through() -> None:
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    np.testing.assert_array_equal(convert_tensor(x.view(np.uint8), "F32", (4, 64)), x)
    half = x.astype(np.float16)
    np.testing.assert_array_equal(convert_tensor(half.view(np.uint8), "F16", (4, 64)), half)
    bf16 = gguf.quants.quantize(x, QT.BF16)
    bits = convert_tensor(bf16, "BF16", (4, 64))
    back = np.array(mx.array(bits).view(mx.bfloat16).astype(mx.float32))
    np.testing.assert_array_equal(back, gguf.quants.dequantize(bf16, QT.BF16))


def test_scale_dtype_is_float16_only_when_exact() -> None:
    assert convert_tensor(random_blocks("Q4_0"), "Q4_0", (ROWS, COLS)).scales.dtype == np.float16
    assert convert_tensor(random_blocks("Q4_K"), "Q4_K", (ROWS, COLS)).scales.dtype == np.float32
