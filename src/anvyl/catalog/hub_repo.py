"""A Hugging Face Hub model repository: its reference, its file listing and the files to pull.

The listing comes from the Hub's API through `huggingface_hub` (the repository at one commit, each
file's size, git blob id and LFS sha256), so that every downloaded file can be checked against
it. Only what a model needs is fetched: for an MLX repository its config, tokenizer and
safetensors files (no `.bin`, `.pth`, `consolidated*` or `original/` copies); for a GGUF
repository one quantization, its split parts joined.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from anvyl.errors import InvalidArgument, NotFound, PermissionDenied, RuntimeUnavailable

DEFAULT_GGUF_QUANT = "Q4_K_M"
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_REVISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
_SPLIT_RE = re.compile(r"^(?P<stem>.+)-(?P<part>\d{5})-of-(?P<parts>\d{5})\.gguf$")
# Top-level files an MLX model directory needs besides its safetensors weights.
_MLX_EXTRA = re.compile(
    r"^(.*\.json|tokenizer\.model|.*\.tiktoken|merges\.txt|vocab\.txt|.*\.jinja|README\.md)$"
)


@dataclass(frozen=True)
class RepoRef:
    """`owner/name` and an optional revision (branch, tag or commit)."""

    repo: str
    revision: str | None = None

    def __str__(self) -> str:
        return f"{self.repo}:{self.revision}" if self.revision else self.repo


@dataclass(frozen=True)
class RepoFile:
    """One file of a repository at a commit, as the Hub lists it."""

    name: str
    size: int
    sha256: str | None  # LFS files
    blob_id: str | None  # git blob sha1 (every file)


@dataclass(frozen=True)
class Listing:
    """A repository resolved to one commit."""

    ref: RepoRef
    commit: str
    files: list[RepoFile]


@dataclass(frozen=True)
class Selection:
    """What to download: an MLX directory's files, or the part(s) of one GGUF file."""

    kind: str  # "mlx" or "gguf"
    files: list[RepoFile]
    note: str = ""  # said to the user (which GGUF file was chosen)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


def parse_ref(text: str) -> RepoRef:
    """`owner/name[:revision]`, validated (it becomes URL paths and a folder name)."""
    bare = text.strip().removeprefix("https://huggingface.co/").removeprefix("hf.co/")
    repo, _, revision = bare.partition(":")
    repo = repo.strip("/")
    if not _REPO_RE.match(repo) or ".." in repo:
        raise InvalidArgument(
            f"{text!r} is not a Hugging Face repository; use OWNER/NAME[:REVISION], e.g. "
            "mlx-community/Qwen2.5-0.5B-Instruct-4bit"
        )
    if revision and (not _REVISION_RE.match(revision) or ".." in revision):
        raise InvalidArgument(f"invalid revision {revision!r}")
    return RepoRef(repo, revision or None)


def list_repo(ref: RepoRef, *, endpoint: str | None, token: str | None) -> Listing:
    """The repository's files at `ref` (one API call); a one-line error when that fails."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    api = HfApi(endpoint=endpoint, token=token or False)
    where = endpoint or "the Hugging Face Hub"
    try:
        info = api.model_info(ref.repo, revision=ref.revision, files_metadata=True, timeout=30)
    except GatedRepoError as exc:
        raise PermissionDenied(
            f"{ref.repo} is gated: accept its terms on the Hub, then give `anvyl serve` a token "
            "(HF_TOKEN, or the file ANVYL_HOME/hf_token)"
        ) from exc
    except RevisionNotFoundError as exc:
        raise NotFound(f"{ref.repo} has no revision {ref.revision!r}") from exc
    except RepositoryNotFoundError as exc:
        hint = "" if token else " (a private repository needs HF_TOKEN on the server)"
        raise NotFound(f"no model repository {ref.repo} on {where}{hint}") from exc
    except HfHubHTTPError as exc:
        raise RuntimeUnavailable(f"{where} answered {_status(exc)} for {ref.repo}") from exc
    except (OSError, ValueError) as exc:  # httpx.TransportError is an OSError subclass here
        raise RuntimeUnavailable(f"cannot reach {where}: {_reason(exc)}") from exc
    except Exception as exc:
        if type(exc).__module__.startswith("httpx"):
            raise RuntimeUnavailable(f"cannot reach {where}: {_reason(exc)}") from exc
        raise
    files = [
        RepoFile(
            name=s.rfilename,
            size=int(s.size or (s.lfs.size if s.lfs else 0) or 0),
            sha256=s.lfs.sha256 if s.lfs else None,
            blob_id=s.blob_id,
        )
        for s in info.siblings or []
    ]
    if not info.sha:
        raise RuntimeUnavailable(f"{where} did not say which commit {ref} is")
    return Listing(ref, info.sha, files)


def select_files(listing: Listing, gguf_file: str | None = None) -> Selection:
    """The files to fetch, or a one-line reason the repository is not a model Anvyl runs."""
    names = {f.name: f for f in listing.files}
    top = [f for f in listing.files if "/" not in f.name]
    ggufs = [f for f in listing.files if f.name.lower().endswith(".gguf")]
    has_weights = any(f.name.endswith(".safetensors") for f in top)
    if gguf_file or (ggufs and not ("config.json" in names and has_weights)):
        return _select_gguf(listing, ggufs, gguf_file)
    if "config.json" not in names or not has_weights:
        what = "no config.json" if "config.json" not in names else "no .safetensors weights"
        raise InvalidArgument(
            f"{listing.ref.repo} is not an MLX model: it has {what} (and no .gguf file); "
            "look for an MLX version of it (e.g. under mlx-community/)"
        )
    wanted = [
        f
        for f in top
        if (f.name.endswith(".safetensors") and not f.name.startswith("consolidated"))
        or _MLX_EXTRA.match(f.name)
    ]
    return Selection("mlx", sorted(wanted, key=lambda f: f.name))


def _select_gguf(listing: Listing, ggufs: list[RepoFile], wanted: str | None) -> Selection:
    if not ggufs:
        raise InvalidArgument(f"{listing.ref.repo} has no .gguf file")
    if wanted:
        first = next((f for f in ggufs if f.name == wanted), None)
        if first is None:
            shown = ", ".join(sorted(f.name for f in ggufs)[:8])
            raise NotFound(f"{listing.ref.repo} has no file {wanted!r}; its GGUF files: {shown}")
        note = ""
    else:
        matches = [f for f in ggufs if DEFAULT_GGUF_QUANT.lower() in f.name.lower()]
        if not matches:
            shown = ", ".join(sorted(f.name for f in ggufs)[:8])
            raise InvalidArgument(
                f"{listing.ref.repo} has no {DEFAULT_GGUF_QUANT} file; choose one with --file "
                f"({shown})"
            )
        first = sorted(matches, key=lambda f: f.name)[0]
        note = f"pulling {first.name} ({DEFAULT_GGUF_QUANT}, the default; --file picks another)"
    split = _SPLIT_RE.match(PurePosixPath(first.name).name)
    if not split:
        return Selection("gguf", [first], note)
    parent = str(PurePosixPath(first.name).parent)
    prefix = "" if parent == "." else f"{parent}/"
    stem, count = split.group("stem"), int(split.group("parts"))
    by_name = {f.name: f for f in ggufs}
    parts = [f"{prefix}{stem}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]
    missing = [p for p in parts if p not in by_name]
    if missing:
        raise NotFound(f"{listing.ref.repo} lacks split part(s) {', '.join(missing)}")
    return Selection("gguf", [by_name[p] for p in parts], note)


def _status(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return f"HTTP {code}" if code else str(exc).splitlines()[0]


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
