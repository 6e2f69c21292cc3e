"""A GGUF file's tensors and metadata turned into an MLX directory's weights and config.json.

Tensors are read straight from the file (a memory map), one at a time, converted on numpy
(`gguf_quants`), renamed and fixed up for mlx-lm (`gguf_arch`), and written in safetensors shards
of at most `SHARD_BYTES`, so the memory an import needs is about one shard, not the model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from anvyl.catalog.gguf_arch import Architecture, model_config, unpermute_rows
from anvyl.catalog.gguf_file import GGUFHeader, TensorInfo
from anvyl.catalog.gguf_quants import BLOCK_LAYOUT, GROUP_SIZE, Affine, convert_tensor
from anvyl.errors import ImportFailed

SHARD_BYTES = 2 << 30

# llama.cpp's `general.file_type` numbers, as its quantize tool names them.
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 32: "BF16",
}  # fmt: skip


def check_types(header: GGUFHeader, file_name: str) -> None:
    """Refuse a file with a tensor type the import cannot convert, naming the supported ones."""
    unsupported = header.unsupported_types()
    if unsupported:
        found = ", ".join(f"{t} ({n} tensors)" for t, n in sorted(unsupported.items()))
        raise ImportFailed(
            f"{file_name} uses quantization Anvyl cannot convert: {found}. Supported: "
            f"{', '.join(BLOCK_LAYOUT)}; use a file of this model in one of those (Q4_K_M, "
            "Q5_K_M, Q6_K, Q8_0 ...)"
        )
    if not any(t.name == "token_embd.weight" for t in header.tensors):
        raise ImportFailed(f"{file_name} has no token_embd.weight tensor; it is not a text model")


def hyperparameters(header: GGUFHeader) -> dict[str, Any]:
    """The config.json fields every architecture shares, from `<arch>.*` metadata."""
    md, arch = header.metadata, header.architecture

    def get(key: str, default: Any = None) -> Any:
        return md.get(f"{arch}.{key}", default)

    needed = ("embedding_length", "block_count", "feed_forward_length", "attention.head_count")
    missing = [k for k in needed if get(k) is None]
    if missing:
        raise ImportFailed(f"the GGUF file lacks {', '.join(f'{arch}.{k}' for k in missing)}")
    hidden, heads = int(get("embedding_length")), int(get("attention.head_count"))
    embed = next(t for t in header.tensors if t.name == "token_embd.weight")
    return {
        "hidden_size": hidden,
        "num_hidden_layers": int(get("block_count")),
        "intermediate_size": int(get("feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(get("attention.head_count_kv", heads)),
        "head_dim": int(get("attention.key_length", hidden // heads)),
        # float32 in the file: keep the decimal it was written from (1e-05, not 9.99e-06).
        "rms_norm_eps": float(f"{float(get('attention.layer_norm_rms_epsilon', 1e-5)):.7g}"),
        "rope_theta": float(f"{float(get('rope.freq_base', 10000.0)):.7g}"),
        "max_position_embeddings": int(get("context_length", 2048)),
        "vocab_size": int(embed.shape[0]),
    }


def file_quantization(header: GGUFHeader) -> str:
    """The file's quantization as llama.cpp names it (`Q4_K_M`), else its dominant tensor type."""
    file_type = header.metadata.get("general.file_type")
    if isinstance(file_type, int) and file_type in FILE_TYPES:
        return FILE_TYPES[file_type]
    counts: dict[str, int] = {}
    for t in header.tensors:
        if len(t.shape) == 2 and t.name != "token_embd.weight":
            counts[t.type_name] = counts.get(t.type_name, 0) + 1
    return max(counts, key=lambda k: counts[k]) if counts else "F32"


class TensorSource:
    """Raw tensor bytes of a GGUF file (or of every part of a split one), by tensor name."""

    def __init__(self, parts: list[tuple[Path, GGUFHeader]]) -> None:
        self._where: dict[str, tuple[np.memmap, int, TensorInfo]] = {}
        for path, header in parts:
            data = np.memmap(path, dtype=np.uint8, mode="r")
            for t in header.tensors:
                self._where[t.name] = (data, header.data_offset, t)

    def info(self, name: str) -> TensorInfo | None:
        found = self._where.get(name)
        return found[2] if found else None

    def raw(self, t: TensorInfo) -> np.ndarray:
        data, data_offset, _ = self._where[t.name]
        start = data_offset + t.offset
        return data[start : start + (t.nbytes or 0)]

    def floats(self, name: str) -> np.ndarray | None:
        """A float tensor (F32/F16) as float32, or None when the file has no such tensor."""
        t = self.info(name)
        if t is None:
            return None
        value = convert_tensor(self.raw(t), t.type_name, t.shape)
        if isinstance(value, Affine) or t.type_name == "BF16":
            raise ImportFailed(f"{name} is stored as {t.type_name}; expected a float tensor")
        return np.asarray(value, np.float32)


def convert_tensors(
    source: TensorSource, header: GGUFHeader, arch: Architecture, hparams: dict[str, Any]
) -> Iterator[tuple[str, np.ndarray | Affine, str]]:
    """(mlx-lm module path and leaf, converted value, GGUF type) for every tensor to keep."""
    heads = {"q_proj": hparams["num_attention_heads"], "k_proj": hparams["num_key_value_heads"]}
    unknown: list[str] = []
    for t in header.tensors:
        module, _, leaf = t.name.rpartition(".")
        if module in arch.skipped:
            continue
        target = arch.module_name(module)
        if (
            target is None
            or leaf not in ("weight", "bias")
            or (arch.tied_only and target == "lm_head")
        ):
            unknown.append(t.name)
            continue
        value = convert_tensor(source.raw(t), t.type_name, t.shape)
        kind = target.rpartition(".")[2]
        if arch.permuted_qk and kind in heads:
            value = _map_rows(value, lambda x, n=heads[kind]: unpermute_rows(x, n))
        if arch.norm_offset and kind.endswith("norm") and not isinstance(value, Affine):
            value = value.astype(np.float32) - np.float32(arch.norm_offset)
        yield f"{target}.{leaf}", value, t.type_name
    if unknown:
        shown = ", ".join(sorted(unknown)[:5])
        raise ImportFailed(
            f"the GGUF file has tensors Anvyl cannot map to mlx-lm's {arch.model_type}: {shown}"
        )


def _map_rows(value: np.ndarray | Affine, fn: Callable[[np.ndarray], np.ndarray]) -> Any:
    if isinstance(value, Affine):
        return Affine(fn(value.weight), fn(value.scales), fn(value.biases), value.bits)
    return fn(value)


def write_weights(
    staging: Path,
    tensors: Iterator[tuple[str, np.ndarray | Affine, str]],
    progress: Callable[[float], None],
    total: int,
) -> dict[str, Any]:
    """Write safetensors shards; return the per-module quantization (group size and bits)."""
    import mlx.core as mx

    quantization: dict[str, Any] = {}
    shard: dict[str, Any] = {}
    shard_bytes = 0
    written: list[Path] = []

    def flush() -> None:
        nonlocal shard, shard_bytes
        if shard:
            path = staging / f"model-{len(written) + 1:05d}.safetensors"
            mx.save_safetensors(str(path), shard, metadata={"format": "mlx"})
            written.append(path)
            shard, shard_bytes = {}, 0

    for done, (name, value, type_name) in enumerate(tensors):
        module = name.rpartition(".")[0]
        if isinstance(value, Affine):
            quantization[module] = {"group_size": GROUP_SIZE, "bits": value.bits}
            parts = {"weight": value.weight, "scales": value.scales, "biases": value.biases}
            arrays = {f"{module}.{k}": mx.array(v) for k, v in parts.items()}
        elif type_name == "BF16" and value.dtype == np.uint16:
            arrays = {name: mx.array(np.ascontiguousarray(value)).view(mx.bfloat16)}
        else:
            arrays = {name: mx.array(np.ascontiguousarray(value))}
        shard.update(arrays)
        shard_bytes += sum(a.nbytes for a in arrays.values())
        if shard_bytes >= SHARD_BYTES:
            flush()
        progress((done + 1) / max(total, 1))
    flush()
    _name_shards(staging, written)
    return quantization


def _name_shards(staging: Path, shards: list[Path]) -> None:
    """One shard is model.safetensors; several get -0000k-of-0000n names and an index."""
    if len(shards) == 1:
        shards[0].rename(staging / "model.safetensors")
        return
    import mlx.core as mx

    weight_map: dict[str, str] = {}
    total = 0
    for k, path in enumerate(shards, start=1):
        final = staging / f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        path.rename(final)
        for name, array in mx.load(str(final)).items():
            weight_map[name] = final.name
            total += array.nbytes
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (staging / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def build_config(
    arch: Architecture,
    header: GGUFHeader,
    hparams: dict[str, Any],
    quantization: dict[str, Any],
    source: TensorSource,
) -> dict[str, Any]:
    """config.json: the architecture's fields, token ids and a per-module quantization section."""
    md = header.metadata
    config = model_config(arch, md, hparams, source.floats)
    config.setdefault("tie_word_embeddings", source.info("output.weight") is None)
    if arch.gguf_name in ("llama", "qwen2", "qwen3"):
        biases = source.info("blk.0.attn_q.bias") is not None
        config["attention_bias"] = biases
    for key in ("bos", "eos", "pad"):
        idx = md.get(f"tokenizer.ggml.{key}_token_id")
        if isinstance(idx, int):
            config[f"{key}_token_id"] = idx
    if quantization:
        bits = [q["bits"] for q in quantization.values()]
        section = {
            "group_size": GROUP_SIZE,
            "bits": max(set(bits), key=bits.count),
            "mode": "affine",
            **dict(sorted(quantization.items(), key=lambda kv: _natural_key(kv[0]))),
        }
        config["quantization"] = section
        config["quantization_config"] = section
    return config


def _natural_key(name: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]
