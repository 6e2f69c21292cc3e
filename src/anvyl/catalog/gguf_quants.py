"""GGUF tensor blocks converted to MLX's affine format (`weight`/`scales`/`biases`) on numpy.

Every supported block type but Q6_K is an affine grid over groups of 32 values, so it converts
exactly: MLX dequantizes `scale * q + bias` in float32 to the very values llama.cpp's own
dequantization gives.

| GGUF    | MLX                         | how                                          |
| ------- | --------------------------- | -------------------------------------------- |
| Q4_0    | 4 bits, group 32            | exact: scale d, bias -8d                     |
| Q4_1    | 4 bits, group 32            | exact: scale d, bias m                       |
| Q5_0    | 5 bits, group 32            | exact: scale d, bias -16d                    |
| Q5_1    | 5 bits, group 32            | exact: scale d, bias m                       |
| Q8_0    | 8 bits, group 32            | exact: scale d, bias -128d                   |
| Q4_K    | 4 bits, group 32            | exact: each 32-value sub-block is a group    |
| Q5_K    | 5 bits, group 32            | exact: likewise                              |
| Q6_K    | 8 bits, group 32            | nearest: 16-value sub-blocks with their own  |
|         |                             | scales do not fit one 32-value grid (MLX has |
|         |                             | no group of 16); requantized, error at most  |
|         |                             | 1/510 of each group's range (1/8 of a Q6_K   |
|         |                             | step)                                        |
| F32/F16 | float32/float16             | as stored                                    |
| BF16    | bfloat16                    | as stored                                    |

Scales and biases are float16 where float16 holds every one of a tensor's values exactly (Q4_0,
Q4_1, Q5_x, Q8_0: products of a float16 by a power of two), else float32 (K-quants: a float16
times a 6-bit integer needs up to 17 significant bits).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GROUP_SIZE = 32

# Elements and bytes per block of each type the import converts.
BLOCK_LAYOUT: dict[str, tuple[int, int]] = {
    "F32": (1, 4),
    "F16": (1, 2),
    "BF16": (1, 2),
    "Q4_0": (32, 18),
    "Q4_1": (32, 20),
    "Q5_0": (32, 22),
    "Q5_1": (32, 24),
    "Q8_0": (32, 34),
    "Q4_K": (256, 144),
    "Q5_K": (256, 176),
    "Q6_K": (256, 210),
}
# Bits of the MLX affine tensor each quantized type becomes.
MLX_BITS = {"Q4_0": 4, "Q4_1": 4, "Q5_0": 5, "Q5_1": 5, "Q8_0": 8, "Q4_K": 4, "Q5_K": 5, "Q6_K": 8}
EXACT_TYPES = frozenset(BLOCK_LAYOUT) - {"Q6_K"}

_ROWS_PER_CHUNK_ELEMENTS = 1 << 22  # bounds the float32 scratch of a conversion to ~16 MB


@dataclass(frozen=True)
class Affine:
    """An MLX affine-quantized matrix: packed `weight` (uint32) and per-group scales/biases."""

    weight: np.ndarray
    scales: np.ndarray
    biases: np.ndarray
    bits: int


def convert_tensor(raw: np.ndarray, type_name: str, shape: tuple[int, ...]) -> np.ndarray | Affine:
    """The MLX form of one tensor's raw GGUF bytes (`shape` in numpy order).

    Returns a float array (F32, F16; BF16 as its raw uint16 bits) or an `Affine`.
    """
    raw = np.ascontiguousarray(raw).reshape(-1).view(np.uint8)
    if type_name == "F32":
        return raw.view("<f4").reshape(shape)
    if type_name in ("F16", "BF16"):
        return raw.view("<f2" if type_name == "F16" else "<u2").reshape(shape)
    block_elems, block_bytes = BLOCK_LAYOUT[type_name]
    rows, cols = int(np.prod(shape[:-1], dtype=np.int64)), shape[-1]
    if cols % block_elems:
        raise ValueError(f"rows of {cols} values are not whole {type_name} blocks")
    blocks = raw.reshape(rows, cols // block_elems, block_bytes)
    bits = MLX_BITS[type_name]
    step = max(1, _ROWS_PER_CHUNK_ELEMENTS // cols)
    weight = np.empty((rows, cols * bits // 32), np.uint32)
    scales = np.empty((rows, cols // GROUP_SIZE), np.float32)
    biases = np.empty_like(scales)
    for start in range(0, rows, step):
        chunk = blocks[start : start + step]
        q, s, b = _UNPACK[type_name](chunk.reshape(-1, block_bytes))
        n = chunk.shape[0]
        weight[start : start + n] = pack_bits(q.reshape(n, cols), bits)
        scales[start : start + n] = s.reshape(n, -1)
        biases[start : start + n] = b.reshape(n, -1)
    lead = tuple(shape[:-1])
    return Affine(
        weight.reshape(*lead, -1),
        _narrowest(scales).reshape(*lead, -1),
        _narrowest(biases).reshape(*lead, -1),
        bits,
    )


def dequantize(a: Affine) -> np.ndarray:
    """`scale * q + bias` in float32, as `mx.dequantize` computes it (for checks)."""
    q = unpack_bits(a.weight.reshape(-1, a.weight.shape[-1]), a.bits).astype(np.float32)
    groups = q.reshape(q.shape[0], -1, GROUP_SIZE)
    s = a.scales.reshape(q.shape[0], -1, 1).astype(np.float32)
    b = a.biases.reshape(q.shape[0], -1, 1).astype(np.float32)
    return (groups * s + b).reshape(*a.weight.shape[:-1], -1)


def pack_bits(q: np.ndarray, bits: int) -> np.ndarray:
    """Pack rows of `bits`-bit values as MLX does: a little-endian bit stream in uint32 words."""
    q = q.astype(np.uint8)
    if bits == 8:
        return np.ascontiguousarray(q).view("<u4")
    if bits == 4:
        return np.ascontiguousarray(q[:, 0::2] | (q[:, 1::2] << 4)).view("<u4")
    stream = (q[..., None] >> np.arange(bits, dtype=np.uint8)) & 1
    return np.packbits(stream.reshape(q.shape[0], -1), axis=-1, bitorder="little").view("<u4")


def unpack_bits(w: np.ndarray, bits: int) -> np.ndarray:
    """The inverse of `pack_bits`: rows of uint32 words back to `bits`-bit values."""
    stream = np.unpackbits(np.ascontiguousarray(w).view(np.uint8), axis=-1, bitorder="little")
    stream = stream.reshape(w.shape[0], -1, bits).astype(np.uint8)
    return (stream << np.arange(bits, dtype=np.uint8)).sum(axis=-1, dtype=np.uint8)


def _narrowest(x: np.ndarray) -> np.ndarray:
    """float16 when it holds every value exactly, else float32."""
    half = x.astype(np.float16)
    return half if np.array_equal(half.astype(np.float32), x) else x


def _f16(blocks: np.ndarray, at: int) -> np.ndarray:
    return np.ascontiguousarray(blocks[:, at : at + 2]).view("<f2").astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """16 bytes -> 32 values: low nibbles first, then high nibbles (ggml's Q4/Q5 order)."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def _high_bits(qh_bytes: np.ndarray) -> np.ndarray:
    """Q5_0/Q5_1's 32 fifth bits (a little-endian uint32 per block) as 0/16 per value."""
    qh = np.ascontiguousarray(qh_bytes).view("<u4")
    return (((qh >> np.arange(32, dtype=np.uint32)) & 1) << 4).astype(np.uint8)


Unpacked = tuple[np.ndarray, np.ndarray, np.ndarray]  # q per value, scale and bias per group


def _q4_0(b: np.ndarray) -> Unpacked:
    d = _f16(b, 0)
    return _nibbles(b[:, 2:18]), d, -8 * d


def _q4_1(b: np.ndarray) -> Unpacked:
    return _nibbles(b[:, 4:20]), _f16(b, 0), _f16(b, 2)


def _q5_0(b: np.ndarray) -> Unpacked:
    d = _f16(b, 0)
    return _nibbles(b[:, 6:22]) | _high_bits(b[:, 2:6]), d, -16 * d


def _q5_1(b: np.ndarray) -> Unpacked:
    return _nibbles(b[:, 8:24]) | _high_bits(b[:, 4:8]), _f16(b, 0), _f16(b, 2)


def _q8_0(b: np.ndarray) -> Unpacked:
    d = _f16(b, 0)
    q = (b[:, 2:34].view(np.int8).astype(np.int16) + 128).astype(np.uint8)
    return q, d, -128 * d


def _k_scales(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K/Q5_K's 12 bytes -> eight 6-bit scales and eight 6-bit mins (get_scale_min_k4)."""
    sc = np.concatenate([s[:, 0:4] & 63, (s[:, 8:12] & 15) | ((s[:, 0:4] >> 6) << 4)], axis=1)
    mn = np.concatenate([s[:, 4:8] & 63, (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)], axis=1)
    return sc.astype(np.float32), mn.astype(np.float32)


def _k_low_nibbles(qs: np.ndarray) -> np.ndarray:
    """128 bytes -> 8 sub-blocks of 32: each 32-byte run gives its low then its high nibbles."""
    runs = qs.reshape(-1, 4, 32)
    return np.stack([runs & 0x0F, runs >> 4], axis=2).reshape(-1, 8, 32)


def _q4_k(b: np.ndarray) -> Unpacked:
    d, dmin = _f16(b, 0), _f16(b, 2)
    sc, mn = _k_scales(b[:, 4:16])
    return _k_low_nibbles(b[:, 16:144]), d * sc, -(dmin * mn)


def _q5_k(b: np.ndarray) -> Unpacked:
    d, dmin = _f16(b, 0), _f16(b, 2)
    sc, mn = _k_scales(b[:, 4:16])
    qh = b[:, 16:48]
    high = ((qh[:, None, :] >> np.arange(8, dtype=np.uint8)[None, :, None]) & 1) << 4
    return _k_low_nibbles(b[:, 48:176]) | high, d * sc, -(dmin * mn)


def _q6_k(b: np.ndarray) -> Unpacked:
    """Q6_K's values, requantized to 8-bit groups of 32 by each group's min and max."""
    ql, qh = b[:, 0:128].reshape(-1, 2, 64), b[:, 128:192].reshape(-1, 2, 32)
    lo, hi = ql[:, :, :32], ql[:, :, 32:]
    q = np.concatenate(
        [
            (lo & 15) | ((qh & 3) << 4),
            (hi & 15) | (((qh >> 2) & 3) << 4),
            (lo >> 4) | (((qh >> 4) & 3) << 4),
            (hi >> 4) | (((qh >> 6) & 3) << 4),
        ],
        axis=2,
    ).reshape(-1, 16, 16)
    sc = b[:, 192:208].view(np.int8).astype(np.float32)
    d = _f16(b, 208)
    values = (d * sc)[:, :, None] * (q.astype(np.float32) - 32)
    return requantize(values.reshape(-1, GROUP_SIZE), 8)


def requantize(groups: np.ndarray, bits: int) -> Unpacked:
    """Rows of float values as `bits`-bit affine groups spanning each row's min..max."""
    lo, hi = groups.min(axis=1, keepdims=True), groups.max(axis=1, keepdims=True)
    levels = (1 << bits) - 1
    scale = (hi - lo) / levels
    safe = np.where(scale == 0, 1, scale)
    q = np.clip(np.rint((groups - lo) / safe), 0, levels).astype(np.uint8)
    return q, scale, lo


_UNPACK = {
    "Q4_0": _q4_0,
    "Q4_1": _q4_1,
    "Q5_0": _q5_0,
    "Q5_1": _q5_1,
    "Q8_0": _q8_0,
    "Q4_K": _q4_k,
    "Q5_K": _q5_k,
    "Q6_K": _q6_k,
}
