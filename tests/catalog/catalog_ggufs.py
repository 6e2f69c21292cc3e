"""Tiny GGUF files crafted with the `gguf` package, and the independent dequantization check."""

from __future__ import annotations

from pathlib import Path

import gguf
import mlx.core as mx
import numpy as np
from gguf import GGMLQuantizationType as QT

HIDDEN, HEADS, KV_HEADS, FF, LAYERS = 64, 4, 2, 128, 2
HEAD_DIM = HIDDEN // HEADS
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
)


def byte_level_alphabet() -> list[str]:
    """GPT-2's byte-to-unicode table, in byte order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs, strict=True))]


def tiny_vocab() -> tuple[list[str], list[str], list[int]]:
    """(tokens, merges, token types): specials, the 256 byte symbols and two merges."""
    tokens = [*SPECIALS, *byte_level_alphabet(), "he", "hel"]
    merges = ["h e", "he l"]
    types = [3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS))
    return tokens, merges, types


def llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permutation of q/k rows."""
    return (
        w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def hf_weights(seed: int = 0, *, tied: bool = True) -> dict[str, np.ndarray]:
    """Random tiny llama weights under Hugging Face names (float32)."""
    rng = np.random.default_rng(seed)
    vocab = len(tiny_vocab()[0])

    def r(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    w = {"model.embed_tokens.weight": r(vocab, HIDDEN), "model.norm.weight": 1 + r(HIDDEN)}
    if not tied:
        w["lm_head.weight"] = r(vocab, HIDDEN)
    for i in range(LAYERS):
        p = f"model.layers.{i}"
        w |= {
            f"{p}.self_attn.q_proj.weight": r(HEADS * HEAD_DIM, HIDDEN),
            f"{p}.self_attn.k_proj.weight": r(KV_HEADS * HEAD_DIM, HIDDEN),
            f"{p}.self_attn.v_proj.weight": r(KV_HEADS * HEAD_DIM, HIDDEN),
            f"{p}.self_attn.o_proj.weight": r(HIDDEN, HEADS * HEAD_DIM),
            f"{p}.mlp.gate_proj.weight": r(FF, HIDDEN),
            f"{p}.mlp.up_proj.weight": r(FF, HIDDEN),
            f"{p}.mlp.down_proj.weight": r(HIDDEN, FF),
            f"{p}.input_layernorm.weight": 1 + r(HIDDEN),
            f"{p}.post_attention_layernorm.weight": 1 + r(HIDDEN),
        }
    return w


_TO_GGUF = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def gguf_name(hf_name: str) -> str:
    """The GGUF tensor name of a Hugging Face llama tensor name."""
    top = {
        "model.embed_tokens.weight": "token_embd.weight",
        "lm_head.weight": "output.weight",
        "model.norm.weight": "output_norm.weight",
    }
    if hf_name in top:
        return top[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)
    module = rest.removesuffix(".weight")
    return f"blk.{layer}.{_TO_GGUF[module]}.weight"


def write_tiny_gguf(
    path: Path,
    *,
    arch: str = "llama",
    qtype: QT = QT.F32,
    weights: dict[str, np.ndarray] | None = None,
    raw_override: dict[str, tuple[np.ndarray, QT]] | None = None,
) -> Path:
    """A tiny llama GGUF: 2D weights as `qtype` (norms F32), q/k permuted as llama.cpp does."""
    weights = hf_weights() if weights is None else weights
    tokens, merges, types = tiny_vocab()
    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(256)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FF)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(50000.0)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_merges(merges)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template(TEMPLATE)
    for name, value in weights.items():
        if name.endswith("q_proj.weight"):
            value = llama_cpp_permute(value, HEADS)
        elif name.endswith("k_proj.weight"):
            value = llama_cpp_permute(value, KV_HEADS)
        add_weight(w, gguf_name(name), value, qtype, raw_override)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def add_weight(
    w: gguf.GGUFWriter,
    gname: str,
    value: np.ndarray,
    qtype: QT,
    raw: dict[str, tuple[np.ndarray, QT]] | None = None,
) -> None:
    """One tensor as llama.cpp writes it: `raw` blocks if given, else 2-D as `qtype`, 1-D F32."""
    if raw and gname in raw:
        data, raw_type = raw[gname]
        w.add_tensor(gname, data, raw_dtype=raw_type)
    elif value.ndim == 1 or qtype == QT.F32:
        w.add_tensor(gname, value)
    elif qtype == QT.F16:
        w.add_tensor(gname, value.astype(np.float16))
    else:
        w.add_tensor(gname, gguf.quants.quantize(value, qtype), raw_dtype=qtype)


def unpermute_np(x: np.ndarray, n_heads: int) -> np.ndarray:
    """The inverse of `llama_cpp_permute`, on numpy."""
    rows = x.shape[0]
    return x.reshape(n_heads, rows // n_heads // 2, 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)


def assert_every_tensor_matches(gguf_path: Path, model_dir: Path, n_heads: int, n_kv: int) -> int:
    """Each converted tensor, dequantized by MLX, equals gguf's numpy dequantization (1e-5)."""
    from anvyl.catalog.gguf_import import hf_module_name

    converted = mx.load(str(model_dir / "model.safetensors"))
    reader = gguf.GGUFReader(str(gguf_path))
    checked: set[str] = set()
    for t in reader.tensors:
        module = t.name.removesuffix(".weight")
        target = hf_module_name(module)
        assert target is not None, t.name
        expected = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        expected = expected.reshape(tuple(reversed([int(d) for d in t.shape])))
        if target.endswith("q_proj"):
            expected = unpermute_np(expected, n_heads)
        elif target.endswith("k_proj"):
            expected = unpermute_np(expected, n_kv)
        weight = converted[f"{target}.weight"]
        if f"{target}.scales" in converted:
            scales = converted[f"{target}.scales"].astype(mx.float32)
            biases = converted[f"{target}.biases"].astype(mx.float32)
            bits = 32 * weight.shape[-1] // (scales.shape[-1] * 32)
            actual = mx.dequantize(weight, scales, biases, group_size=32, bits=bits)
            checked |= {f"{target}.scales", f"{target}.biases"}
        else:
            actual = weight.astype(mx.float32)
        checked.add(f"{target}.weight")
        actual_np = np.array(actual)
        assert actual_np.shape == expected.shape, (t.name, actual_np.shape, expected.shape)
        diff = float(np.max(np.abs(actual_np - expected))) if expected.size else 0.0
        assert diff <= 1e-5, f"{t.name} -> {target}: max difference {diff}"
    assert checked == set(converted), f"unchecked tensors: {sorted(set(converted) - checked)}"
    return len(reader.tensors)
