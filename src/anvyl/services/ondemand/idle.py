"""The keep-alive clock: on the server's timer, see which deployments served since the last
look, record each model's peak memory, and unload deployments idle past their keep-alive.

Requests through the gateway are counted as they happen (`OnDemand.begin/end`); requests sent
straight to a model's port (`anvyl run`, a client given the URL) show in the server's own
counters, read here from `/metrics` of every server of a deployment (each replica of a Swarm
deployment where it runs): any server's change or busy gauge is use, and the peak is the
largest server's resident memory.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from anvyl.services.deployments.probe import REQUESTS_METRIC, probe
from anvyl.services.deployments.targets import server_bases
from anvyl.services.ondemand.policy import format_keep_alive
from anvyl.store import deployments as table
from anvyl.store import profiles

if TYPE_CHECKING:
    from anvyl.services.ondemand.manager import OnDemand
    from anvyl.store.deployments import DeploymentRecord

log = logging.getLogger(__name__)

IDLE_PERIOD_S = 1.0
PEAK_EVERY = 10  # ticks between two looks at deployments without a keep-alive (peak memory)
BUSY_METRICS = ("anvyl_active_sequences", "anvyl_queue_depth")
MEMORY_METRIC = "process_resident_memory_bytes"
MAX_PROBES = 8

Metrics = dict[str, float]


def servers_used(before: dict[str, float] | None, seen: dict[str, Metrics]) -> bool:
    """Whether a deployment's servers (`seen`: each one's `/metrics` now, by key) served since
    the last look (`before`: each one's request counter then; None: never looked).

    Any server busy now or whose counter moved is use; a server not seen before counts from 0
    (a new replica that has served). The first look counts as use: a restarted server starts
    every idle clock afresh.
    """
    if before is None:
        return True
    for key, metrics in seen.items():
        if any(metrics.get(name, 0.0) > 0 for name in BUSY_METRICS):
            return True
        if metrics.get(REQUESTS_METRIC, 0.0) != before.get(key, 0.0):
            return True
    return False


def largest_memory(seen: dict[str, Metrics]) -> int:
    """The largest resident memory of a deployment's servers (each replica holds the model)."""
    return max((int(m.get(MEMORY_METRIC, 0)) for m in seen.values()), default=0)


@dataclass
class IdleClock:
    """What the last look saw of each deployment (its request counter, the peak recorded)."""

    demand: OnDemand
    _requests: dict[str, dict[str, float]] = field(default_factory=dict)  # by server key
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
            keep = self.demand.keep_alive_of(record)
            if keep < 0 and self._ticks % PEAK_EVERY != 1:
                continue  # never unloads: only its peak memory is worth a look, now and then
            seen = self._look(record)
            if not seen:
                continue  # no server answers: nothing to judge now
            self._note_use(record.id, record.model_id, seen)
            self._note_peak(record.model_id, largest_memory(seen))
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

    def _look(self, record: DeploymentRecord) -> dict[str, Metrics]:
        """`/metrics` of each server of `record` that is healthy now, by server key."""
        service = self.demand.deployments
        bases = server_bases(service, record)
        key = service.keys.read(record.id) if bases else ""
        if len(bases) <= 1:
            looks = [probe(b, key) for b in bases.values()]
        else:
            with ThreadPoolExecutor(max_workers=min(MAX_PROBES, len(bases))) as pool:
                looks = list(pool.map(lambda b: probe(b, key), bases.values()))
        return {k: m for k, (health, m) in zip(bases, looks, strict=True) if health == 200}

    def _note_use(self, deployment_id: str, model_id: str, seen: dict[str, Metrics]) -> None:
        before = self._requests.get(deployment_id)
        counters = {**(before or {}), **{k: m.get(REQUESTS_METRIC, 0.0) for k, m in seen.items()}}
        self._requests[deployment_id] = counters
        if servers_used(before, seen):
            self.demand.touch(model_id)

    def _note_peak(self, model_id: str, used: int) -> None:
        if used > self._peaks.get(model_id, 0):
            self._peaks[model_id] = used
            try:
                profiles.record_peak(self.demand.deployments.store, model_id, used)
            except Exception:  # a full disk must not stop the clock
                log.warning("could not record the peak memory of %s", model_id, exc_info=True)
