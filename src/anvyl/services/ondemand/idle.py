"""The keep-alive clock: on the server's timer, see which deployments served since the last
look, record each model's peak memory, and unload deployments idle past their keep-alive.

Requests through the gateway are counted as they happen (`OnDemand.begin/end`); requests sent
straight to a model's port (`anvyl run`, a client given the URL) show in the server's own
counters, read here from `/metrics`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from anvyl.services.deployments.probe import REQUESTS_METRIC, probe
from anvyl.services.ondemand.policy import format_keep_alive
from anvyl.store import deployments as table
from anvyl.store import profiles

if TYPE_CHECKING:
    from anvyl.services.ondemand.manager import OnDemand

log = logging.getLogger(__name__)

IDLE_PERIOD_S = 1.0
PEAK_EVERY = 10  # ticks between two looks at deployments without a keep-alive (peak memory)
BUSY_METRICS = ("anvyl_active_sequences", "anvyl_queue_depth")
MEMORY_METRIC = "process_resident_memory_bytes"


@dataclass
class IdleClock:
    """What the last look saw of each deployment (its request counter, the peak recorded)."""

    demand: OnDemand
    _requests: dict[str, float] = field(default_factory=dict)
    _peaks: dict[str, int] = field(default_factory=dict)
    _ticks: int = 0

    def tick(self, now: float | None = None) -> list[str]:
        """One look at every ready deployment; returns the names of those it began to unload."""
        now = time.time() if now is None else now
        service = self.demand.deployments
        unloaded: list[str] = []
        self._ticks += 1
        records = [r for r in table.list_deployments(service.store) if r.state == table.STATE_READY]
        for record in records:
            if record.options.get("runtime") == "swarm":
                continue
            keep = self.demand.keep_alive_of(record)
            if keep < 0 and self._ticks % PEAK_EVERY != 1:
                continue  # never unloads: only its peak memory is worth a look, now and then
            health, metrics = probe(service.probe_base(record), service.keys.read(record.id))
            if health != 200:
                continue
            self._note_use(record.id, record.model_id, metrics)
            self._note_peak(record.model_id, metrics)
            if keep < 0:
                continue
            due = self.demand.unload_at(record)
            if due and now >= due:
                why = f"idle for {format_keep_alive(keep)} (its keep-alive)"
                if self.demand.try_unload(record, why, now=now):
                    unloaded.append(record.name)
        live = {r.id for r in records}
        for gone in set(self._requests) - live:
            del self._requests[gone]
        return unloaded

    def _note_use(self, deployment_id: str, model_id: str, metrics: dict[str, float]) -> None:
        seen = metrics.get(REQUESTS_METRIC, 0.0)
        before = self._requests.get(deployment_id)
        self._requests[deployment_id] = seen
        busy = any(metrics.get(name, 0.0) > 0 for name in BUSY_METRICS)
        # The first look counts as use: a restarted server starts every idle clock afresh.
        if busy or before is None or seen != before:
            self.demand.touch(model_id)

    def _note_peak(self, model_id: str, metrics: dict[str, float]) -> None:
        used = int(metrics.get(MEMORY_METRIC, 0))
        if used > self._peaks.get(model_id, 0):
            self._peaks[model_id] = used
            try:
                profiles.record_peak(self.demand.deployments.store, model_id, used)
            except Exception:  # a full disk must not stop the clock
                log.warning("could not record the peak memory of %s", model_id, exc_info=True)
