"""Images and model files on every Swarm node, without a registry, through each node's engine.

Before a model service is created or scaled, every node that may run a replica gets:
- the model-server image: compared by image id with the manager's; when missing or different,
  the manager's image is streamed into the node's engine (`runtime.image_transfer`);
- the model files, in a named volume keyed by the model's content hash (`anvyl-model-<hash>`),
  filled once through the node's engine (`runtime.volumes`); a marker file written last says
  the copy is complete, so a node that has it is reused and a half copy is redone.
The service then mounts that volume instead of a path of the server's machine. An image named
with a registry host is left for the nodes to pull. This module decides what to copy and says
so; the engine calls are `anvyl.runtime`'s.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from anvyl import config
from anvyl.errors import FailedPrecondition
from anvyl.runtime import DockerDriver, image_transfer, volumes
from anvyl.runtime import model_spec as spec

VOLUME_PREFIX = "anvyl-model-"
LABEL_MODEL_HASH = "anvyl.model.hash"
COMPLETE_MARKER = ".anvyl-complete"
CHUNK = image_transfer.CHUNK
SAY_EVERY_S = 2.0
HASH_CACHE = "model-hashes.json"

Say = Callable[[str], None]


def model_files(root: Path) -> list[Path]:
    """The model's files (symlinks followed), in a stable order."""
    root = Path(root).resolve()
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def model_hash(root: Path, cache_dir: Path | None = None) -> str:
    """SHA-256 of the model's files (names and contents); cached by name, size and mtime."""
    root = Path(root).resolve()
    files = model_files(root)
    stamp = [[str(p.relative_to(root)), *_stat(p)] for p in files]
    cache_path = cache_dir / HASH_CACHE if cache_dir is not None else None
    cache: dict[str, Any] = {}
    if cache_path is not None:
        try:
            cache = json.loads(cache_path.read_text())
        except (OSError, ValueError):
            cache = {}
        hit = cache.get(str(root))
        if isinstance(hit, dict) and hit.get("stamp") == stamp:
            return str(hit["hash"])
    digest = hashlib.sha256()
    for path in files:
        name = str(path.relative_to(root)).encode()
        digest.update(len(name).to_bytes(4, "big") + name)
        digest.update(path.stat().st_size.to_bytes(8, "big"))
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
    value = digest.hexdigest()
    if cache_path is not None:
        cache[str(root)] = {"stamp": stamp, "hash": value}
        try:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cache))
            tmp.replace(cache_path)
        except OSError:
            pass  # only a cache
    return value


def volume_name(content_hash: str) -> str:
    """The node volume that holds the model with this content hash."""
    return f"{VOLUME_PREFIX}{content_hash[:24]}"


def uses_registry(image: str) -> bool:
    """True when the image reference names a registry host (nodes pull it themselves)."""
    first, sep, _ = image.partition("/")
    return bool(sep) and ("." in first or ":" in first or first == "localhost")


def ensure_image(
    manager: DockerDriver, node: DockerDriver, image: str, hostname: str, say: Say
) -> int:
    """Make the node's `image` the manager's (same id); the bytes streamed (0: already there)."""
    want = image_transfer.image_id(manager, image)
    if not want:
        raise FailedPrecondition(f"the image {image} is not on the manager's engine")
    if image_transfer.image_id(node, image) == want:
        return 0
    say(f"{hostname}: the model-server image is missing: loading it from the manager")
    progress = _Throttle(lambda n: say(f"{hostname}: image {n / CHUNK:.0f} MiB sent"))
    sent = image_transfer.transfer_image(manager, node, image, progress=progress, where=hostname)
    if image_transfer.image_id(node, image) != want:
        raise FailedPrecondition(f"{hostname}: the loaded image is not the manager's {image}")
    say(f"{hostname}: image loaded ({sent / CHUNK:.0f} MiB)")
    return sent


def ensure_model_volume(
    node: DockerDriver,
    *,
    image: str,
    model_id: str,
    model_path: Path,
    content_hash: str,
    hostname: str,
    labels: dict[str, str],
    say: Say,
) -> int:
    """The model's files in the node's volume for its hash; the bytes copied (0: reused)."""
    name = volume_name(content_hash)
    model_labels = {**labels, config.LABEL_MANAGED: "true", config.LABEL_MODEL_ID: model_id}
    volumes.ensure_volume(node, name, {**model_labels, LABEL_MODEL_HASH: content_hash})
    with volumes.volume_files(
        node, image=image, volume=name, path=spec.CONTAINER_MODEL_PATH, labels=model_labels
    ) as files:
        if files.exists(COMPLETE_MARKER):
            return 0  # a complete copy is there
        found = model_files(model_path)
        total = sum(p.stat().st_size for p in found)
        say(f"{hostname}: copying the model files ({total / CHUNK:.0f} MiB) into {name}")
        progress = _Throttle(
            lambda n: say(f"{hostname}: model {n / CHUNK:.0f} / {total / CHUNK:.0f} MiB")
        )
        files.put(_tar_stream(Path(model_path).resolve(), found, progress), where=hostname)
        files.put(_tar_bytes(COMPLETE_MARKER, f"{content_hash}\n".encode()), where=hostname)
    say(f"{hostname}: model files copied")
    return total


def _stat(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


class _Throttle:
    """Calls `fn(n)` at most every SAY_EVERY_S seconds."""

    def __init__(self, fn: Callable[[int], None]) -> None:
        self.fn = fn
        self.last = time.monotonic()

    def __call__(self, n: int) -> None:
        now = time.monotonic()
        if now - self.last >= SAY_EVERY_S:
            self.last = now
            self.fn(n)


def _tar_bytes(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _tar_stream(root: Path, files: list[Path], progress: Callable[[int], None]) -> Iterator[bytes]:
    """A tar of `files` (relative to `root`, world-readable, owned by root), made as it is read."""
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def write() -> None:
        try:
            with os.fdopen(write_fd, "wb") as out, tarfile.open(fileobj=out, mode="w|") as tar:
                dirs: set[str] = set()
                for path in files:
                    rel = path.relative_to(root)
                    for parent in reversed(rel.parents[:-1]):
                        if str(parent) not in dirs:
                            dirs.add(str(parent))
                            info = tarfile.TarInfo(str(parent))
                            info.type, info.mode = tarfile.DIRTYPE, 0o755
                            tar.addfile(info)
                    info = tarfile.TarInfo(str(rel))
                    info.size, info.mode = path.stat().st_size, 0o644
                    info.mtime = int(path.stat().st_mtime)
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
        except BaseException as exc:  # a closed reader (BrokenPipe) or a vanished file
            failure.append(exc)

    thread = threading.Thread(target=write, name="anvyl-model-tar", daemon=True)
    thread.start()
    sent = 0
    with os.fdopen(read_fd, "rb") as source:
        while chunk := source.read(CHUNK):
            sent += len(chunk)
            progress(sent)
            yield chunk
    thread.join()
    if failure and not isinstance(failure[0], BrokenPipeError):
        raise FailedPrecondition(f"cannot read the model files: {failure[0]}")
