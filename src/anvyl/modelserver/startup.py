"""Where a model server's start goes: a timeline of named steps since the process began.

The steps (`imports` of the server's own modules, `libraries` — MLX and mlx-lm, which import
transformers —, `load` of weights and tokenizer, `warm-up`) are marked as they end and shown in
the one line the server prints when it is ready, so `anvyl model logs` says where a slow start
went. The clock starts when `anvyl.modelserver.__main__` is first imported; a re-exec (to
preload OpenBLAS) carries the start over in `ANVYL_STARTED_AT` (`time.monotonic()` is one
clock for every process of a machine).
"""

from __future__ import annotations

import os
import threading
import time

STARTED_ENV = "ANVYL_STARTED_AT"


class Timeline:
    """Named steps, each the time since the previous mark (thread-safe, first mark wins)."""

    def __init__(self, started: float | None = None) -> None:
        self.started = time.monotonic() if started is None else started
        self._last = self.started
        self._steps: dict[str, float] = {}
        self._lock = threading.Lock()

    def mark(self, step: str) -> None:
        """`step` ended now (a step marked twice keeps its first time)."""
        now = time.monotonic()
        with self._lock:
            if step not in self._steps:
                self._steps[step] = now - self._last
                self._last = now

    def steps(self) -> dict[str, float]:
        """Seconds per step, in the order they ended."""
        with self._lock:
            return dict(self._steps)

    def elapsed(self) -> float:
        """Seconds since the process began."""
        return time.monotonic() - self.started

    def summary(self) -> str:
        """`2.95 s (imports 0.90, libraries 1.20, load 0.70, warm-up 0.15)`."""
        parts = ", ".join(f"{name} {seconds:.2f}" for name, seconds in self.steps().items())
        return f"{self.elapsed():.2f} s" + (f" ({parts})" if parts else "")


def _started_at() -> float | None:
    """The start carried over a re-exec, if any."""
    try:
        value = float(os.environ.get(STARTED_ENV, ""))
    except ValueError:
        return None
    return value if 0 < value <= time.monotonic() else None


TIMELINE = Timeline(_started_at())
