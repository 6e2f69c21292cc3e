"""What each GGUF architecture is in mlx-lm: tensor names, tensor fix-ups and config.json.

llama.cpp's converter changes a few tensors on the way in, and the import undoes that:
- `llama`: the rows of q and k are permuted for its rope layout (undone per head);
- `gemma2`/`gemma3`: every norm weight is stored plus one (mlx-lm's Gemma norms add the one);
- `phi3`: q/k/v and gate/up stay fused, as mlx-lm's phi3 has them.
Some config.json values are not in the metadata; they are taken as llama.cpp's loader takes them
(Gemma's attention scale by model size, Gemma 3's local rope base and sliding-window pattern).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from anvyl.errors import ImportFailed

_ATTN = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
}
_MLP = {"ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
_NORMS = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
_QK_NORMS = {"attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"}
_GEMMA_NORMS = {
    "attn_norm": "input_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
_PHI3 = {
    "attn_qkv": "self_attn.qkv_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_up": "mlp.gate_up_proj",
    "ffn_down": "mlp.down_proj",
    **_NORMS,
}
_TOP_LEVEL = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.([a-z_]+)$")


@dataclass(frozen=True)
class Architecture:
    """One GGUF architecture as mlx-lm loads it."""

    gguf_name: str
    model_type: str
    hf_class: str
    block: dict[str, str]  # GGUF block module -> mlx-lm module under model.layers.N
    permuted_qk: bool = False  # llama.cpp permuted q/k rows for its rope layout
    norm_offset: float = 0.0  # stored norm weight minus this is mlx-lm's
    tied_only: bool = False  # mlx-lm's model has no separate output head
    skipped: frozenset[str] = frozenset()  # top-level tensors read into config.json instead

    def module_name(self, gguf_module: str) -> str | None:
        """The mlx-lm module path of a GGUF module (`blk.3.attn_q`), or None if unknown."""
        if gguf_module in _TOP_LEVEL:
            return _TOP_LEVEL[gguf_module]
        m = _BLOCK_RE.match(gguf_module)
        if m and m.group(2) in self.block:
            return f"model.layers.{m.group(1)}.{self.block[m.group(2)]}"
        return None


ARCHITECTURES: dict[str, Architecture] = {
    a.gguf_name: a
    for a in (
        Architecture(
            "llama",
            "llama",
            "LlamaForCausalLM",
            {**_ATTN, **_MLP, **_NORMS},
            permuted_qk=True,
            skipped=frozenset({"rope_freqs"}),
        ),
        Architecture("qwen2", "qwen2", "Qwen2ForCausalLM", {**_ATTN, **_MLP, **_NORMS}),
        Architecture(
            "qwen3", "qwen3", "Qwen3ForCausalLM", {**_ATTN, **_MLP, **_NORMS, **_QK_NORMS}
        ),
        Architecture(
            "gemma2",
            "gemma2",
            "Gemma2ForCausalLM",
            {**_ATTN, **_MLP, **_GEMMA_NORMS},
            norm_offset=1.0,
            tied_only=True,
        ),
        Architecture(
            "gemma3",
            "gemma3_text",
            "Gemma3ForCausalLM",
            {**_ATTN, **_MLP, **_GEMMA_NORMS, **_QK_NORMS},
            norm_offset=1.0,
            tied_only=True,
        ),
        Architecture(
            "phi3",
            "phi3",
            "Phi3ForCausalLM",
            _PHI3,
            skipped=frozenset({"rope_factors_long", "rope_factors_short"}),
        ),
    )
}


def architecture(name: str, file_name: str) -> Architecture:
    """The supported architecture `name`, or ImportFailed naming the supported ones."""
    if name not in ARCHITECTURES:
        raise ImportFailed(
            f"{file_name} has architecture {name or 'unknown'!r}; Anvyl imports GGUF files of "
            f"{', '.join(ARCHITECTURES)}. Convert other models from their Hugging Face weights "
            "with mlx_lm.convert and import the MLX directory"
        )
    return ARCHITECTURES[name]


def unpermute_rows(x: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's rope permutation of a q/k projection's rows (weights, scales, biases)."""
    rows, rest = x.shape[0], tuple(x.shape[1:])
    head_dim = rows // n_heads
    return x.reshape(n_heads, head_dim // 2, 2, *rest).swapaxes(1, 2).reshape(rows, *rest)


Metadata = dict[str, Any]
TensorReader = Callable[[str], np.ndarray | None]  # a top-level float tensor by name, if present


def model_config(
    arch: Architecture, md: Metadata, hparams: dict[str, Any], tensor: TensorReader
) -> dict[str, Any]:
    """config.json for mlx-lm (quantization section and token ids added by the caller)."""
    config: dict[str, Any] = {
        "architectures": [arch.hf_class],
        "model_type": arch.model_type,
        **hparams,
        "hidden_act": "gelu_pytorch_tanh" if arch.norm_offset else "silu",
    }
    extra = _EXTRA[arch.gguf_name](md, hparams, tensor)
    config.update(extra)
    return {k: v for k, v in config.items() if v is not None}


def _key(md: Metadata, arch: str, key: str, default: Any = None) -> Any:
    return md.get(f"{arch}.{key}", default)


def _llama(md: Metadata, hp: dict[str, Any], tensor: TensorReader) -> dict[str, Any]:
    return {"rope_scaling": _llama_rope_scaling(md, hp, tensor), "mlp_bias": False}


def _llama_rope_scaling(
    md: Metadata, hp: dict[str, Any], tensor: TensorReader
) -> dict[str, Any] | None:
    freqs = tensor("rope_freqs.weight")
    if freqs is not None:
        return llama3_scaling(np.asarray(freqs, np.float64), hp)
    return _linear_scaling(md, "llama")


def _linear_scaling(md: Metadata, arch: str) -> dict[str, Any] | None:
    kind = _key(md, arch, "rope.scaling.type")
    factor = _key(md, arch, "rope.scaling.factor")
    if kind in (None, "none") or not factor or float(factor) == 1.0:
        return None
    if kind == "linear":
        return {"type": "linear", "factor": float(factor)}
    if kind == "yarn":
        original = _key(md, arch, "rope.scaling.original_context_length")
        return {
            "type": "yarn",
            "factor": float(factor),
            "original_max_position_embeddings": int(original) if original else None,
        }
    raise ImportFailed(f"rope scaling {kind!r} of this {arch} GGUF file is not supported")


def llama3_scaling(factors: np.ndarray, hp: dict[str, Any]) -> dict[str, Any]:
    """Llama 3's rope_scaling parameters recovered from the `rope_freqs` factors llama.cpp stores.

    Only the ratios old_context/low and old_context/high shape the factors, so old_context is
    fixed at 8192 (Llama 3's) and low/high are solved from the smoothly interpolated factors,
    then checked by recomputing every factor.
    """
    dim = factors.shape[0] * 2
    theta = float(hp["rope_theta"])
    inv_freq = theta ** -(np.arange(0, dim, 2, dtype=np.float64) / dim)
    wavelen = 2 * math.pi / inv_freq
    factor = float(factors.max())
    old = 8192.0
    low, high = 1.0, 4.0
    between = (factors > 1 + 1e-6) & (factors < factor - 1e-4 * factor)
    if factor > 1 and between.sum() >= 2:
        # 1/f = (1 - s)/factor + s, with s = (old/wavelen - low) / (high - low).
        s = (1 / factors[between] - 1 / factor) / (1 - 1 / factor)
        slope, intercept = np.polyfit(1 / wavelen[between], s, 1)
        high_minus_low = old / slope
        low = float(-intercept * high_minus_low)
        high = float(low + high_minus_low)
    scaling = {
        "rope_type": "llama3",
        "factor": round(factor, 6),
        "low_freq_factor": round(low, 4),
        "high_freq_factor": round(high, 4),
        "original_max_position_embeddings": int(old),
    }
    if not np.allclose(llama3_factors(scaling, inv_freq), factors, rtol=1e-3):
        raise ImportFailed(
            "the rope_freqs tensor of this llama GGUF file matches no Llama 3 rope scaling"
        )
    return scaling


def llama3_factors(scaling: dict[str, Any], inv_freq: np.ndarray) -> np.ndarray:
    """The per-frequency divisors Llama 3's rope scaling applies (as transformers computes)."""
    factor, old = scaling["factor"], scaling["original_max_position_embeddings"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    wavelen = 2 * math.pi / inv_freq
    smooth = (old / wavelen - low) / (high - low)
    out = 1 / ((1 - smooth) / factor + smooth)
    out = np.where(wavelen < old / high, 1.0, out)
    return np.where(wavelen > old / low, factor, out)


def _qwen(md: Metadata, hp: dict[str, Any], tensor: TensorReader) -> dict[str, Any]:
    return {"rope_scaling": _linear_scaling(md, md["general.architecture"])}


def _gemma_attention_scalar(hp: dict[str, Any], big_layers: int) -> int:
    # llama.cpp: the 27B models scale by hidden/heads, the others by head_dim.
    if hp["num_hidden_layers"] == big_layers:
        return hp["hidden_size"] // hp["num_attention_heads"]
    return int(hp["head_dim"])


def _gemma2(md: Metadata, hp: dict[str, Any], tensor: TensorReader) -> dict[str, Any]:
    return {
        "attn_logit_softcapping": float(_key(md, "gemma2", "attn_logit_softcapping", 50.0)),
        "final_logit_softcapping": float(_key(md, "gemma2", "final_logit_softcapping", 30.0)),
        "query_pre_attn_scalar": _gemma_attention_scalar(hp, 46),
        "sliding_window": _key(md, "gemma2", "attention.sliding_window"),
        "tie_word_embeddings": True,
    }


def _gemma3(md: Metadata, hp: dict[str, Any], tensor: TensorReader) -> dict[str, Any]:
    scaling = _linear_scaling(md, "gemma3")
    return {
        "query_pre_attn_scalar": _gemma_attention_scalar(hp, 62),
        "rope_local_base_freq": 10000.0,
        "sliding_window": int(_key(md, "gemma3", "attention.sliding_window", 512)),
        "sliding_window_pattern": 6,
        "rope_scaling": {"rope_type": "linear", **scaling} if scaling else None,
        "tie_word_embeddings": True,
    }


def _phi3(md: Metadata, hp: dict[str, Any], tensor: TensorReader) -> dict[str, Any]:
    rope_dims = _key(md, "phi3", "rope.dimension_count", hp["head_dim"])
    original = _key(md, "phi3", "rope.scaling.original_context_length")
    long_f, short_f = tensor("rope_factors_long.weight"), tensor("rope_factors_short.weight")
    scaling = None
    if long_f is not None and short_f is not None:
        scaling = {
            "type": "longrope",
            "long_factor": [float(x) for x in long_f],
            "short_factor": [float(x) for x in short_f],
        }
    return {
        "partial_rotary_factor": int(rope_dims) / hp["head_dim"],
        "original_max_position_embeddings": int(original or hp["max_position_embeddings"]),
        "rope_scaling": scaling,
    }


_EXTRA: dict[str, Callable[[Metadata, dict[str, Any], TensorReader], dict[str, Any]]] = {
    "llama": _llama,
    "qwen2": _qwen,
    "qwen3": _qwen,
    "gemma2": _gemma2,
    "gemma3": _gemma3,
    "phi3": _phi3,
}
