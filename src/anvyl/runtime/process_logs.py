"""The log file of a process deployment: rotated by size, read as a tail or followed."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

MAX_BYTES = 10 * 1024 * 1024
KEEP = 3  # server.log, server.log.1, server.log.2
FOLLOW_POLL_S = 0.2
CHUNK = 64 * 1024


def rotate(path: Path, *, max_bytes: int = MAX_BYTES, keep: int = KEEP) -> bool:
    """Copy and truncate `path` once it is over `max_bytes` (the writer keeps its O_APPEND fd)."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    for n in range(keep - 1, 1, -1):
        older = path.with_name(f"{path.name}.{n - 1}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{n}"))
    shutil.copyfile(path, path.with_name(f"{path.name}.1"))
    with open(path, "r+b") as f:
        f.truncate(0)
    return True


def tail_lines(path: Path, lines: int) -> bytes:
    """The last `lines` lines of the file (b"" when it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            data = b""
            pos = end
            while pos > 0 and data.count(b"\n") <= lines:
                step = min(CHUNK, pos)
                pos -= step
                f.seek(pos)
                data = f.read(step) + data
    except FileNotFoundError:
        return b""
    if lines <= 0:
        return b""
    kept = data.splitlines(keepends=True)[-lines:]
    return b"".join(kept)


class FileLogStream:
    """Chunks of a log file from `tail` lines back (all of it for None), then as it grows.

    A followed stream ends when `alive()` turns false and everything was read, or on `close()`.
    """

    def __init__(
        self, path: Path, *, follow: bool, tail: int | None, alive: Callable[[], bool]
    ) -> None:
        self.path = path
        self.follow = follow
        self.tail = tail
        self.alive = alive
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        if self.tail is not None:
            first = tail_lines(self.path, self.tail)
            offset = self._size()
        else:
            first, offset = b"", 0
        if first:
            yield first
        while not self._closed.is_set():
            size = self._size()
            if size < offset:  # rotated (copied and truncated): read the new file from its start
                offset = 0
            if size > offset:
                with open(self.path, "rb") as f:
                    f.seek(offset)
                    while chunk := f.read(CHUNK):
                        offset += len(chunk)
                        yield chunk
                continue
            if not self.follow or not self.alive():
                return
            self._closed.wait(FOLLOW_POLL_S)

    def close(self) -> None:
        """End the stream (safe from another thread)."""
        self._closed.set()

    def _size(self) -> int:
        with contextlib.suppress(FileNotFoundError):
            return self.path.stat().st_size
        return 0
