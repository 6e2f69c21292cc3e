"""How models are loaded on demand: the serve-wide settings and keep-alive durations (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from anvyl.errors import InvalidArgument

DEFAULT_KEEP_ALIVE_S = 300.0  # Ollama's, LM Studio's and Docker Model Runner's default
DEFAULT_LOAD_TIMEOUT_S = 120.0
FOREVER = -1.0  # a keep-alive that never unloads
MAX_KEEP_ALIVE_S = 365 * 24 * 3600.0
HEADROOM_MIN_BYTES = 1 << 30
HEADROOM_FRACTION = 0.10
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


@dataclass(frozen=True)
class DemandPolicy:
    """`anvyl serve`'s on-demand settings.

    Args:
        autostart: Start a stopped model when a request names it (`--no-autostart`: off).
        keep_alive_s: Idle seconds before an on-demand deployment unloads (`FOREVER`: never).
        load_timeout_s: How long a request waits for its model to load.
        max_memory: The memory budget of each host in bytes (0: its total minus headroom).
        max_loaded: The most deployments per host (0: no limit).
    """

    autostart: bool = True
    keep_alive_s: float = DEFAULT_KEEP_ALIVE_S
    load_timeout_s: float = DEFAULT_LOAD_TIMEOUT_S
    max_memory: int = 0
    max_loaded: int = 0


def parse_keep_alive(value: str | int | float, *, what: str = "--keep-alive") -> float:
    """Seconds from `10m`, `1h30m`, `90s`, `300` (seconds), `0` (unload at once) or any
    negative number (never unload: `FOREVER`). InvalidArgument naming the value when bad."""
    if isinstance(value, bool):
        raise InvalidArgument(f"invalid {what} {value!r}: give a duration such as 10m, 0 or -1")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            sign = -1.0 if text.startswith("-") else 1.0
            body = text.lstrip("+-")
            parts = _DURATION_RE.findall(body)
            if not body or "".join(n + u for n, u in parts) != body:
                raise InvalidArgument(
                    f"invalid {what} {value!r}: give a duration such as 10m, 1h30m, 90s, "
                    "0 (unload when idle at once) or -1 (never unload)"
                ) from None
            seconds = sign * sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise InvalidArgument(f"invalid {what} {value!r}: give a finite duration")
    if seconds < 0:
        return FOREVER
    if seconds > MAX_KEEP_ALIVE_S:
        raise InvalidArgument(f"invalid {what} {value!r}: at most a year (or -1 for never)")
    return seconds


def format_keep_alive(seconds: float) -> str:
    """`5m`, `90s`, `never`: a keep-alive as users write it."""
    if seconds < 0:
        return "never"
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes // 60}h{minutes % 60}m" if minutes >= 120 else f"{minutes}m"
    return f"{seconds:g}s"


def headroom(total: int) -> int:
    """What the default budget leaves free: the larger of 1 GiB and 10 % of `total`."""
    return max(HEADROOM_MIN_BYTES, int(total * HEADROOM_FRACTION))
