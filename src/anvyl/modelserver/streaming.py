"""Server-sent events framing for streaming responses."""

from __future__ import annotations

import json
from typing import Any

SSE_DONE = b"data: [DONE]\n\n"


def sse_event(payload: dict[str, Any]) -> bytes:
    """One `data:` event carrying `payload` as compact JSON."""
    return b"data: " + json_bytes(payload) + b"\n\n"


def json_bytes(payload: Any) -> bytes:
    """Compact UTF-8 JSON (non-ASCII kept as is)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
