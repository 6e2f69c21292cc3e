"""Content digests shared by the catalog and the image builder."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file, read in chunks (`hashlib.file_digest`)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
