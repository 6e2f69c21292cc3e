"""Small GGUF files of each supported architecture, written as llama.cpp's converter writes them.

Each architecture starts from a Hugging Face config (what the real model's config.json says, at a
small size) and random weights under Hugging Face names; the GGUF gets the converter's renames and
fix-ups (q/k row permutation for llama, norm weights plus one for Gemma), its metadata keys, and a
tokenizer. The test side of the mapping is written here independently of `anvyl.catalog`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from catalog_ggufs import add_weight, byte_level_alphabet, llama_cpp_permute
from gguf import GGMLQuantizationType as QT

HIDDEN, HEADS, KV_HEADS, HEAD_DIM, FF, LAYERS = 256, 4, 2, 64, 512, 2
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
)
MULTILINGUAL = (
    "The quick brown fox jumps over the lazy dog. Le cœur a ses raisons.\n"
    "Der Fuchs springt über den Hund. Быстрая коричневая лиса прыгает.\n"
    "敏捷的棕色狐狸跳过了懒狗。素早い茶色の狐。 빠른 갈색 여우.\n"
    "الثعلب البني السريع 2024 numbers 3.14159 🦊🐶 tabs\tand  double  spaces"
)


@dataclass(frozen=True)
class Arch:
    """One architecture's Hugging Face side and how llama.cpp's converter writes it."""

    name: str  # a test id
    gguf_arch: str
    hf_config: dict[str, Any]
    block: dict[str, str]  # Hugging Face module under model.layers.N -> GGUF block module
    tokenizer: str  # "gpt2:<pre>" or "spm" / "spm-noprefix"
    permute_qk: bool = False
    norm_plus_one: bool = False
    tied: bool = True
    qkv_bias: bool = False
    extra_md: dict[str, Any] = field(default_factory=dict)


_ATTN = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
}
_MLP = {"mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
_NORMS = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
_QK = {"self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm"}
_GEMMA = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
}
_COMMON = {
    "hidden_size": HIDDEN,
    "num_hidden_layers": LAYERS,
    "intermediate_size": FF,
    "num_attention_heads": HEADS,
    "num_key_value_heads": KV_HEADS,
    "rms_norm_eps": 1e-6,
    "max_position_embeddings": 4096,
}
LLAMA3_SCALING = {
    "rope_type": "llama3",
    "factor": 32.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}

ARCHS: dict[str, Arch] = {
    a.name: a
    for a in (
        Arch(
            "llama3",
            "llama",
            {
                **_COMMON,
                "model_type": "llama",
                "head_dim": HEAD_DIM,
                "rope_theta": 500000.0,
                "rope_scaling": LLAMA3_SCALING,
                "tie_word_embeddings": False,
            },
            {**_ATTN, **_MLP, **_NORMS},
            "gpt2:llama-bpe",
            permute_qk=True,
            tied=False,
        ),
        Arch(
            "smollm",
            "llama",
            {**_COMMON, "model_type": "llama", "rope_theta": 100000.0, "tie_word_embeddings": True},
            {**_ATTN, **_MLP, **_NORMS},
            "gpt2:smollm",
            permute_qk=True,
        ),
        Arch(
            "mistral",
            "llama",
            {
                **_COMMON,
                "model_type": "llama",
                "rope_theta": 1000000.0,
                "tie_word_embeddings": False,
            },
            {**_ATTN, **_MLP, **_NORMS},
            "spm",
            permute_qk=True,
            tied=False,
        ),
        Arch(
            "qwen2",
            "qwen2",
            {
                **_COMMON,
                "model_type": "qwen2",
                "rope_theta": 1000000.0,
                "tie_word_embeddings": True,
            },
            {**_ATTN, **_MLP, **_NORMS},
            "gpt2:qwen2",
            qkv_bias=True,
        ),
        Arch(
            "qwen3",
            "qwen3",
            {
                **_COMMON,
                "model_type": "qwen3",
                "head_dim": HEAD_DIM,
                "rope_theta": 1000000.0,
                "tie_word_embeddings": False,
            },
            {**_ATTN, **_MLP, **_NORMS, **_QK},
            "gpt2:qwen2",
            tied=False,
        ),
        Arch(
            "gemma2",
            "gemma2",
            {
                **_COMMON,
                "model_type": "gemma2",
                "head_dim": HEAD_DIM,
                "rope_theta": 10000.0,
                "attn_logit_softcapping": 50.0,
                "final_logit_softcapping": 30.0,
                "query_pre_attn_scalar": HEAD_DIM,
            },
            {**_ATTN, **_MLP, **_GEMMA},
            "spm-noprefix",
            norm_plus_one=True,
            extra_md={
                "gemma2.attn_logit_softcapping": 50.0,
                "gemma2.final_logit_softcapping": 30.0,
                "gemma2.attention.sliding_window": 4096,
            },
        ),
        Arch(
            "gemma3",
            "gemma3",
            {
                **_COMMON,
                "model_type": "gemma3_text",
                "num_hidden_layers": 6,  # one global layer after five sliding ones
                "head_dim": HEAD_DIM,
                "rope_theta": 1000000.0,
                "rope_local_base_freq": 10000.0,
                "query_pre_attn_scalar": HEAD_DIM,
                "sliding_window": 4,
                "sliding_window_pattern": 6,
                "rope_scaling": {"rope_type": "linear", "factor": 8.0},
            },
            {**_ATTN, **_MLP, **_GEMMA, **_QK},
            "spm-noprefix",
            norm_plus_one=True,
            extra_md={
                "gemma3.attention.sliding_window": 4,
                "gemma3.rope.scaling.type": "linear",
                "gemma3.rope.scaling.factor": 8.0,
            },
        ),
        Arch(
            "phi3",
            "phi3",
            {
                **_COMMON,
                "model_type": "phi3",
                "rope_theta": 10000.0,
                "partial_rotary_factor": 0.75,
                "original_max_position_embeddings": 4096,
                "tie_word_embeddings": False,
            },
            {
                "self_attn.qkv_proj": "attn_qkv",
                "self_attn.o_proj": "attn_output",
                "mlp.gate_up_proj": "ffn_up",
                "mlp.down_proj": "ffn_down",
                **_NORMS,
            },
            "spm",
            tied=False,
            extra_md={"phi3.rope.dimension_count": int(HEAD_DIM * 0.75)},
        ),
    )
}


# --- tokenizers -------------------------------------------------------------------------------

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def gpt2_vocab() -> dict[str, Any]:
    """A byte-level BPE vocabulary: specials, the 256 byte symbols and a few merges."""
    tokens = [*SPECIALS, *byte_level_alphabet(), "he", "hel", "Ġt", "Ġth"]
    merges = ["h e", "he l", "Ġ t", "Ġt h"]
    types = [3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS))
    return {"tokens": tokens, "merges": merges, "types": types, "bos": 1, "eos": 2}


def spm_vocab(tmp: Path) -> dict[str, Any]:
    """A SentencePiece BPE vocabulary trained on the multilingual text (byte fallback on)."""
    import sentencepiece as spm

    corpus = tmp / "corpus.txt"
    corpus.write_text(MULTILINGUAL * 3)
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(tmp / "spm"),
        vocab_size=600,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=0.99,
        split_digits=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        user_defined_symbols=["<|im_start|>", "<|im_end|>"],
        minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_file=str(tmp / "spm.model"))
    n = sp.get_piece_size()

    def kind(i: int) -> int:
        if sp.is_unknown(i):
            return 2
        if sp.is_control(i):
            return 3
        if sp.is_byte(i):
            return 6
        return 4 if sp.id_to_piece(i).startswith("<|") else 1

    return {
        "tokens": [sp.id_to_piece(i) for i in range(n)],
        "scores": [sp.get_score(i) for i in range(n)],
        "types": [kind(i) for i in range(n)],
        "bos": sp.bos_id(),
        "eos": sp.eos_id(),
        "unk": sp.unk_id(),
        "model": str(tmp / "spm.model"),
    }


# --- weights ----------------------------------------------------------------------------------


def hf_weights(arch: Arch, vocab_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights under Hugging Face names (float32), shaped as `arch`'s model class."""
    rng = np.random.default_rng(seed)
    cfg = arch.hf_config
    head_dim = cfg.get("head_dim", HIDDEN // HEADS)
    q, kv = HEADS * head_dim, KV_HEADS * head_dim

    def r(*shape: int, scale: float = 0.05) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def norm(n: int) -> np.ndarray:
        return r(n) if arch.norm_plus_one else 1 + r(n)

    w = {"model.embed_tokens.weight": r(vocab_size, HIDDEN), "model.norm.weight": norm(HIDDEN)}
    if not arch.tied:
        w["lm_head.weight"] = r(vocab_size, HIDDEN)
    shapes = {
        "self_attn.q_proj": (q, HIDDEN),
        "self_attn.k_proj": (kv, HIDDEN),
        "self_attn.v_proj": (kv, HIDDEN),
        "self_attn.o_proj": (HIDDEN, q),
        "self_attn.qkv_proj": (q + 2 * kv, HIDDEN),
        "mlp.gate_proj": (FF, HIDDEN),
        "mlp.up_proj": (FF, HIDDEN),
        "mlp.gate_up_proj": (2 * FF, HIDDEN),
        "mlp.down_proj": (HIDDEN, FF),
        "self_attn.q_norm": (head_dim,),
        "self_attn.k_norm": (head_dim,),
    }
    for i in range(cfg["num_hidden_layers"]):
        for module in arch.block:
            name = f"model.layers.{i}.{module}"
            if module.endswith("norm") and module not in shapes:
                w[f"{name}.weight"] = norm(HIDDEN)
            elif module.endswith("norm"):
                w[f"{name}.weight"] = norm(shapes[module][0])
            else:
                w[f"{name}.weight"] = r(*shapes[module])
        if arch.qkv_bias:
            for p, n in (("q_proj", q), ("k_proj", kv), ("v_proj", kv)):
                w[f"model.layers.{i}.self_attn.{p}.bias"] = r(n, scale=0.5)
    return w


def gguf_tensor_name(arch: Arch, hf_name: str) -> str:
    """The GGUF name llama.cpp's converter gives a Hugging Face tensor."""
    top = {
        "model.embed_tokens.weight": "token_embd.weight",
        "lm_head.weight": "output.weight",
        "model.norm.weight": "output_norm.weight",
    }
    if hf_name in top:
        return top[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)
    module, _, leaf = rest.rpartition(".")
    return f"blk.{layer}.{arch.block[module]}.{leaf}"


def to_gguf_value(arch: Arch, hf_name: str, value: np.ndarray) -> np.ndarray:
    """The converter's fix-ups: llama's q/k row permutation, Gemma's norm plus one."""
    if arch.permute_qk and ".q_proj." in hf_name:
        return llama_cpp_permute(value, HEADS)
    if arch.permute_qk and ".k_proj." in hf_name:
        return llama_cpp_permute(value, KV_HEADS)
    if arch.norm_plus_one and hf_name.endswith("norm.weight"):
        return value + 1
    return value


def from_gguf_value(arch: Arch, hf_name: str, value: np.ndarray) -> np.ndarray:
    """The inverse of `to_gguf_value`."""
    if arch.permute_qk and (".q_proj." in hf_name or ".k_proj." in hf_name):
        n = HEADS if ".q_proj." in hf_name else KV_HEADS
        rows = value.shape[0]
        return (
            value.reshape(n, rows // n // 2, 2, *value.shape[1:])
            .swapaxes(1, 2)
            .reshape(value.shape)
        )
    if arch.norm_plus_one and hf_name.endswith("norm.weight"):
        return value - 1
    return value


def llama3_rope_freqs(cfg: dict[str, Any]) -> np.ndarray:
    """llama.cpp's `rope_freqs` tensor for Llama 3 scaling (as its converter computes it)."""
    s = cfg["rope_scaling"]
    dim = cfg.get("head_dim", HIDDEN // HEADS)
    freqs = 1.0 / (cfg["rope_theta"] ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    old, factor = s["original_max_position_embeddings"], s["factor"]
    low_wl, high_wl = old / s["low_freq_factor"], old / s["high_freq_factor"]
    out = []
    for f in freqs:
        wl = 2 * math.pi / f
        if wl < high_wl:
            out.append(1.0)
        elif wl > low_wl:
            out.append(factor)
        else:
            smooth = (old / wl - s["low_freq_factor"]) / (
                s["high_freq_factor"] - s["low_freq_factor"]
            )
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


# llama.cpp's general.file_type of a file whose weights are all `qtype`.
_FILE_TYPES = {
    QT.F32: 0, QT.F16: 1, QT.Q4_0: 2, QT.Q4_1: 3, QT.Q8_0: 7, QT.Q5_0: 8, QT.Q5_1: 9,
    QT.Q4_K: 15, QT.Q5_K: 17, QT.Q6_K: 18, QT.BF16: 32,
}  # fmt: skip


def write_arch_gguf(
    path: Path,
    arch: Arch,
    vocab: dict[str, Any],
    weights: dict[str, np.ndarray],
    qtype: QT = QT.F32,
    raw: dict[str, tuple[np.ndarray, QT]] | None = None,
    file_type: int | None = None,
    split_max_tensors: int = 0,
) -> Path:
    """Write `weights` as llama.cpp would: 2-D tensors as `qtype` (norms, biases F32)."""
    cfg = arch.hf_config
    a = arch.gguf_arch
    w = gguf.GGUFWriter(str(path), a, split_max_tensors=split_max_tensors)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(HIDDEN)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(FF)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg["rope_theta"])
    if "head_dim" in cfg:
        w.add_key_length(cfg["head_dim"])
        w.add_value_length(cfg["head_dim"])
    w.add_file_type(_FILE_TYPES[qtype] if file_type is None else file_type)
    for key, value in arch.extra_md.items():
        if isinstance(value, float):
            w.add_float32(key, value)
        elif isinstance(value, str):
            w.add_string(key, value)
        else:
            w.add_uint32(key, value)
    kind, _, pre = arch.tokenizer.partition(":")
    w.add_tokenizer_model("gpt2" if kind == "gpt2" else "llama")
    w.add_token_list(vocab["tokens"])
    w.add_token_types(vocab["types"])
    if kind == "gpt2":
        w.add_tokenizer_pre(pre)
        w.add_token_merges(vocab["merges"])
    else:
        w.add_tokenizer_pre("default")
        w.add_token_scores(vocab["scores"])
        w.add_unk_token_id(vocab["unk"])
        w.add_add_space_prefix(kind == "spm")
    w.add_bos_token_id(vocab["bos"])
    w.add_eos_token_id(vocab["eos"])
    w.add_add_bos_token(kind != "gpt2")
    w.add_chat_template(TEMPLATE)
    if cfg.get("rope_scaling", {}).get("rope_type") == "llama3":
        w.add_tensor("rope_freqs.weight", llama3_rope_freqs(cfg))
    for name, value in weights.items():
        add_weight(w, gguf_tensor_name(arch, name), to_gguf_value(arch, name, value), qtype, raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def gguf_reference_weights(arch: Arch, gguf_path: Path) -> dict[str, np.ndarray]:
    """Hugging Face weights from the `gguf` package's own dequantization of the file."""
    reader = gguf.GGUFReader(str(gguf_path))
    inverse = {v: k for k, v in arch.block.items()}
    top = {"token_embd": "model.embed_tokens", "output": "lm_head", "output_norm": "model.norm"}
    out = {}
    for t in reader.tensors:
        module, _, leaf = t.name.rpartition(".")
        if module == "rope_freqs":
            continue
        if module in top:
            hf = f"{top[module]}.{leaf}"
        else:
            _, layer, gmod = module.split(".")
            hf = f"model.layers.{layer}.{inverse[gmod]}.{leaf}"
        value = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        value = value.reshape(tuple(reversed([int(d) for d in t.shape])))
        out[hf] = from_gguf_value(arch, hf, value)
    return out
