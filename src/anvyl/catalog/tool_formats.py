"""Each catalog model's tool-call format by id, read once per process for listings that ask
often (the gateway's routing table is rebuilt every few seconds)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from anvyl.catalog.discovery import discover_models
from anvyl.errors import AnvylError

log = logging.getLogger(__name__)

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
    try:
        found = {m.id: m.tool_format for m in discover_models(key[0])}
    except (AnvylError, OSError) as exc:  # a listing without it beats no routing table
        log.warning("could not read the tool formats of the catalog: %s", exc)
        return None
    with _lock:
        for other, fmt in found.items():
            _known.setdefault((key[0], other), fmt)
        return _known.setdefault(key, found.get(model_id))
