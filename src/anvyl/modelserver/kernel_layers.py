"""The rest of a decoder layer on Anvyl's CPU kernels: norms, rotary embedding, attention, SwiGLU.

On the CPU, MLX's `mx.fast.rms_norm`, `mx.fast.rope` and `mx.fast.scaled_dot_product_attention`
fall back to graphs of a dozen small ops each, and every op costs microseconds of scheduling.
With the matmuls on the kernel, those graphs were most of a decode step: one stream of the
bundled model took 59 ms a token, of which about 13 ms went to norms, 20 to rope, 15 to
attention and 10 to `silu(gate) * up` (measured by taking each out in turn). `anvyl_kernels`
has each of them as one graph node with one float32 loop (`kernels/src/layers.cpp`); the
modules here call them with the same weights and the same arguments as mlx-lm's.

Only modules whose behaviour is reproduced exactly are replaced, matched by exact class
(`kernel_archs.py`: the attention, MLP and norm classes of mlx-lm's Llama/Mistral, Qwen2, Qwen3,
Gemma 2, Gemma 3 and Phi-3, with the rotary embeddings they use: plain, linear, Llama 3, YaRN,
longrope). Any other layer module keeps MLX's ops: the log says which, and so does
`/api/v0/models` (`fast_path`: `kernel`, `partial (MLX ops: ...)` or `mlx`). Attention over a
quantized KV cache goes through the original mlx-lm module. `ANVYL_KERNEL_LAYERS=0` keeps MLX's
ops everywhere (the benchmark compares the two). Correctness: `tests/modelserver/
test_kernel_archs.py` runs a random-weight model of each architecture against mlx-lm's modules.

Prompt chunks use the attention op too: a 495-token prompt of the bundled model prefilled in
1.25 s instead of 2.06 s with MLX's attention (chunks of 512; 1.38 against 1.59 s in the chunks
of 128 used while other streams decode).
"""

from __future__ import annotations

import logging
import os
import re
from types import ModuleType
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_unflatten

from anvyl.modelserver.fast_path import FastPath, describe_counts, record_fast_path
from anvyl.modelserver.kernel import KernelLinear
from anvyl.modelserver.kernel_archs import (
    AttentionSpec,
    MLPSpec,
    Norm,
    attention_of,
    is_sandwich_block,
    mlp_of,
    norm_of,
)

log = logging.getLogger("anvyl.modelserver")


class KernelRMSNorm(nn.Module):
    """An RMSNorm (`nn.RMSNorm`, Gemma's `1 + w` one) as one kernel node."""

    def __init__(self, layer: nn.Module, kernels: ModuleType, norm: Norm | None = None) -> None:
        super().__init__()
        norm = norm or norm_of(layer)
        if norm is None:
            raise ValueError(f"{type(layer).__name__} is not an RMSNorm the kernel reproduces")
        self.weight = norm.weight
        self.eps = norm.eps
        self._rms_norm = kernels.rms_norm
        self.freeze()

    def __call__(self, x: mx.array) -> mx.array:
        """The normalized `x`."""
        return self._rms_norm(x, self.weight, self.eps)


class KernelMLP(nn.Module):
    """A gated MLP, `down(act(gate(x)) * up(x))`, with the gated product as one kernel node.

    SwiGLU (Llama, Qwen, Phi-3) or GeGLU with MLX's tanh gelu (Gemma); Phi-3's fused `gate_up`
    projection is read as its two halves, as `mx.split` gives them.
    """

    def __init__(self, mlp: Any, kernels: ModuleType, spec: MLPSpec | None = None) -> None:
        super().__init__()
        spec = spec or mlp_of(mlp)
        if spec is None:
            raise ValueError(f"{type(mlp).__name__} is not an MLP the kernel reproduces")
        self.fused = spec.fused_gate_up
        if self.fused:
            self.gate_up_proj = mlp.gate_up_proj
        else:
            self.gate_proj = mlp.gate_proj
            self.up_proj = mlp.up_proj
        self.down_proj = mlp.down_proj
        self._act = kernels.geglu if spec.gelu else kernels.swiglu

    def __call__(self, x: mx.array) -> mx.array:
        """The MLP of `x`."""
        if self.fused:
            h = self.gate_up_proj(x)
            n = h.shape[-1] // 2
            gate, up = h[..., :n], h[..., n:]
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(self._act(gate, up))


class _Unregistered:
    """Holds a module without making it a child (its parameters stay out of the model's tree)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module


class KernelAttention(nn.Module):
    """An attention module with everything between its projections in two kinds of kernel node.

    One rotary node per q, k and v reads the projection as the matmul wrote it and writes the
    heads layout (and the cache's dtype), adding the projection's bias, normalizing each head
    (Qwen3, Gemma 3) and scaling the rotated part (Phi-3 longrope, YaRN) on the way; one
    attention node (soft-capped for Gemma 2) writes the layout `o_proj` reads. A quantized KV
    cache or a mask kind the kernel does not know goes through the original mlx-lm module.
    """

    def __init__(self, attn: Any, kernels: ModuleType, spec: AttentionSpec | None = None) -> None:
        super().__init__()
        spec = spec or attention_of(attn)
        if spec is None:
            raise ValueError(f"{type(attn).__name__} is not an attention the kernel reproduces")
        if spec.fused_qkv:
            self.qkv_proj = attn.qkv_proj
        else:
            self.q_proj = attn.q_proj
            self.k_proj = attn.k_proj
            self.v_proj = attn.v_proj
        self.o_proj = attn.o_proj
        self.n_heads = spec.n_heads
        self.n_kv_heads = spec.n_kv_heads
        self.scale = spec.scale
        self.kv_dtype = kv_cache_dtype()
        self._spec = spec
        mx.eval([n.weight for n in (spec.q_norm, spec.k_norm) if n is not None])
        self._rope = kernels.rope_heads
        self._attention = kernels.attention
        self._mlx = _Unregistered(attn)
        # Bound once (plain attributes: a dict or tuple would join the parameter tree).
        object.__setattr__(self, "_half", self.kv_dtype == mx.float16)
        extra = {"freqs": spec.rope.freqs, "mscale": spec.rope.mscale}
        object.__setattr__(self, "_rope_extra", extra)
        object.__setattr__(self, "_q_norm", _norm_args(spec.q_norm))
        object.__setattr__(self, "_k_norm", _norm_args(spec.k_norm))

    def __call__(self, x: mx.array, mask: Any = None, cache: Any = None) -> mx.array:
        """Self-attention of `x` (B, L, D), updating `cache`."""
        if not self.handles(mask, cache):
            return self._mlx.module(x, mask, cache)
        return self.o_proj(self.attend(self._projections(x), mask, cache))

    def handles(self, mask: Any, cache: Any) -> bool:
        """Whether the kernel ops serve this mask and cache (else the original module does)."""
        return not hasattr(cache, "bits") and (
            mask is None or isinstance(mask, mx.array) or mask == "causal"
        )

    def attend(self, projections: Any, mask: Any = None, cache: Any = None) -> mx.array:
        """Attention of the (projection, bias or None) of q, k and v, as `o_proj` reads it."""
        spec, rope = self._spec, self._spec.rope
        (q, qb), (k, kb), (v, vb) = projections
        offset = 0 if cache is None else cache.offset
        if not isinstance(offset, mx.array):
            offset = mx.array(offset, dtype=mx.int32)
        half = cache is not None and self._half
        args = (rope.dims, rope.traditional, rope.base, rope.scale, offset)
        extra = self._rope_extra
        queries = self._rope(q, self.n_heads, *args, bias=qb, **extra, **self._q_norm)
        keys = self._rope(
            k, self.n_kv_heads, *args, float16_out=half, bias=kb, **extra, **self._k_norm
        )
        # dims 0: no rotation, only the bias, the heads layout and the cache's dtype in one node.
        values = self._rope(
            v, self.n_kv_heads, 0, False, 1.0, 1.0, offset, float16_out=half, bias=vb
        )
        if cache is not None:
            keys, values = cache.update_and_fetch(keys, values)
        causal = isinstance(mask, str)
        return self._attention(
            queries,
            keys,
            values,
            self.scale,
            None if causal else mask,
            causal,
            softcap=spec.softcap,
        )

    def _projections(self, x: mx.array) -> list[tuple[mx.array, mx.array | None]]:
        """q, k and v of `x`, each with the bias the rotary node is to add (or None)."""
        if not self._spec.fused_qkv:
            return [_unbiased(p, x) for p in (self.q_proj, self.k_proj, self.v_proj)]
        qkv, bias = _unbiased(self.qkv_proj, x)
        head_dim = qkv.shape[-1] // (self.n_heads + 2 * self.n_kv_heads)
        a, b = self.n_heads * head_dim, (self.n_heads + self.n_kv_heads) * head_dim
        parts = [(None, a), (a, b), (b, None)]
        return [(qkv[..., i:j], None if bias is None else bias[i:j]) for i, j in parts]


class KernelSandwichBlock(nn.Module):
    """Gemma's decoder block with each `h + post_norm(r)` as one kernel norm node."""

    def __init__(self, block: Any, kernels: ModuleType) -> None:
        super().__init__()
        for name in _SANDWICH_CHILDREN:
            setattr(self, name, block[name])
        self._rms_norm = kernels.rms_norm
        self._mlx = _Unregistered(block)

    def __call__(self, x: mx.array, mask: Any = None, cache: Any = None) -> mx.array:
        """The block's output for `x` (float32 activations; anything else: mlx-lm's block)."""
        if x.dtype != mx.float32:
            return self._mlx.module(x, mask, cache)
        r = self.self_attn(self.input_layernorm(x), mask, cache)
        h = self._add_norm(r, self.post_attention_layernorm, x)
        r = self.mlp(self.pre_feedforward_layernorm(h))
        return self._add_norm(r, self.post_feedforward_layernorm, h)

    def _add_norm(self, r: mx.array, norm: KernelRMSNorm, residual: mx.array) -> mx.array:
        """`residual + norm(r)` in one node."""
        return self._rms_norm(r, norm.weight, norm.eps, residual)


_SANDWICH_CHILDREN = (
    "self_attn",
    "mlp",
    "input_layernorm",
    "post_attention_layernorm",
    "pre_feedforward_layernorm",
    "post_feedforward_layernorm",
)


def _sandwich_blocks(model: Any, kernels: ModuleType) -> list[tuple[str, nn.Module]]:
    """Gemma blocks whose attention, MLP and norms all went to the kernel, as kernel blocks."""
    return [
        (name, KernelSandwichBlock(module, kernels))
        for name, module in model.named_modules()
        if is_sandwich_block(module)
        and isinstance(module.self_attn, KernelAttention)
        and isinstance(module.mlp, KernelMLP)
        and all(isinstance(module[n], KernelRMSNorm) for n in _SANDWICH_CHILDREN[2:])
    ]


def _unbiased(proj: Any, x: mx.array) -> tuple[mx.array, mx.array | None]:
    """`proj(x)` without its bias and the bias (None when it has none or adds it itself)."""
    if isinstance(proj, KernelLinear):
        return proj.matmul(x), proj.get("bias")
    return proj(x), None


def _norm_args(norm: Norm | None) -> dict[str, Any]:
    """`rope_heads`' keyword arguments for a per-head norm (none for None)."""
    return {} if norm is None else {"norm": norm.weight, "norm_eps": norm.eps}


def kv_cache_dtype() -> mx.Dtype:
    """The KV cache's dtype: float16 (half the memory), or float32 with `ANVYL_KV_DTYPE=float32`.

    Keys and values are rounded to float16 as they enter the cache; attention reads them as
    such and computes in float32. Measured on the bundled model: greedy ids unchanged
    (`tests/modelserver/test_engine_greedy.py`), 16 streams of 148 tokens hold 59 MB of cache
    instead of 118, and the model server peaked at 397 MiB instead of 561 in `bench/engine.py`
    (with 32-token growth; decode 0-10% slower than float32 within that run's noise).
    """
    return mx.float32 if os.environ.get("ANVYL_KV_DTYPE") == "float32" else mx.float16


def layers_work(kernels: ModuleType) -> bool:
    """Whether `kernels` has the layer ops and they agree with MLX's on a small problem."""
    try:
        key = mx.random.key(1)
        x = mx.random.normal((2, 3, 128), key=key)
        w = mx.random.normal((128,), key=mx.random.split(key)[0])
        offset = mx.array([5, 0], dtype=mx.int32)
        heads = x.reshape(2, 3, 2, 64).transpose(0, 2, 1, 3)
        sdpa = mx.fast.scaled_dot_product_attention
        freqs = 10000.0 ** (mx.arange(0, 64, 2) / 64) * 2.0
        normed = mx.fast.rms_norm((x + w).reshape(2, 3, 2, 64), w[:64], 1e-6)
        checks = [
            (kernels.rms_norm(x, w, 1e-5), mx.fast.rms_norm(x, w, 1e-5)),
            (kernels.swiglu(x, x * w), nn.silu(x) * (x * w)),
            (kernels.geglu(x, x * w), nn.gelu_approx(x) * (x * w)),
            (
                kernels.rope_heads(x, 2, 64, False, 10000.0, 1.0, offset),
                mx.fast.rope(heads, 64, traditional=False, base=10000.0, scale=1.0, offset=offset),
            ),
            (
                kernels.rope_heads(
                    x, 2, 64, False, 0.0, 1.0, offset, bias=w, freqs=freqs, norm=w[:64], mscale=1.5
                ),
                mx.fast.rope(
                    normed.transpose(0, 2, 1, 3) * 1.5,
                    64,
                    traditional=False,
                    base=None,
                    scale=1.0,
                    offset=offset,
                    freqs=freqs,
                ),
            ),
            (
                kernels.attention(heads, heads, heads, 0.125, None, True),
                sdpa(heads, heads, heads, scale=0.125, mask="causal")
                .transpose(0, 2, 1, 3)
                .reshape(2, 3, 128),
            ),
            (
                kernels.attention(heads, heads, heads, 1.0, None, False, softcap=1e9),
                sdpa(heads, heads, heads, scale=1.0).transpose(0, 2, 1, 3).reshape(2, 3, 128),
            ),
        ]
        return all(mx.allclose(got, want, rtol=1e-4, atol=1e-4).item() for got, want in checks)
    except Exception:  # an extension built before these ops, or an ABI mismatch
        log.debug("kernel layer ops unavailable; keeping MLX's", exc_info=True)
        return False


_BLOCK_CHILD = re.compile(r"(^|\.)layers\.\d+\.[^.]+$|(^|\.)norm$")


def use_kernel_layers(model: Any, kernels: ModuleType) -> FastPath:
    """Swap the attention, MLP and norm modules the kernel reproduces; log and return which.

    The result is also kept on the model (`fast_path.fast_path_of`), for the model list.
    """
    if os.environ.get("ANVYL_KERNEL_LAYERS", "1") == "0" or not layers_work(kernels):
        path = FastPath(kept=_layer_modules(model))
        log.info("layer kernels off: MLX's ops for every layer module")
    else:
        replaced: list[tuple[str, nn.Module]] = []
        inside: list[str] = []  # modules replaced whole: their children are not visited
        for name, module in model.named_modules():
            if any(name.startswith(prefix) for prefix in inside):
                continue
            fast = _kernel_module(module, kernels)
            if fast is not None:
                replaced.append((name, fast))
                inside.append(name + ".")
        if replaced:
            model.update_modules(tree_unflatten(replaced))
        blocks = _sandwich_blocks(model, kernels)
        if blocks:
            model.update_modules(tree_unflatten(blocks))
            replaced += blocks
        path = FastPath(replaced=_count(type(m).__name__ for _, m in replaced))
        path = FastPath(replaced=path.replaced, kept=_layer_modules(model))
        log.info("layer kernels: %s; %s", describe_counts(path.replaced), path.describe())
    record_fast_path(model, path)
    return path


def _kernel_module(module: Any, kernels: ModuleType) -> nn.Module | None:
    """The kernel module reproducing `module`, or None."""
    if (norm := norm_of(module)) is not None:
        return KernelRMSNorm(module, kernels, norm)
    if (attention := attention_of(module)) is not None:
        return KernelAttention(module, kernels, attention)
    if (mlp := mlp_of(module)) is not None:
        return KernelMLP(module, kernels, mlp)
    return None


def _layer_modules(model: Any) -> dict[str, int]:
    """mlx-lm modules of the transformer blocks (and final norm) not on the kernel, by class."""
    kept = (
        f"{type(m).__module__.rsplit('.', 1)[-1]}.{type(m).__name__}"
        for name, m in model.named_modules()
        if _BLOCK_CHILD.search(name)
        and not isinstance(m, KernelRMSNorm | KernelMLP | KernelAttention | KernelSandwichBlock)
        and not isinstance(m, nn.Linear | nn.QuantizedLinear | nn.Embedding | KernelLinear)
    )
    return _count(kept)


def _count(names: Any) -> dict[str, int]:
    """How many times each name occurs, in first-seen order."""
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    return counts
