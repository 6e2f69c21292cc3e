"""Which of mlx-lm's layer modules the kernel reproduces exactly, and with what arguments.

Each adapter reads one mlx-lm class (matched by exact type, never a subclass) and returns what the
kernel modules in `kernel_layers.py` need to compute the same thing, or None where the instance
uses something the kernel does not reproduce (a rotary embedding it does not know, say): that
module keeps MLX's ops. What each class does around its projections, read in mlx-lm 0.32:

| class | attention | MLP | norm |
| --- | --- | --- | --- |
| `llama` (Llama 1-3.x, Mistral, SmolLM) | rope: plain, `linear`, `llama3` | SwiGLU | `nn.RMSNorm` |
| `qwen2` (Qwen2, Qwen2.5) | + q/k/v biases; rope also YaRN | SwiGLU | `nn.RMSNorm` |
| `qwen3` | + per-head RMSNorm of q and k before the rope | SwiGLU | `nn.RMSNorm` |
| `gemma2` | scale `query_pre_attn_scalar ** -0.5`, scores soft-capped | GeGLU | `1 + w` |
| `gemma3_text` (Gemma 3) | + per-head `1 + w` norms of q and k | GeGLU | `1 + w` |
| `phi3` (Phi-3, 3.5) | fused `qkv_proj`; rope plain or longrope | fused SwiGLU | `nn.RMSNorm` |

Gemma's blocks add a normalized output to the residual (`x + norm(r)`), which the kernel's norm
does in the same node. The rest of each model (embedding scale, sliding-window masks and rotating
caches, final soft-capping) is mlx-lm's own code around these modules, unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models import gemma2, gemma3_text, llama, phi3, qwen2, qwen3, rope_utils


@dataclass(frozen=True)
class Rope:
    """`mx.fast.rope`'s arguments as an attention module calls it (`mscale`: input scaled first)."""

    dims: int
    traditional: bool
    base: float
    scale: float
    freqs: mx.array | None = None
    mscale: float = 1.0


@dataclass(frozen=True)
class Norm:
    """An RMSNorm as `mx.fast.rms_norm(x, weight, eps)`: Gemma's `1 + w` already added."""

    weight: mx.array
    eps: float


@dataclass(frozen=True)
class AttentionSpec:
    """Everything an attention module computes besides its projections."""

    n_heads: int
    n_kv_heads: int
    scale: float
    rope: Rope
    fused_qkv: bool = False
    q_norm: Norm | None = None
    k_norm: Norm | None = None
    softcap: float = 0.0


@dataclass(frozen=True)
class MLPSpec:
    """A gated MLP: `down(act(gate(x)) * up(x))`, gate and up as one fused projection or two."""

    gelu: bool
    fused_gate_up: bool = False


def rope_of(rope: Any) -> Rope | None:
    """The kernel's arguments for mlx-lm's rotary module `rope`, or None if not reproduced."""
    kind = type(rope)
    if kind is nn.RoPE:
        return Rope(rope.dims, rope.traditional, float(rope.base), float(rope.scale))
    if kind is rope_utils.Llama3RoPE:
        return Rope(rope.dims, rope.traditional, 0.0, 1.0, _float32(rope._freqs))
    if kind is rope_utils.SuScaledRoPE:  # always multiplies the rotated part by its scale
        return Rope(rope.dim, False, 0.0, 1.0, _float32(rope._freqs), float(rope._scale))
    if kind is rope_utils.YarnRoPE:  # called with its defaults: scale 1, not inverse
        return Rope(rope.dims, rope.traditional, 0.0, 1.0, _float32(rope._freqs), rope.mscale)
    return None


def norm_of(module: Any) -> Norm | None:
    """The kernel's arguments for an RMSNorm module, or None if not one it reproduces."""
    kind = type(module)
    if kind is nn.RMSNorm:
        return Norm(module.weight, module.eps)
    if kind in (gemma2.RMSNorm, gemma3_text.RMSNorm):
        return Norm(1.0 + module.weight.astype(mx.float32), module.eps)
    return None


def attention_of(module: Any) -> AttentionSpec | None:
    """The spec of an mlx-lm attention module the kernel reproduces, else None."""
    kind = type(module)
    if kind not in _ATTENTION:
        return None
    rope = rope_of(module.rope)
    if rope is None:
        return None
    n_heads, n_kv_heads = module.n_heads, module.n_kv_heads
    if kind in (qwen3.Attention, gemma3_text.Attention):
        q_norm, k_norm = norm_of(module.q_norm), norm_of(module.k_norm)
        if q_norm is None or k_norm is None:
            return None
        return AttentionSpec(n_heads, n_kv_heads, module.scale, rope, q_norm=q_norm, k_norm=k_norm)
    if kind is gemma2.Attention:
        softcap = float(module.attn_logit_softcapping)
        return AttentionSpec(n_heads, n_kv_heads, module.scale, rope, softcap=softcap)
    if kind is phi3.Attention:
        return AttentionSpec(n_heads, n_kv_heads, module.scale, rope, fused_qkv=True)
    return AttentionSpec(n_heads, n_kv_heads, module.scale, rope)


def mlp_of(module: Any) -> MLPSpec | None:
    """The spec of an mlx-lm MLP the kernel reproduces, else None."""
    kind = type(module)
    if kind in (llama.MLP, qwen2.MLP, qwen3.MLP):
        return MLPSpec(gelu=False)
    if kind in (gemma2.MLP, gemma3_text.MLP):
        return MLPSpec(gelu=True)
    if kind is phi3.MLP:
        return MLPSpec(gelu=False, fused_gate_up=True)
    return None


def is_sandwich_block(module: Any) -> bool:
    """Whether `module` is a Gemma block: `h = x + post_norm(attn(norm(x)))`, same for the MLP.

    (Gemma 3's `clip_residual` is that sum for float32 activations, which the kernel path has.)
    """
    return type(module) in (gemma2.TransformerBlock, gemma3_text.TransformerBlock)


_ATTENTION = (
    llama.Attention,
    qwen2.Attention,
    qwen3.Attention,
    gemma2.Attention,
    gemma3_text.Attention,
    phi3.Attention,
)


def _float32(a: mx.array) -> mx.array:
    """`a` in float32, evaluated (a constant of the layer, computed once)."""
    a = a.astype(mx.float32)
    mx.eval(a)
    return a
