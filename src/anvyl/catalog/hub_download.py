"""Download one Hub file: resumable, cancellable, and checked by Anvyl against the listing.

Bytes go to `NAME.part` and are appended to on the next try (an HTTP Range request), so an
interrupted or cancelled pull resumes where it stopped. When the file is complete its sha256 (LFS
files) or git blob id (small files) must equal what the Hub listed, or it is deleted and the pull
fails: `huggingface_hub` itself does not check downloads.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx

from anvyl.catalog.files import CHUNK, digest
from anvyl.catalog.hub_repo import RepoFile
from anvyl.digests import file_sha256
from anvyl.errors import AnvylError, ImportFailed, RuntimeUnavailable


class CancelFlag:
    """Set when every one of several cancel events is set (a download shared by pulls)."""

    def __init__(self, events: list[threading.Event]) -> None:
        self.events = events

    def is_set(self) -> bool:
        return bool(self.events) and all(e.is_set() for e in self.events)


class Cancelled(AnvylError):
    """The pull was cancelled; what was downloaded is kept for the next pull to resume."""

    grpc_code = grpc.StatusCode.CANCELLED


def download(
    client: httpx.Client,
    url: str,
    file: RepoFile,
    dest: Path,
    *,
    on_bytes: Callable[[int], None],
    cancel: threading.Event | CancelFlag,
) -> None:
    """Fetch `url` into `dest` (resuming `dest.part`), then verify it against `file`."""
    if dest.is_file() and dest.stat().st_size == file.size and _verified(dest, file):
        on_bytes(file.size)
        return
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    if have > file.size:
        part.unlink()
        have = 0
    on_bytes(have)
    if have < file.size or file.size == 0:
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            with client.stream("GET", url, headers=headers) as response:
                if response.status_code == 416:  # nothing left to send
                    pass
                elif response.status_code not in (200, 206):
                    raise RuntimeUnavailable(
                        f"downloading {file.name} failed: HTTP {response.status_code}"
                    )
                else:
                    if response.status_code == 200 and have:
                        have = 0  # the server ignored the range: start over
                    with part.open("r+b" if have else "wb") as out:
                        out.seek(have)
                        out.truncate()
                        for chunk in response.iter_bytes(CHUNK):
                            if cancel.is_set():
                                raise Cancelled(
                                    f"pull cancelled; {file.name} is kept partial and resumes "
                                    "on the next pull"
                                )
                            out.write(chunk)
                            have += len(chunk)
                            on_bytes(have)
        except httpx.HTTPError as exc:
            raise RuntimeUnavailable(
                f"downloading {file.name} failed ({exc}); pull again to resume"
            ) from exc
    if part.stat().st_size != file.size:
        raise RuntimeUnavailable(
            f"{file.name}: got {part.stat().st_size} of {file.size} bytes; pull again to resume"
        )
    if not _verified(part, file):
        part.unlink()
        raise ImportFailed(
            f"{file.name} does not match the checksum the Hub lists for it (corrupted in "
            "transit or on the mirror); it was deleted, pull again"
        )
    part.rename(dest)


def _verified(path: Path, file: RepoFile) -> bool:
    if file.sha256:
        return file_sha256(path) == file.sha256.lower()
    if file.blob_id:
        sha1 = hashlib.sha1(usedforsecurity=False)
        sha1.update(f"blob {path.stat().st_size}\0".encode())
        return digest(path, sha1) == file.blob_id.lower()
    return False  # nothing to check against: refuse rather than trust
