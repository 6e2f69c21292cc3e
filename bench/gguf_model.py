"""A 1B-class Llama GGUF with random Q4_1 weights, for llama.cpp and Anvyl to run identical weights.

Written with the `gguf` package: Llama shapes (by default 2048 hidden, 16 layers, 32 heads,
8 KV heads, 8192 FFN: Llama 3.2 1B's), Q4_1 layers and a Q8_0 token embedding tied to the output
(as the bundled SmolLM2 file has them), float32 norms, and the tokenizer and chat template of a
given GGUF (the bundled model's, so both servers tokenize the counting prompts alike). Random
blocks are drawn directly in Q4_1/Q8_0 form (scales sized so activations stay finite), so no
float copy of a billion weights is made. Anvyl then imports the file like any GGUF.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

QK = 32  # weights per Q4_1 / Q8_0 block


def _q4_1(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Random Q4_1 blocks (f16 d, f16 m, 16 bytes of nibbles) of a (rows, cols) weight."""
    blocks = rows * cols // QK
    d = (rng.uniform(0.5, 1.5, blocks) / (4.6 * np.sqrt(cols))).astype(np.float16)
    m = (-8.0 * d.astype(np.float32)).astype(np.float16)
    qs = rng.integers(0, 256, (blocks, QK // 2), dtype=np.uint8)
    out = np.empty((blocks, 20), dtype=np.uint8)
    out[:, 0:2] = d.view(np.uint8).reshape(blocks, 2)
    out[:, 2:4] = m.view(np.uint8).reshape(blocks, 2)
    out[:, 4:] = qs
    return out.reshape(rows, cols // QK * 20)


def _q8_0(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Random Q8_0 blocks (f16 d, 32 int8) of a (rows, cols) weight (an embedding: std ~1)."""
    blocks = rows * cols // QK
    d = np.full(blocks, 1.0 / 64, dtype=np.float16)
    qs = rng.integers(-127, 128, (blocks, QK), dtype=np.int8)
    out = np.empty((blocks, 34), dtype=np.uint8)
    out[:, 0:2] = d.view(np.uint8).reshape(blocks, 2)
    out[:, 2:] = qs.view(np.uint8)
    return out.reshape(rows, cols // QK * 34)


def _copied_fields(source: Path) -> list[tuple[str, Any, Any, Any]]:
    """The tokenizer fields of `source` as (key, value, type, sub-type) for `add_key_value`."""
    import gguf

    reader = gguf.GGUFReader(source)
    fields = []
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        sub = field.types[1] if vtype == gguf.GGUFValueType.ARRAY else None
        fields.append((name, field.contents(), vtype, sub))
    return fields


def write_llama_gguf(
    path: Path,
    tokenizer_gguf: Path,
    *,
    hidden: int = 2048,
    layers: int = 16,
    heads: int = 32,
    kv_heads: int = 8,
    ffn: int = 8192,
    seed: int = 0,
) -> Path:
    """Write the random-weight Llama GGUF at `path` (kept if already there) and return it."""
    import gguf

    if path.is_file():
        return path
    copied = _copied_fields(tokenizer_gguf)
    vocab = next(len(v) for k, v, *_ in copied if k == "tokenizer.ggml.tokens")
    rng = np.random.default_rng(seed)
    head_dim = hidden // heads
    tmp = path.with_suffix(".partial")
    writer = gguf.GGUFWriter(tmp, "llama")
    writer.add_name("random-llama-1b-class")
    writer.add_context_length(8192)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(500000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_1)
    for key, value, vtype, sub in copied:
        writer.add_key_value(key, value, vtype, sub)
    q41, q80 = gguf.GGMLQuantizationType.Q4_1, gguf.GGMLQuantizationType.Q8_0
    writer.add_tensor("token_embd.weight", _q8_0(rng, vocab, hidden), raw_dtype=q80)
    ones = np.ones(hidden, dtype=np.float32)
    for i in range(layers):
        blk = f"blk.{i}"
        writer.add_tensor(f"{blk}.attn_norm.weight", ones)
        writer.add_tensor(f"{blk}.ffn_norm.weight", ones)
        for name, rows, cols in (
            ("attn_q", heads * head_dim, hidden),
            ("attn_k", kv_heads * head_dim, hidden),
            ("attn_v", kv_heads * head_dim, hidden),
            ("attn_output", hidden, heads * head_dim),
            ("ffn_gate", ffn, hidden),
            ("ffn_up", ffn, hidden),
            ("ffn_down", hidden, ffn),
        ):
            writer.add_tensor(f"{blk}.{name}.weight", _q4_1(rng, rows, cols), raw_dtype=q41)
    writer.add_tensor("output_norm.weight", ones)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.rename(path)
    return path
