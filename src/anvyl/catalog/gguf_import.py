"""Import a model into Anvyl's store: a GGUF file converted to MLX, or an MLX directory.

A GGUF import writes, into a staging directory next to the destination that is renamed into
place only at the end (so a failure leaves nothing half written):

- `model.safetensors` (or shards): the tensors converted to MLX's affine format or kept as
  floats (`gguf_quants`), renamed to mlx-lm's names for the architecture and fixed up where
  llama.cpp's converter changed them (`gguf_arch`);
- `config.json` for mlx-lm's model class, with a per-module `quantization` section;
- `tokenizer.json` and `tokenizer_config.json` rebuilt from `tokenizer.ggml.*`;
- `anvyl.json`: provenance (source file, its sha256, import time, Anvyl version).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from anvyl import __version__
from anvyl.catalog.gguf_arch import ARCHITECTURES, architecture
from anvyl.catalog.gguf_convert import (
    TensorSource,
    build_config,
    check_types,
    convert_tensors,
    file_quantization,
    hyperparameters,
    write_weights,
)
from anvyl.catalog.gguf_file import read_gguf_parts
from anvyl.catalog.ids import derive_model_id, validate_model_id
from anvyl.catalog.model_info import ModelInfo, describe_model, is_mlx_dir
from anvyl.digests import file_sha256
from anvyl.errors import AlreadyExists, ImportFailed, InvalidArgument

Progress = Callable[[str, float], None]
"""Called with a step description and the overall fraction done, 0.0 to 1.0."""

SUPPORTED_ARCHITECTURES = tuple(ARCHITECTURES)


def hf_module_name(gguf_module: str, arch: str = "llama") -> str | None:
    """The mlx-lm module path for a GGUF tensor's module (`blk.3.attn_q`), or None if unknown."""
    return ARCHITECTURES[arch].module_name(gguf_module)


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
    provenance: dict[str, Any] | None = None,
) -> ModelInfo:
    """Convert a GGUF file (see `SUPPORTED_ARCHITECTURES`) into an MLX directory at `dest_dir`.

    Args:
        gguf_path: the GGUF file.
        dest_dir: the directory to create; it must not exist yet.
        model_id: the id the model is known by (validated).
        progress: called with (step, overall fraction) during long steps.
        source_name: what `anvyl.json` records as the source (default: the file's name).
        provenance: more fields for `anvyl.json` (a pull records its repository and revision).
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
    header, parts = read_gguf_parts(gguf_path)
    arch = architecture(header.architecture, gguf_path.name)
    check_types(header, gguf_path.name)
    hparams = hyperparameters(header)
    # Imported here: discovery (the control plane's `model list`) needs no tokenizers.
    from anvyl.catalog.tokenizer_build import build_tokenizer, tokenizer_config

    tokenizer = build_tokenizer(header.metadata)

    with _staging(dest_dir) as staging:
        report("checksum", 0.05)
        sha256 = file_sha256(gguf_path)  # of the first part of a split file
        source = TensorSource(parts)
        report("converting tensors", 0.15)
        quantization = write_weights(
            staging,
            convert_tensors(source, header, arch, hparams),
            lambda f: report("converting tensors", 0.15 + 0.7 * f),
            len(header.tensors),
        )
        report("writing tokenizer", 0.85)
        tokenizer.save(str(staging / "tokenizer.json"))
        tok_config = tokenizer_config(header.metadata, hparams["max_position_embeddings"])
        _write_json(staging / "tokenizer_config.json", tok_config)
        config = _model_config(arch, header, hparams, quantization, source)
        _write_json(staging / "config.json", config)
        _write_json(
            staging / "anvyl.json",
            {
                "model_id": model_id,
                "format": "mlx",
                "source": source_name or gguf_path.name,
                "source_sha256": sha256,
                "source_parts": len(parts),
                "source_format": "gguf",
                "source_architecture": header.architecture,
                "source_quantization": file_quantization(header),
                "tokenizer_pre": header.metadata.get("tokenizer.ggml.pre"),
                "imported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "anvyl_version": __version__,
                **(provenance or {}),
            },
        )
        del source
        report("finishing", 0.95)
        _publish(staging, dest_dir)
    report("done", 1.0)
    return describe_model(dest_dir, model_id=model_id, source="anvyl")


_model_config = build_config  # a seam the tests use to fail mid-conversion


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


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
