"""One on-demand start that any number of requests wait for (single flight).

The first request for a stopped model makes a `Load`; every other request for that model joins
it. Each waiter counts: when the last one leaves (its client went away, or its wait timed out)
before the model is ready, the start is cancelled and cleaned up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING

from anvyl.errors import FailedPrecondition

if TYPE_CHECKING:
    from anvyl.services.deployments.views import DeploymentView

Listener = Callable[[str, str], None]  # (phase, message)


class LoadCancelled(FailedPrecondition):
    """Every request that waited for a start went away, so the start was undone."""


class Load:
    """A start in flight: its result (a ready deployment), its waiters and its progress."""

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self.future: Future[DeploymentView] = Future()
        self.cancel = threading.Event()
        self.waiters = 0
        self._lock = threading.Lock()
        self._said: list[tuple[str, str]] = []
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> None:
        """Call `listener(phase, message)` for each step, the ones already taken first."""
        with self._lock:
            said = list(self._said)
            self._listeners.append(listener)
        for phase, message in said:
            listener(phase, message)

    def unlisten(self, listener: Listener) -> None:
        """Stop calling `listener`."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def say(self, phase: str, message: str) -> None:
        """Tell every listener about a step of the start."""
        with self._lock:
            self._said.append((phase, message))
            listeners = list(self._listeners)
        for listener in listeners:
            listener(phase, message)

    def check(self) -> None:
        """Raise LoadCancelled once no request waits any more (the start's cancel callback)."""
        if self.cancel.is_set():
            raise LoadCancelled(
                f"the start of {self.model_id} was cancelled: no request waits for it any more"
            )
