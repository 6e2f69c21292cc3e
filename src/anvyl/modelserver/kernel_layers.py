"""The rest of a decoder layer on Anvyl's CPU kernels: norms, rotary embedding, attention, SwiGLU.

On the CPU, MLX's `mx.fast.rms_norm`, `mx.fast.rope` and `mx.fast.scaled_dot_product_attention`
fall back to graphs of a dozen small ops each, and every op costs microseconds of scheduling.
With the matmuls on the kernel, those graphs were most of a decode step: one stream of the
bundled model took 59 ms a token, of which about 13 ms went to norms, 20 to rope, 15 to
attention and 10 to `silu(gate) * up` (measured by taking each out in turn). `anvyl_kernels`
has each of them as one graph node with one float32 loop (`kernels/src/layers.cpp`); the
modules here call them with the same weights and the same arguments as mlx-lm's.

Only modules whose behaviour is known exactly are replaced: `nn.RMSNorm` itself (not
subclasses), and mlx-lm's Llama attention (with a plain `nn.RoPE`) and MLP, which SmolLM,
Llama and Mistral checkpoints load as. Attention over a quantized KV cache goes through MLX's
own op as before. `ANVYL_KERNEL_LAYERS=0` keeps MLX's ops (the benchmark compares the two).

Prompt chunks use the attention op too: a 495-token prompt of the bundled model prefilled in
1.25 s instead of 2.06 s with MLX's attention (chunks of 512; 1.38 against 1.59 s in the chunks
of 128 used while other streams decode).
"""

from __future__ import annotations

import logging
import os
from types import ModuleType
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_unflatten
from mlx_lm.models import llama
from mlx_lm.models.base import scaled_dot_product_attention

log = logging.getLogger("anvyl.modelserver")


class KernelRMSNorm(nn.Module):
    """`nn.RMSNorm` as one kernel node."""

    def __init__(self, layer: nn.RMSNorm, kernels: ModuleType) -> None:
        super().__init__()
        self.weight = layer.weight
        self.eps = layer.eps
        self._rms_norm = kernels.rms_norm
        self.freeze()

    def __call__(self, x: mx.array) -> mx.array:
        """The normalized `x`."""
        return self._rms_norm(x, self.weight, self.eps)


class KernelMLP(nn.Module):
    """Llama's MLP, `down(silu(gate(x)) * up(x))`, with the product as one kernel node."""

    def __init__(self, mlp: Any, kernels: ModuleType) -> None:
        super().__init__()
        self.gate_proj = mlp.gate_proj
        self.up_proj = mlp.up_proj
        self.down_proj = mlp.down_proj
        self._swiglu = kernels.swiglu

    def __call__(self, x: mx.array) -> mx.array:
        """The MLP of `x`."""
        return self.down_proj(self._swiglu(self.gate_proj(x), self.up_proj(x)))


class KernelAttention(nn.Module):
    """Llama's attention with the rotary embedding and the attention itself in the kernel.

    The rotary op reads the projection as it comes out of the matmul and writes the heads
    layout, so the reshape and transpose of each of q and k are part of it; the attention op
    writes its output in the layout `o_proj` reads.
    """

    def __init__(self, attn: Any, kernels: ModuleType) -> None:
        super().__init__()
        self.q_proj = attn.q_proj
        self.k_proj = attn.k_proj
        self.v_proj = attn.v_proj
        self.o_proj = attn.o_proj
        self.n_heads = attn.n_heads
        self.n_kv_heads = attn.n_kv_heads
        self.scale = attn.scale
        self.kv_dtype = kv_cache_dtype()
        rope = attn.rope
        self._rope_args = (rope.dims, rope.traditional, float(rope.base), float(rope.scale))
        self._rope = kernels.rope_heads
        self._attention = kernels.attention

    def __call__(self, x: mx.array, mask: Any = None, cache: Any = None) -> mx.array:
        """Self-attention of `x` (B, L, D), updating `cache`."""
        B, L, _ = x.shape
        queries, keys, values = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        offset = 0 if cache is None else cache.offset
        if not isinstance(offset, mx.array):
            offset = mx.array(offset, dtype=mx.int32)
        half = cache is not None and self.kv_dtype == mx.float16
        queries = self._rope(queries, self.n_heads, *self._rope_args, offset)
        keys = self._rope(keys, self.n_kv_heads, *self._rope_args, offset, float16_out=half)
        # dims 0: no rotation, only the heads layout (and the cache's dtype) in one node.
        values = self._rope(values, self.n_kv_heads, 0, False, 1.0, 1.0, offset, float16_out=half)
        if cache is not None:
            keys, values = cache.update_and_fetch(keys, values)
        if not hasattr(cache, "bits") and (
            mask is None or isinstance(mask, mx.array) or mask == "causal"
        ):
            causal = isinstance(mask, str)
            array_mask = None if causal else mask
            output = self._attention(queries, keys, values, self.scale, array_mask, causal)
        else:  # a quantized KV cache (tuples) or a mask kind the kernel does not know
            if isinstance(keys, mx.array):
                keys, values = keys.astype(mx.float32), values.astype(mx.float32)
            output = scaled_dot_product_attention(
                queries, keys, values, cache=cache, scale=self.scale, mask=mask
            )
            output = output.transpose(0, 2, 1, 3).reshape(B, L, -1)
        return self.o_proj(output)


def kv_cache_dtype() -> mx.Dtype:
    """The KV cache's dtype: float16 (half the memory), or float32 with `ANVYL_KV_DTYPE=float32`.

    Keys and values are rounded to float16 as they enter the cache; attention reads them as
    such and computes in float32. Measured on the bundled model: greedy ids unchanged
    (`tests/modelserver/test_engine_greedy.py`), 16 streams of 148 tokens hold 59 MB of cache
    instead of 118, and the model server peaked at 397 MiB instead of 561 in `bench/engine.py`
    (with 32-token growth; decode 0-10% slower than float32 within that run's noise).
    """
    return mx.float32 if os.environ.get("ANVYL_KV_DTYPE") == "float32" else mx.float16


def _replaceable_attention(module: Any) -> bool:
    """Whether `module` is mlx-lm's Llama attention with a plain rotary embedding."""
    return type(module) is llama.Attention and type(module.rope) is nn.RoPE


def layers_work(kernels: ModuleType) -> bool:
    """Whether `kernels` has the layer ops and they agree with MLX's on a small problem."""
    try:
        key = mx.random.key(1)
        x = mx.random.normal((2, 3, 128), key=key)
        w = mx.random.normal((128,), key=mx.random.split(key)[0])
        offset = mx.array([5, 0], dtype=mx.int32)
        heads = x.reshape(2, 3, 2, 64).transpose(0, 2, 1, 3)
        sdpa = mx.fast.scaled_dot_product_attention
        checks = [
            (kernels.rms_norm(x, w, 1e-5), mx.fast.rms_norm(x, w, 1e-5)),
            (kernels.swiglu(x, x * w), nn.silu(x) * (x * w)),
            (
                kernels.rope_heads(x, 2, 64, False, 10000.0, 1.0, offset),
                mx.fast.rope(heads, 64, traditional=False, base=10000.0, scale=1.0, offset=offset),
            ),
            (
                kernels.attention(heads, heads, heads, 0.125, None, True),
                sdpa(heads, heads, heads, scale=0.125, mask="causal")
                .transpose(0, 2, 1, 3)
                .reshape(2, 3, 128),
            ),
        ]
        return all(mx.allclose(got, want, rtol=1e-4, atol=1e-4).item() for got, want in checks)
    except Exception:  # an extension built before these ops, or an ABI mismatch
        log.debug("kernel layer ops unavailable; keeping MLX's", exc_info=True)
        return False


def use_kernel_layers(model: Any, kernels: ModuleType) -> int:
    """Swap norms, Llama attention and Llama MLPs for kernel ones; return how many."""
    if os.environ.get("ANVYL_KERNEL_LAYERS", "1") == "0" or not layers_work(kernels):
        return 0
    replaced: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if type(module) is nn.RMSNorm:
            replaced.append((name, KernelRMSNorm(module, kernels)))
        elif _replaceable_attention(module):
            replaced.append((name, KernelAttention(module, kernels)))
        elif type(module) is llama.MLP:
            replaced.append((name, KernelMLP(module, kernels)))
    if replaced:
        model.update_modules(tree_unflatten(replaced))
    return len(replaced)
