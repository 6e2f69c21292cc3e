"""`anvyl model pull`: a Hugging Face Hub repository into Anvyl's models, on the server.

A pull lists the repository at one commit, chooses the files a model needs (`hub_repo`), checks
the free disk space, downloads into `models/.pulls/<repo>@<commit>/` (resumable, checked by
Anvyl, `hub_download`) and then publishes: an MLX repository is moved into place as it is, a
GGUF file is converted (`gguf_import`) and its download removed. Two pulls of one repository in
one server share one download; a pull that every caller cancelled stops, keeping its partial
files for the next pull. `trust_remote_code` never comes into it: nothing from the repository
is executed.

The token for gated or private repositories is the server's own (`HF_TOKEN`, or the file
`ANVYL_HOME/hf_token`); `HF_ENDPOINT` points at a mirror.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anvyl import __version__
from anvyl.catalog.files import locked
from anvyl.catalog.hub_download import CancelFlag, Cancelled, download
from anvyl.catalog.hub_repo import Listing, RepoRef, Selection, list_repo, parse_ref, select_files
from anvyl.catalog.ids import derive_model_id, validate_model_id
from anvyl.catalog.model_info import ModelInfo, describe_model
from anvyl.errors import AlreadyExists, FailedPrecondition, ImportFailed

Progress = Callable[[str, float], None]
TOKEN_FILE = "hf_token"
DISK_MARGIN = 256 << 20  # left free after the pull


def hub_token(home: Path) -> str | None:
    """The server's Hub token: HF_TOKEN, else the file ANVYL_HOME/hf_token, else none."""
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if token:
        return token.strip()
    path = Path(home) / TOKEN_FILE
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


@dataclass
class _Job:
    """One download in progress, and every pull waiting on it."""

    listeners: list[Progress] = field(default_factory=list)
    cancels: list[threading.Event] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    result: ModelInfo | None = None
    error: BaseException | None = None

    def report(self, step: str, fraction: float) -> None:
        for listener in list(self.listeners):
            listener(step, fraction)


class Pulls:
    """The pulls of one server: a second pull of a repository joins the first's download."""

    def __init__(self, home: Path, *, endpoint: str | None = None) -> None:
        self.home = Path(home)
        self.endpoint = endpoint if endpoint is not None else os.environ.get("HF_ENDPOINT")
        self._jobs: dict[tuple[str, str, str, str], _Job] = {}
        self._lock = threading.Lock()

    def pull(
        self,
        ref: str,
        *,
        file: str = "",
        name: str = "",
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> ModelInfo:
        """Pull `OWNER/NAME[:REVISION]` (a GGUF repository's `file`) as model `name`.

        Args:
            ref: the repository and optional revision.
            file: for a GGUF repository, the .gguf file (default: its Q4_K_M file).
            name: the model id (default: from the repository or file name).
            progress: called with (step, overall fraction).
            cancel: set to stop waiting; the download stops when every waiting pull cancelled.
        """
        parsed = parse_ref(ref)
        if name:
            validate_model_id(name)
        key = (parsed.repo, parsed.revision or "", file, name)
        mine = cancel or threading.Event()
        with self._lock:
            job = self._jobs.get(key)
            owner = job is None
            if job is None:
                job = self._jobs[key] = _Job()
            if progress:
                job.listeners.append(progress)
            job.cancels.append(mine)
        if owner:
            try:
                job.result = _pull(
                    self.home / "models",
                    parsed,
                    file or None,
                    name or None,
                    endpoint=self.endpoint,
                    token=hub_token(self.home),
                    progress=job.report,
                    cancel=CancelFlag(job.cancels),
                )
            except BaseException as exc:
                job.error = exc
            finally:
                with self._lock:
                    self._jobs.pop(key, None)
                job.done.set()
        else:
            job.report("joining a pull of the same repository in progress", 0.0)
            while not job.done.wait(0.2):
                if mine.is_set():
                    break
        if job.error is not None:
            raise job.error
        if job.result is None:
            raise Cancelled("pull cancelled; the shared download goes on for the other pull")
        return job.result


_SHARED: dict[Path, Pulls] = {}
_SHARED_LOCK = threading.Lock()


def shared_pulls(home: Path) -> Pulls:
    """This process's one `Pulls` for ANVYL_HOME `home` (the server's, so pulls share)."""
    with _SHARED_LOCK:
        return _SHARED.setdefault(Path(home), Pulls(Path(home)))


def _pull(
    models_dir: Path,
    ref: RepoRef,
    file: str | None,
    name: str | None,
    *,
    endpoint: str | None,
    token: str | None,
    progress: Progress,
    cancel: CancelFlag,
) -> ModelInfo:
    progress(f"listing {ref}", 0.0)
    listing = list_repo(ref, endpoint=endpoint, token=token)
    selection = select_files(listing, file)
    if selection.note:
        progress(selection.note, 0.0)
    model_id = name or _default_id(listing, selection)
    dest = models_dir / model_id
    if dest.exists() or dest.is_symlink():
        raise AlreadyExists(
            f"a model named {model_id!r} already exists; remove it (`anvyl model rm {model_id}`) "
            "or pull under another --name"
        )
    staging = models_dir / ".pulls" / f"{ref.repo.replace('/', '--')}@{listing.commit[:12]}"
    staging.mkdir(parents=True, exist_ok=True)
    with locked(staging / ".lock"):  # one pull per folder across processes
        _check_disk(staging, selection)
        share = 0.5 if selection.kind == "gguf" else 0.95
        _download_all(listing, selection, staging, endpoint, token, progress, cancel, share)
        provenance = {
            "source": f"hf.co/{ref.repo}@{listing.commit[:12]}",
            "source_repo": ref.repo,
            "source_revision": listing.commit,
            "source_ref": ref.revision or "main",
            "pulled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if selection.kind == "gguf":
            info = _import_gguf(staging, selection, dest, model_id, provenance, progress)
        else:
            info = _publish_mlx(staging, selection, dest, model_id, provenance)
    shutil.rmtree(staging, ignore_errors=True)
    progress("done", 1.0)
    return info


def _default_id(listing: Listing, selection: Selection) -> str:
    if selection.kind == "gguf":
        stem = Path(selection.files[0].name).name.removesuffix(".gguf")
        return derive_model_id(stem.split("-00001-of-")[0])
    return derive_model_id(listing.ref.repo.split("/")[1])


def _check_disk(staging: Path, selection: Selection) -> None:
    have = sum(_partial_size(staging, f.name) for f in selection.files)
    need = selection.size - have
    if selection.kind == "gguf":
        need += selection.size  # the converted weights are about the GGUF's size
    free = shutil.disk_usage(staging).free
    if need + DISK_MARGIN > free:
        raise FailedPrecondition(
            f"not enough disk space: the pull needs {_gib(need)} GiB, {_gib(free)} GiB are free "
            f"under {staging.parent.parent}"
        )


def _partial_size(staging: Path, name: str) -> int:
    for path in (staging / name, staging / f"{name}.part"):
        if path.is_file():
            return path.stat().st_size
    return 0


def _download_all(
    listing: Listing,
    selection: Selection,
    staging: Path,
    endpoint: str | None,
    token: str | None,
    progress: Progress,
    cancel: CancelFlag,
    share: float,
) -> None:
    import httpx
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    total = max(selection.size, 1)
    done_before = 0
    headers = build_hf_headers(
        token=token or False, library_name="anvyl", library_version=__version__
    )
    timeout = httpx.Timeout(30.0, read=120.0)
    # config.json first: a model type mlx-lm cannot load is refused before the weights come.
    files = sorted(selection.files, key=lambda f: f.name != "config.json")
    with httpx.Client(headers=headers, follow_redirects=True, timeout=timeout) as client:
        for f in files:
            url = hf_hub_url(listing.ref.repo, f.name, revision=listing.commit, endpoint=endpoint)
            step = f"downloading {f.name}"

            def on_bytes(n: int, base: int = done_before, step: str = step) -> None:
                progress(step, share * (base + n) / total)

            download(client, url, f, staging / f.name, on_bytes=on_bytes, cancel=cancel)
            done_before += f.size
            if selection.kind == "mlx" and f.name == "config.json":
                _check_mlx_architecture(staging / f.name)


def _publish_mlx(
    staging: Path, selection: Selection, dest: Path, model_id: str, provenance: dict[str, Any]
) -> ModelInfo:
    out = dest.parent / f".{dest.name}.pulling"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    for f in selection.files:
        target = out / f.name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / f.name, target)
    record = {"model_id": model_id, "format": "mlx", "source_format": "mlx", **provenance}
    (out / "anvyl.json").write_text(json.dumps({**record, "anvyl_version": __version__}, indent=2))
    try:
        os.rename(out, dest)
    except OSError as exc:
        shutil.rmtree(out, ignore_errors=True)
        raise AlreadyExists(f"a model already exists at {dest}") from exc
    return describe_model(dest, model_id=model_id, source="anvyl")


def _check_mlx_architecture(config_path: Path) -> None:
    """Refuse a model type mlx-lm has no model class for (when mlx-lm is installed here)."""
    import importlib.util

    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise ImportFailed(f"the repository's config.json cannot be read: {exc}") from exc
    model_type = str(config.get("model_type") or "")
    if not model_type:
        raise ImportFailed("the repository's config.json has no model_type; not an mlx-lm model")
    if importlib.util.find_spec("mlx_lm") is None:
        return
    from mlx_lm.utils import MODEL_REMAPPING

    module = MODEL_REMAPPING.get(model_type, model_type).replace("-", "_")
    if importlib.util.find_spec(f"mlx_lm.models.{module}") is None:
        raise ImportFailed(
            f"mlx-lm has no model class for architecture {model_type!r}; this repository "
            "cannot run on Anvyl's engine"
        )


def _import_gguf(
    staging: Path,
    selection: Selection,
    dest: Path,
    model_id: str,
    provenance: dict[str, Any],
    progress: Progress,
) -> ModelInfo:
    from anvyl.catalog.gguf_import import import_gguf

    return import_gguf(
        staging / selection.files[0].name,
        dest,
        model_id=model_id,
        progress=lambda step, f: progress(step, 0.5 + 0.5 * f),
        source_name=f"hf.co/{provenance['source_repo']}/{selection.files[0].name}",
        provenance=provenance,
    )


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f}"
