"""Import a model into Anvyl's store: a llama GGUF file converted to MLX, or an MLX directory.

A GGUF import writes, into a staging directory next to the destination that is renamed into
place only at the end (so a failure leaves nothing half written):

- `model.safetensors`: the tensors as `mx.load` reads them (Q4_0/Q4_1/Q8_0 become MLX affine
  `weight`/`scales`/`biases`, group size 32), renamed to mlx-lm's llama names, with the rows of
  the q and k projections un-permuted (llama.cpp's converter permutes them for its rope layout);
- `config.json` from the `llama.*` metadata, with a per-module `quantization` section;
- `tokenizer.json` and `tokenizer_config.json` rebuilt from `tokenizer.ggml.*`;
- `anvyl.json`: provenance (source file, its sha256, import time, Anvyl version).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from anvyl import __version__
from anvyl.catalog.gguf_file import SUPPORTED_TYPES, GGUFHeader, read_gguf_header
from anvyl.catalog.ids import derive_model_id, validate_model_id
from anvyl.catalog.model_info import ModelInfo, describe_model, is_mlx_dir
from anvyl.digests import file_sha256
from anvyl.errors import AlreadyExists, ImportFailed, InvalidArgument

Progress = Callable[[str, float], None]
"""Called with a step description and the overall fraction done, 0.0 to 1.0."""

SUPPORTED_ARCHITECTURES = ("llama",)
GROUP_SIZE = 32  # every GGUF block type MLX loads has 32-element blocks
_QUANT_BITS = {"Q4_0": 4, "Q4_1": 4, "Q8_0": 8}

# GGUF tensor names -> mlx-lm llama names (the inverse of mlx_lm.gguf's translate_weight_names).
_TOP_LEVEL = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_BLOCK = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.([a-z_]+)$")
_SKIPPED = {"rope_freqs"}  # rope factors mlx-lm computes from config.json


def hf_module_name(gguf_module: str) -> str | None:
    """The mlx-lm module path for a GGUF tensor's module (`blk.3.attn_q`), or None if unknown."""
    if gguf_module in _TOP_LEVEL:
        return _TOP_LEVEL[gguf_module]
    m = _BLOCK_RE.match(gguf_module)
    if m and m.group(2) in _BLOCK:
        return f"model.layers.{m.group(1)}.{_BLOCK[m.group(2)]}"
    return None


def unpermute_rows(x: Any, n_heads: int) -> Any:
    """Undo llama.cpp's rope permutation of a q/k projection's rows (weights, scales, biases)."""
    rows, rest = x.shape[0], tuple(x.shape[1:])
    head_dim = rows // n_heads
    return x.reshape(n_heads, head_dim // 2, 2, *rest).swapaxes(1, 2).reshape(rows, *rest)


def import_model(
    source: Path,
    models_dir: Path,
    *,
    name: str | None = None,
    link: bool = False,
    progress: Progress | None = None,
) -> ModelInfo:
    """Import a GGUF file (converted) or an MLX directory (copied, or symlinked with `link`).

    Args:
        source: a `.gguf` file or an MLX model directory, on this machine.
        models_dir: Anvyl's model store (`ANVYL_HOME/models`).
        name: the model id; derived from the file or folder name (ending in `-mlx`) when None.
        link: for an MLX directory, symlink it instead of copying.
        progress: called with (step, overall fraction) during long steps.
    """
    source = Path(source).expanduser()
    if not source.exists():
        raise InvalidArgument(f"{source} does not exist")
    if source.is_dir():
        if not is_mlx_dir(source):
            raise InvalidArgument(
                f"{source} is not an MLX model directory (needs config.json and .safetensors "
                "files); give a .gguf file or an MLX directory"
            )
        model_id = validate_model_id(name) if name else derive_model_id(source.name)
        return _import_mlx_dir(source, models_dir / model_id, model_id, link, progress)
    stem = source.name[: -len(".gguf")] if source.name.lower().endswith(".gguf") else source.stem
    model_id = validate_model_id(name) if name else derive_model_id(stem)
    return import_gguf(source, models_dir / model_id, model_id=model_id, progress=progress)


def import_gguf(
    gguf_path: Path,
    dest_dir: Path,
    *,
    model_id: str,
    progress: Progress | None = None,
    source_name: str | None = None,
) -> ModelInfo:
    """Convert a llama GGUF file (Q4_0, Q4_1, Q8_0, F16, F32) into an MLX directory at `dest_dir`.

    Args:
        gguf_path: the GGUF file.
        dest_dir: the directory to create; it must not exist yet.
        model_id: the id the model is known by (validated).
        progress: called with (step, overall fraction) during long steps.
        source_name: what `anvyl.json` records as the source (default: the file's name).
    """
    validate_model_id(model_id)
    report = progress or (lambda _step, _fraction: None)
    gguf_path = Path(gguf_path)
    dest_dir = Path(dest_dir)
    if dest_dir.exists() or dest_dir.is_symlink():
        raise AlreadyExists(f"a model already exists at {dest_dir}; remove it first")
    if not gguf_path.is_file():
        raise InvalidArgument(f"{gguf_path} is not a file")

    report("reading header", 0.0)
    header = read_gguf_header(gguf_path)
    _check_supported(header, gguf_path)
    hparams = _hyperparameters(header)

    with _staging(dest_dir) as staging:
        report("checksum", 0.05)
        sha256 = file_sha256(gguf_path)
        report("loading tensors", 0.15)
        weights = _load_tensors(gguf_path)
        report("converting tensors", 0.45)
        weights, quantization = _convert_tensors(weights, header, hparams)
        report("writing weights", 0.55)
        import mlx.core as mx

        mx.save_safetensors(str(staging / "model.safetensors"), weights, metadata={"format": "mlx"})
        del weights
        report("writing tokenizer", 0.85)
        # Imported here: discovery (the control plane's `model list`) needs no tokenizers.
        from anvyl.catalog.tokenizer_build import build_tokenizer, tokenizer_config

        tokenizer = build_tokenizer(header.metadata)
        tokenizer.save(str(staging / "tokenizer.json"))
        tok_config = tokenizer_config(header.metadata, hparams["max_position_embeddings"])
        _write_json(staging / "tokenizer_config.json", tok_config)
        config = _model_config(header, hparams, quantization)
        _write_json(staging / "config.json", config)
        _write_json(
            staging / "anvyl.json",
            {
                "model_id": model_id,
                "format": "mlx",
                "source": source_name or gguf_path.name,
                "source_sha256": sha256,
                "source_format": "gguf",
                "source_quantization": _file_quantization(header),
                "tokenizer_pre": header.metadata.get("tokenizer.ggml.pre"),
                "imported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "anvyl_version": __version__,
            },
        )
        report("finishing", 0.95)
        _publish(staging, dest_dir)
    report("done", 1.0)
    return describe_model(dest_dir, model_id=model_id, source="anvyl")


def _import_mlx_dir(
    source: Path, dest: Path, model_id: str, link: bool, progress: Progress | None
) -> ModelInfo:
    report = progress or (lambda _step, _fraction: None)
    if dest.exists() or dest.is_symlink():
        raise AlreadyExists(f"a model named {model_id!r} already exists at {dest}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if link:
        dest.symlink_to(source.resolve(), target_is_directory=True)
    else:
        report("copying", 0.0)
        with _staging(dest) as staging:
            staging.rmdir()
            shutil.copytree(source, staging, symlinks=False)
            _publish(staging, dest)
    report("done", 1.0)
    return describe_model(dest, model_id=model_id, source="anvyl")


@contextmanager
def _staging(dest: Path) -> Iterator[Path]:
    """A fresh hidden directory beside `dest`, removed unless it was renamed into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".{dest.name}.importing-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, dest: Path) -> None:
    try:
        os.rename(staging, dest)
    except OSError as exc:
        if dest.exists():
            raise AlreadyExists(f"a model already exists at {dest}; remove it first") from exc
        raise ImportFailed(f"cannot move the imported model into {dest}: {exc}") from exc


def _check_supported(header: GGUFHeader, path: Path) -> None:
    arch = header.architecture
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ImportFailed(
            f"{path.name} has architecture {arch or 'unknown'!r}; Anvyl imports "
            f"{', '.join(SUPPORTED_ARCHITECTURES)} GGUF files only. Convert other models from "
            "their Hugging Face weights with mlx_lm.convert and import the MLX directory"
        )
    unsupported = header.unsupported_types()
    if unsupported:
        found = ", ".join(f"{t} ({n} tensors)" for t, n in sorted(unsupported.items()))
        raise ImportFailed(
            f"{path.name} uses quantization MLX cannot load: {found}. Supported: "
            f"{', '.join(SUPPORTED_TYPES)}; use a Q4_0, Q4_1, Q8_0 or F16 file of this model"
        )
    if not any(t.name == "token_embd.weight" for t in header.tensors):
        raise ImportFailed(f"{path.name} has no token_embd.weight tensor; it is not a llama model")


def _hyperparameters(header: GGUFHeader) -> dict[str, Any]:
    md = header.metadata
    arch = header.architecture

    def get(key: str, default: Any = None) -> Any:
        return md.get(f"{arch}.{key}", default)

    missing = [
        k
        for k in ("embedding_length", "block_count", "feed_forward_length", "attention.head_count")
        if get(k) is None
    ]
    if missing:
        raise ImportFailed(f"the GGUF file lacks {', '.join(f'{arch}.{k}' for k in missing)}")
    hidden = int(get("embedding_length"))
    heads = int(get("attention.head_count"))
    embed = next(t for t in header.tensors if t.name == "token_embd.weight")
    tokens = md.get("tokenizer.ggml.tokens") or []
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
        "vocab_size": int(get("vocab_size", len(tokens) or embed.shape[0])),
        "rope_scaling": _rope_scaling(md, arch),
    }


def _rope_scaling(md: dict[str, Any], arch: str) -> dict[str, Any] | None:
    kind = md.get(f"{arch}.rope.scaling.type")
    factor = md.get(f"{arch}.rope.scaling.factor")
    if kind == "linear" and factor:
        return {"type": "linear", "factor": float(factor)}
    return None


def _load_tensors(path: Path) -> dict[str, Any]:
    import mlx.core as mx

    try:
        loaded = mx.load(str(path))
    except (RuntimeError, ValueError, OSError) as exc:
        raise ImportFailed(f"MLX could not read the tensors of {path.name}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ImportFailed(f"MLX could not read the tensors of {path.name}")
    return loaded


def _convert_tensors(
    weights: dict[str, Any], header: GGUFHeader, hparams: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Rename to mlx-lm names, un-permute q/k, and collect each quantized module's bits."""
    types = {t.name.removesuffix(".weight"): t.type_name for t in header.tensors}
    heads = {
        "self_attn.q_proj": hparams["num_attention_heads"],
        "self_attn.k_proj": hparams["num_key_value_heads"],
    }
    out: dict[str, Any] = {}
    quantization: dict[str, Any] = {}
    unknown: list[str] = []
    for name, value in weights.items():
        module, _, leaf = name.rpartition(".")
        if module in _SKIPPED:
            continue
        target = hf_module_name(module)
        if target is None or leaf not in ("weight", "scales", "biases", "bias"):
            unknown.append(name)
            continue
        n_heads = next((n for k, n in heads.items() if target.endswith(k)), None)
        if n_heads is not None:
            value = unpermute_rows(value, n_heads)
        out[f"{target}.{leaf}"] = value
        bits = _QUANT_BITS.get(types.get(module, ""))
        if bits is not None and leaf == "weight":
            quantization[target] = {"group_size": GROUP_SIZE, "bits": bits}
    if unknown:
        shown = ", ".join(sorted(unknown)[:5])
        raise ImportFailed(f"the GGUF file has tensors Anvyl cannot map to llama: {shown}")
    return out, quantization


def _model_config(
    header: GGUFHeader, hparams: dict[str, Any], quantization: dict[str, Any]
) -> dict[str, Any]:
    md = header.metadata
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        **{k: v for k, v in hparams.items() if v is not None},
        "tie_word_embeddings": not any(t.name == "output.weight" for t in header.tensors),
        "attention_bias": False,
        "mlp_bias": False,
        "hidden_act": "silu",
    }
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


def _file_quantization(header: GGUFHeader) -> str:
    """The dominant tensor type of the weight matrices (e.g. "Q4_1"), like llama.cpp names it."""
    counts: dict[str, int] = {}
    for t in header.tensors:
        if len(t.shape) == 2 and t.name != "token_embd.weight":
            counts[t.type_name] = counts.get(t.type_name, 0) + 1
    if not counts:
        return "F32"
    return max(counts, key=lambda k: counts[k])


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
