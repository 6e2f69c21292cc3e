"""Quantized layers served by Anvyl's own CPU matmul kernel (`kernels/`, package `anvyl_kernels`).

MLX's CPU `quantized_matmul` is slow (the bundled model decoded 7 tokens/s with it) and float32
weights read 8x the bytes of 4-bit ones, which bounds a decode step by memory bandwidth. The
kernel keeps the weights packed, dequantizes each group once per step into float32 (exactly what
`mx.dequantize` computes with float32 scales, so the numbers are the float32 path's up to the
order of the sums) and multiplies it into every row of the batch (threads: `threads.py`). Measured
at the bundled model's shapes on a 2-core Xeon (`bench/kernel.py`), it is 1.6-12x faster than the
float32 BLAS matmul for 1-16 rows; the model server decodes 2-2.5x faster than in float32 at 1-8
streams, with greedy ids equal to float32's (`tests/modelserver/greedy_reference.json`).

Prompt chunks go through the kernel too: from 8 rows it dequantizes a tile of 4 columns once
into a float32 buffer and multiplies every row into it through a 6x4 register block (150-194
GFLOP/s at the 1B model's shapes on 2 cores from 16 rows, where BLAS after a full dequantize was
no faster and held a float32 copy of each weight: a 495-token prompt on the 1B model peaked
350 MB higher in MLX's memory). Above `KERNEL_MAX_ROWS` rows (4096: eight prompts in one chunk of
the default 512 tokens) a layer still dequantizes its weight (the kernel's fast `dequantize`) and
multiplies through BLAS; `ANVYL_KERNEL_MAX_ROWS` lowers it. Activations
stay float32 throughout, as in the float32 path. When the extension is missing, fails its
self-check, has no SIMD path for this CPU or `ANVYL_KERNEL=0`, `load_kernels` returns None and
the loader serves float32 as before.
"""

from __future__ import annotations

import functools
import logging
import os
from types import ModuleType
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_unflatten

log = logging.getLogger("anvyl.modelserver")

KERNEL_MAX_ROWS = int(os.environ.get("ANVYL_KERNEL_MAX_ROWS", "4096"))


def load_kernels() -> ModuleType | None:
    """The `anvyl_kernels` module when it is installed, enabled and correct here, else None."""
    if os.environ.get("ANVYL_KERNEL", "1") == "0":
        log.debug("quantized kernel disabled by ANVYL_KERNEL=0")
        return None
    return _checked_kernels()


@functools.cache
def _checked_kernels() -> ModuleType | None:
    """`anvyl_kernels` after its self-check (once per process), or None."""
    try:
        import anvyl_kernels
    except ImportError:
        log.debug("quantized kernel not installed (anvyl_kernels)", exc_info=True)
        return None
    try:
        if anvyl_kernels.simd() == "scalar" and os.environ.get("ANVYL_KERNEL") != "1":
            log.debug("quantized kernel has no SIMD path for this CPU; not using it")
            return None
        _self_check(anvyl_kernels)
    except Exception:  # an ABI mismatch with this MLX shows up as a TypeError, among others
        log.debug("quantized kernel failed its self-check; not using it", exc_info=True)
        return None
    return anvyl_kernels


def _self_check(kernels: ModuleType) -> None:
    """Raise unless the kernel matches `mx.dequantize` + matmul on a small random problem."""
    key = mx.random.key(0)
    w = mx.random.normal((40, 64), key=key)
    x = mx.random.normal((3, 64), key=mx.random.split(key)[1])
    for bits in (4, 8):
        wq, scales, biases = mx.quantize(w, group_size=32, bits=bits)
        scales, biases = scales.astype(mx.float16), biases.astype(mx.float16)
        dense = mx.dequantize(wq, scales.astype(mx.float32), biases.astype(mx.float32), 32, bits)
        want = x @ dense.T
        got = kernels.qmm(x, wq, scales, biases, 32, bits)
        (many,) = kernels.qmm_many(x, [wq], [scales], [biases], 32, bits)
        if not mx.allclose(kernels.dequantize(wq, scales, biases, 32, bits), dense).item():
            raise RuntimeError(f"anvyl_kernels.dequantize disagrees with MLX's ({bits} bits)")
        if not mx.allclose(got, want, rtol=1e-4, atol=1e-4).item():
            raise RuntimeError(f"anvyl_kernels.qmm disagrees with mx.dequantize ({bits} bits)")
        if not mx.array_equal(got, many).item():
            raise RuntimeError(f"anvyl_kernels.qmm_many disagrees with qmm ({bits} bits)")
    if 5 in kernel_bits(kernels):
        wq, scales, biases = mx.quantize(w, group_size=32, bits=5)
        dense = mx.dequantize(wq, scales, biases, 32, 5)
        got = kernels.qmm(x, wq, scales, biases, 32, 5)
        if not mx.allclose(got, x @ dense.T, rtol=1e-4, atol=1e-4).item():
            raise RuntimeError("anvyl_kernels.qmm disagrees with mx.dequantize (5 bits)")


def kernel_bits(kernels: ModuleType) -> tuple[int, ...]:
    """Weight widths the kernel serves fast here: 4 and 8, and 5 (Q5_x GGUF weights) where the
    CPU has AVX-512 VBMI. An extension built before `simd_bits` existed serves 4 and 8."""
    simd_bits = getattr(kernels, "simd_bits", None)
    return tuple(simd_bits()) if simd_bits is not None else (4, 8)


def supported(module: Any, bits: tuple[int, ...] = (4, 8)) -> bool:
    """Whether the kernel can serve this quantized layer (affine, `bits` wide, groups of 32k)."""
    return (
        getattr(module, "mode", "affine") == "affine"
        and module.bits in bits
        and module.group_size % 32 == 0
        and module.biases is not None
    )


def _dequantized(layer: Any) -> mx.array:
    """The layer's weight in float32, as the float32 path's loader computes it (for prompts).

    `anvyl_kernels.dequantize` is ~10x faster than MLX's CPU op (0.2 against 2 ms for a
    1536x576 weight, which BLAS then multiplies by a 495-row prompt in 3 ms).
    """
    return layer._dequantize(layer.weight, layer.scales, layer.biases, layer.group_size, layer.bits)


class KernelLinear(nn.Module):
    """A quantized `Linear` whose matmul is `anvyl_kernels.qmm` for the rows of a decode step."""

    def __init__(self, layer: nn.QuantizedLinear, kernels: ModuleType) -> None:
        super().__init__()
        self.weight = layer.weight
        self.scales = layer.scales
        self.biases = layer.biases
        if "bias" in layer:
            self.bias = layer.bias
        self.group_size = layer.group_size
        self.bits = layer.bits
        self._qmm = kernels.qmm
        self._dequantize = kernels.dequantize
        self._siblings: SharedInput | None = None
        self._sibling_index = 0
        self.freeze()

    def __call__(self, x: mx.array) -> mx.array:
        """The projection of `x`."""
        y = self.matmul(x)
        if "bias" in self:
            y = y + self["bias"]
        return y

    def matmul(self, x: mx.array) -> mx.array:
        """The projection of `x` without the bias (for an op that adds it itself)."""
        if x.size // x.shape[-1] > KERNEL_MAX_ROWS:
            return x @ _dequantized(self).T
        if self._siblings is not None:
            return self._siblings.output(x, self._sibling_index)
        return self._qmm(x, self.weight, self.scales, self.biases, self.group_size, self.bits)


class SharedInput:
    """Projections of one input (q/k/v, gate/up) computed in one kernel call, the first asking.

    Each output column is computed exactly as alone (same instructions, same order), so the
    numbers do not change; the step saves graph nodes and thread-pool rounds. The last input
    is recognized by identity: a different input (another architecture) is simply recomputed.
    The outputs are let go once every member took its own: held until the next call, every
    layer's projections of a 495-token prompt chunk stayed alive together (264 MB).
    """

    def __init__(self, members: list[KernelLinear], kernels: ModuleType) -> None:
        self.members = members
        self._qmm_many = kernels.qmm_many
        self._x: mx.array | None = None
        self._outs: list[mx.array] = []
        self._taken: set[int] = set()

    def output(self, x: mx.array, index: int) -> mx.array:
        """Member `index`'s projection of `x` (no bias)."""
        if x is not self._x or index in self._taken:
            first = self.members[0]
            self._outs = self._qmm_many(
                x,
                [m.weight for m in self.members],
                [m.scales for m in self.members],
                [m.biases for m in self.members],
                first.group_size,
                first.bits,
            )
            self._x = x
            self._taken = set()
        out = self._outs[index]
        self._taken.add(index)
        if len(self._taken) == len(self._outs):
            self._x, self._outs, self._taken = None, [], set()
        return out


class KernelEmbedding(nn.Module):
    """A quantized `Embedding`: float32 lookups, `as_linear` (a tied head) through the kernel."""

    def __init__(self, layer: nn.QuantizedEmbedding, kernels: ModuleType) -> None:
        super().__init__()
        self.weight = layer.weight
        self.scales = layer.scales
        self.biases = layer.biases
        self.group_size = layer.group_size
        self.bits = layer.bits
        self._qmm = kernels.qmm
        self._dequantize = kernels.dequantize
        self.freeze()

    def __call__(self, ids: mx.array) -> mx.array:
        """The float32 embeddings of `ids`."""
        return mx.dequantize(
            self.weight[ids],
            self.scales[ids].astype(mx.float32),
            self.biases[ids].astype(mx.float32),
            group_size=self.group_size,
            bits=self.bits,
        )

    def as_linear(self, x: mx.array) -> mx.array:
        """Logits of `x` against the table."""
        if x.size // x.shape[-1] > KERNEL_MAX_ROWS:
            return x @ _dequantized(self).T
        return self._qmm(x, self.weight, self.scales, self.biases, self.group_size, self.bits)


def use_kernel(model: Any, kernels: ModuleType) -> int:
    """Swap the model's supported quantized layers for kernel ones; return how many.

    Every other floating parameter (norms, unquantized layers) is cast to float32 so activations
    are float32 as in the float32 path; scales and biases keep their stored dtype.
    """
    replaced: list[tuple[str, nn.Module]] = []
    bits = kernel_bits(kernels)
    for name, module in model.named_modules():
        if isinstance(module, nn.QuantizedLinear) and supported(module, bits):
            replaced.append((name, KernelLinear(module, kernels)))
        elif isinstance(module, nn.QuantizedEmbedding) and supported(module, bits):
            replaced.append((name, KernelEmbedding(module, kernels)))
    if replaced:
        model.update_modules(tree_unflatten(replaced))
    kernel_arrays = {
        id(a)
        for _, layer in replaced
        for a in (layer.weight, layer.scales, layer.biases)  # type: ignore[attr-defined]
    }
    model.apply(
        lambda a: (
            a.astype(mx.float32)
            if id(a) not in kernel_arrays and mx.issubdtype(a.dtype, mx.floating)
            else a
        )
    )
    if os.environ.get("ANVYL_KERNEL_FUSE", "1") != "0":
        share_inputs(model, kernels)
    return len(replaced)


SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


def share_inputs(model: Any, kernels: ModuleType) -> int:
    """Group the kernel projections that read one input (`SIBLINGS`); return how many groups."""
    groups = 0
    for _, module in model.named_modules():
        for names in SIBLINGS:
            members = [module.get(name) for name in names]
            if not all(isinstance(m, KernelLinear) for m in members):
                continue
            first = members[0]
            if any(
                (m.group_size, m.bits, m.scales.dtype, m.weight.shape[1])
                != (first.group_size, first.bits, first.scales.dtype, first.weight.shape[1])
                for m in members
            ):
                continue
            shared = SharedInput(members, kernels)
            for index, m in enumerate(members):
                m._siblings = shared
                m._sibling_index = index
            groups += 1
    return groups
