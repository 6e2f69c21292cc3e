"""Memory used by running model containers, from the engine's stats, cached for a moment."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from anvyl.runtime.driver import DockerDriver

STATS_MAX_AGE_S = 2.0
STATS_STALE_S = 30.0
STATS_WAIT_S = 0.25


class MemorySampler:
    """Memory used by running containers, from the engine's stats, cached for a moment.

    Within its 1 s sampling interval the engine answers a second stats call only at the next
    tick, so `model ps` shows a sample up to STATS_STALE_S old while a new one is taken in the
    background, and waits at most STATS_WAIT_S when it has none.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, int]] = {}
        self._pending: dict[str, Future[int]] = {}
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="anvyl-stats")

    def used(self, driver: DockerDriver, container_id: str) -> int:
        """Bytes in use (the engine's `usage` less inactive page cache, as `docker stats`)."""
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(container_id)
            age = now - cached[0] if cached is not None else float("inf")
            future = self._pending.get(container_id)
            if age >= STATS_MAX_AGE_S and (future is None or future.done()):
                future = self._pool.submit(self._sample, driver, container_id)
                self._pending[container_id] = future
        if cached is not None and age < STATS_STALE_S:
            return cached[1]  # fresh, or recent enough while a new sample is taken
        try:
            return future.result(timeout=STATS_WAIT_S) if future is not None else 0
        except Exception:  # slow (a later call gets it) or unavailable
            return 0

    def _sample(self, driver: DockerDriver, container_id: str) -> int:
        try:
            stats = driver.client.api.stats(container_id, stream=False, one_shot=True)
        except Exception:  # an engine older than API 1.41 has no one-shot stats
            stats = driver.client.api.stats(container_id, stream=False)
        memory = stats.get("memory_stats") or {}
        detail = memory.get("stats") or {}
        inactive = detail.get("total_inactive_file", detail.get("inactive_file", 0))
        used = max(0, int(memory.get("usage", 0)) - int(inactive))
        with self._lock:
            self._cache[container_id] = (time.monotonic(), used)
            if len(self._cache) > 1024:  # containers come and go: forget the oldest
                oldest = min(self._cache, key=lambda k: self._cache[k][0])
                del self._cache[oldest]
        return used
