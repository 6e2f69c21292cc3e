"""A pre-norm decoder block's decode step built in one Python call, with the same kernel ops.

With the layers on Anvyl's kernels (`kernel_layers.py`), building the graph of one decode step in
Python became a sizeable share of it on small models: the bundled model's 30 blocks took about 4
ms a step (under load), through mlx-lm's block, the attention and MLP modules, `KernelLinear`,
`SharedInput` and some thousand `nn.Module.__getattr__` lookups. `KernelBlock` replaces a Llama,
Mistral, Qwen2 or Qwen3 block (`h = x + attn(norm(x))`, `out = h + mlp(norm(h))`) whose
attention, MLP and norms all went to the kernel, and builds its step from arguments bound once:
the same kernel calls with the same arguments in the same order, so the numbers are identical
(`tests/modelserver/test_kernel_block.py` compares them bit for bit). Whatever the plain path
would send elsewhere (a prompt chunk above `KERNEL_MAX_ROWS` rows, a quantized KV cache, a mask
kind the kernel does not know, projections with their own biases or of mixed widths) goes
through the modules as before. `ANVYL_KERNEL_BLOCK=0` keeps mlx-lm's blocks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_unflatten
from mlx_lm.models import llama, qwen2, qwen3

from anvyl.modelserver.fast_path import FastPath, fast_path_of, record_fast_path
from anvyl.modelserver.kernel import KERNEL_MAX_ROWS, KernelLinear
from anvyl.modelserver.kernel_layers import KernelAttention, KernelMLP, KernelRMSNorm

_BLOCKS = (llama.TransformerBlock, qwen2.TransformerBlock, qwen3.TransformerBlock)
_CHILDREN = ("self_attn", "mlp", "input_layernorm", "post_attention_layernorm")


@dataclass(frozen=True)
class _Projections:
    """One kernel call's weights (`qmm_many`): the projections of one input, no biases added."""

    weights: list[mx.array]
    scales: list[mx.array]
    biases: list[mx.array]
    group_size: int
    bits: int


def _projections(layers: list[Any]) -> _Projections | None:
    """The weights of `layers` for one `qmm_many` call, or None where that is not what the
    plain path computes (a layer not on the kernel, mixed widths or scale dtypes)."""
    if not all(isinstance(p, KernelLinear) for p in layers):
        return None
    first = layers[0]
    key = (first.group_size, first.bits, first.scales.dtype, first.weight.shape[1])
    if any((p.group_size, p.bits, p.scales.dtype, p.weight.shape[1]) != key for p in layers):
        return None
    return _Projections(
        [p.weight for p in layers],
        [p.scales for p in layers],
        [p.biases for p in layers],
        first.group_size,
        first.bits,
    )


@dataclass(frozen=True)
class _Plan:
    """Everything one decode step of the block needs, bound once."""

    norm1: tuple[mx.array, float]
    norm2: tuple[mx.array, float]
    qkv: _Projections
    qkv_bias: tuple[mx.array | None, mx.array | None, mx.array | None]
    o: tuple[Any, ...]  # `qmm`'s arguments after x
    gate_up: _Projections
    down: tuple[Any, ...]


def _plan_of(block: Any) -> _Plan | None:
    """The block's plan, or None when its step is not the plain sequence of kernel calls."""
    attn, mlp = block.self_attn, block.mlp
    if attn._spec.fused_qkv or mlp.fused:
        return None
    qkv_layers = [attn.q_proj, attn.k_proj, attn.v_proj]
    rest = [attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj]
    if any(not isinstance(p, KernelLinear) or "bias" in p for p in rest):
        return None
    qkv, o = _projections(qkv_layers), _projections([attn.o_proj])
    gate_up, down = _projections([mlp.gate_proj, mlp.up_proj]), _projections([mlp.down_proj])
    if qkv is None or o is None or gate_up is None or down is None:
        return None
    n1, n2 = block.input_layernorm, block.post_attention_layernorm
    biases = tuple(p.get("bias") for p in qkv_layers)
    return _Plan(
        (n1.weight, n1.eps),
        (n2.weight, n2.eps),
        qkv,
        biases,  # type: ignore[arg-type]
        _single(o),
        gate_up,
        _single(down),
    )


def _single(p: _Projections) -> tuple[Any, ...]:
    """`qmm`'s arguments after x for a one-weight `p` (the plain path calls `qmm` for it)."""
    return (p.weights[0], p.scales[0], p.biases[0], p.group_size, p.bits)


class KernelBlock(nn.Module):
    """A pre-norm block of kernel modules whose decode step is one Python call (module docs)."""

    def __init__(self, block: Any, kernels: ModuleType) -> None:
        super().__init__()
        for name in _CHILDREN:
            setattr(self, name, block[name])
        for name, value in vars(block).items():  # what the model reads on its layers
            if not name.startswith("_"):
                object.__setattr__(self, name, value)
        object.__setattr__(self, "_plan", _plan_of(block))
        object.__setattr__(self, "_k", kernels)

    def __call__(self, x: mx.array, mask: Any = None, cache: Any = None) -> mx.array:
        """The block's output for `x` (B, L, D), updating `cache`."""
        plan = self._plan
        attn = self.self_attn
        if (
            plan is None
            or x.dtype != mx.float32
            or x.size // x.shape[-1] > KERNEL_MAX_ROWS
            or not attn.handles(mask, cache)
        ):
            r = attn(self.input_layernorm(x), mask, cache)
            h = x + r
            return h + self.mlp(self.post_attention_layernorm(h))
        k = self._k
        qkv = plan.qkv
        q, kk, v = k.qmm_many(
            k.rms_norm(x, *plan.norm1),
            qkv.weights,
            qkv.scales,
            qkv.biases,
            qkv.group_size,
            qkv.bits,
        )
        qb, kb, vb = plan.qkv_bias
        out = attn.attend(((q, qb), (kk, kb), (v, vb)), mask, cache)
        h = x + k.qmm(out, *plan.o)
        gu = plan.gate_up
        gate, up = k.qmm_many(
            k.rms_norm(h, *plan.norm2), gu.weights, gu.scales, gu.biases, gu.group_size, gu.bits
        )
        return h + k.qmm(self.mlp._act(gate, up), *plan.down)


def is_kernel_block(module: Any) -> bool:
    """Whether `module` is a pre-norm block `KernelBlock` reproduces, all of it on the kernel."""
    return (
        type(module) in _BLOCKS
        and isinstance(module.self_attn, KernelAttention)
        and isinstance(module.mlp, KernelMLP)
        and isinstance(module.input_layernorm, KernelRMSNorm)
        and isinstance(module.post_attention_layernorm, KernelRMSNorm)
    )


def use_kernel_blocks(model: Any, kernels: ModuleType) -> int:
    """Swap the blocks `is_kernel_block` accepts for `KernelBlock`s; return how many.

    The model's recorded fast path (`fast_path.py`) counts them among the replaced modules.
    """
    if os.environ.get("ANVYL_KERNEL_BLOCK", "1") == "0":
        return 0
    blocks = [
        (name, KernelBlock(module, kernels))
        for name, module in model.named_modules()
        if is_kernel_block(module)
    ]
    if blocks:
        model.update_modules(tree_unflatten(blocks))
        path = getattr(model, "anvyl_fast_path", None)
        if isinstance(path, FastPath) and fast_path_of(model) != "mlx":
            replaced = {**path.replaced, KernelBlock.__name__: len(blocks)}
            record_fast_path(model, FastPath(replaced=replaced, kept=path.kept))
    return len(blocks)
