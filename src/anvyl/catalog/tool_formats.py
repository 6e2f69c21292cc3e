"""Each catalog model's tool-call format by id, read once per process for listings that ask
often (the gateway's routing table is rebuilt every few seconds)."""

from __future__ import annotations

import threading
from pathlib import Path

from anvyl.catalog.discovery import discover_models

_lock = threading.Lock()
_known: dict[tuple[Path, str], str | None] = {}


def tool_format_of(home: Path, model_id: str) -> str | None:
    """The tool format of `model_id` in the catalog under `home` (None when unknown).

    A miss scans the catalog once and remembers every model it finds (and the miss itself),
    so later calls read no file.
    """
    key = (Path(home), model_id)
    with _lock:
        if key in _known:
            return _known[key]
    found = {m.id: m.tool_format for m in discover_models(key[0])}
    with _lock:
        for other, fmt in found.items():
            _known.setdefault((key[0], other), fmt)
        return _known.setdefault(key, found.get(model_id))
