"""Counting Docker API calls per operation: every HTTP request a driver sends is counted.

The server opens a counter around each RPC (`count_engine_calls`); the driver's response hook
adds to whichever counter is current in the calling context. Thread pools that run engine calls
for one operation submit with `contextvars.copy_context().run` so their calls count too.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class CallCounter:
    """A thread-safe counter of engine API calls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = 0

    def add(self, n: int = 1) -> None:
        """Count `n` more calls."""
        with self._lock:
            self._value += n

    @property
    def value(self) -> int:
        """Calls counted so far."""
        with self._lock:
            return self._value


_current: ContextVar[CallCounter | None] = ContextVar("anvyl_engine_calls", default=None)


@contextmanager
def count_engine_calls() -> Iterator[CallCounter]:
    """Count the engine calls made in this context until the block ends."""
    counter = CallCounter()
    token = _current.set(counter)
    try:
        yield counter
    finally:
        _current.reset(token)


def record_engine_call() -> None:
    """Add one call to the current counter, if one is open."""
    counter = _current.get()
    if counter is not None:
        counter.add()
