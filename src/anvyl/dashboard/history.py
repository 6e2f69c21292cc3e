"""What the charts and the health history show: deployments sampled every few seconds.

`History` is pure (fed views and times, unit-tested without an engine); `Sampler` is the
thread that feeds it from `Models.list()` and keeps the latest snapshot for every page.
Only the sampler calls `Models.list()`, so every browser tab shares one probe per interval,
and it samples only while someone uses the dashboard: an unwatched control plane (and the
model servers it would probe) does no extra work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from anvyl.errors import AnvylError
from anvyl.services import Models
from anvyl.services.models import DeploymentView

log = logging.getLogger(__name__)

MAX_HEALTH_EVENTS = 100
IDLE_AFTER_S = 300.0  # sampling pauses this long after the last page or event stream


@dataclass(frozen=True)
class Sample:
    """One point of a deployment's charts."""

    t: float
    tokens_per_second: float
    requests_per_minute: float
    memory_used_bytes: int


@dataclass(frozen=True)
class HealthEvent:
    """A change of a deployment's observed state."""

    t: float
    state: str
    reason: str


@dataclass
class _Series:
    samples: deque[Sample]
    health: deque[HealthEvent] = field(default_factory=lambda: deque(maxlen=MAX_HEALTH_EVENTS))
    last_requests: tuple[float, int] | None = None


class History:
    """Ring buffers of samples and health changes per deployment id (thread-safe)."""

    def __init__(self, max_samples: int) -> None:
        self.max_samples = max(2, max_samples)
        self._series: dict[str, _Series] = {}
        self._lock = threading.Lock()

    def record(self, views: Sequence[DeploymentView], now: float) -> None:
        """Add one sample per deployment; forget deployments no longer listed."""
        with self._lock:
            seen = set()
            for view in views:
                dep_id = view.record.id
                seen.add(dep_id)
                series = self._series.get(dep_id)
                if series is None:
                    series = _Series(samples=deque(maxlen=self.max_samples))
                    self._series[dep_id] = series
                last = series.health[-1] if series.health else None
                if last is None or (last.state, last.reason) != (view.state, view.state_reason):
                    series.health.append(HealthEvent(now, view.state, view.state_reason))
                series.samples.append(
                    Sample(
                        t=now,
                        tokens_per_second=round(view.tokens_per_second, 2),
                        requests_per_minute=_requests_rate(series, view, now),
                        memory_used_bytes=view.memory_used_bytes,
                    )
                )
            for gone in set(self._series) - seen:
                del self._series[gone]

    def samples(self, dep_id: str) -> list[Sample]:
        """The samples of one deployment, oldest first."""
        with self._lock:
            series = self._series.get(dep_id)
            return list(series.samples) if series else []

    def health(self, dep_id: str) -> list[HealthEvent]:
        """The state changes of one deployment, oldest first."""
        with self._lock:
            series = self._series.get(dep_id)
            return list(series.health) if series else []


def _requests_rate(series: _Series, view: DeploymentView, now: float) -> float:
    """API requests per minute since the previous sample (`requests_total` counts only those)."""
    previous = series.last_requests
    if view.state != "ready":
        series.last_requests = None
        return 0.0
    series.last_requests = (now, view.requests_total)
    if previous is None or now <= previous[0] or view.requests_total < previous[1]:
        return 0.0
    delta = view.requests_total - previous[1]
    return round(delta * 60.0 / (now - previous[0]), 1)


@dataclass(frozen=True)
class Snapshot:
    """The deployments as last sampled, or why they could not be listed."""

    version: int
    taken_at: float
    views: tuple[DeploymentView, ...] = ()
    error: str = ""


class Sampler:
    """A thread that lists the deployments every `interval` seconds into a `History`."""

    def __init__(self, models: Models, *, interval: float, history_seconds: float) -> None:
        self.models = models
        self.interval = interval
        self.history = History(int(history_seconds / interval) + 1)
        self._snapshot = Snapshot(version=0, taken_at=0.0)
        self._last_use = float("-inf")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="anvyl-dashboard-sampler")
        self._thread.daemon = True

    @property
    def snapshot(self) -> Snapshot:
        """The latest snapshot."""
        return self._snapshot

    def start(self) -> None:
        """Start sampling."""
        self._thread.start()

    def poke(self) -> None:
        """Sample now (after a start or a stop) instead of at the next tick."""
        self._wake.set()

    def touch(self) -> None:
        """Someone is using the dashboard: sample (at once, if sampling was paused)."""
        idle = not self.active()
        self._last_use = time.monotonic()
        if idle:
            self._wake.set()

    def active(self) -> bool:
        """True while the dashboard was used in the last `IDLE_AFTER_S` seconds."""
        return time.monotonic() - self._last_use < IDLE_AFTER_S

    def stop(self) -> None:
        """Stop the thread (it finishes the sample it is taking)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def sample_once(self) -> Snapshot:
        """List the deployments, record them, publish the snapshot."""
        now = time.time()
        try:
            views = tuple(self.models.list())
            error = ""
        except AnvylError as exc:
            views, error = self._snapshot.views, exc.message
        except Exception as exc:  # keep sampling; the page shows the error
            log.exception("sampling the deployments failed")
            views, error = self._snapshot.views, f"internal error: {exc}"
        if not error:
            self.history.record(views, now)
        self._snapshot = Snapshot(self._snapshot.version + 1, now, views, error)
        return self._snapshot

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.active():
                self.sample_once()
            self._wake.wait(self.interval)
            self._wake.clear()
