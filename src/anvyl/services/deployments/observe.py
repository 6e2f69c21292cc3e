"""`model ps`: each deployment as its runtime sees it, then probed the same way for every runtime.

A read: nothing here writes the store or changes what runs.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from anvyl.errors import AnvylError
from anvyl.runtime.base import (
    STATUS_GONE,
    STATUS_RESTARTING,
    STATUS_RUNNING,
    DeploymentRuntime,
    Observation,
)
from anvyl.services.deployments.probe import probe
from anvyl.services.deployments.views import DeploymentView, handle_of, runtime_of
from anvyl.store import deployments as table
from anvyl.store.deployments import DeploymentRecord

if TYPE_CHECKING:
    from anvyl.services.deployments.probe import ThroughputTracker
    from anvyl.services.hosts import Hosts
    from anvyl.store.secrets import ApiKeys

MAX_PROBES = 8


class Deployments(Protocol):
    """What observing needs of the deployment service (`services.deployments.service`)."""

    hosts: Hosts
    keys: ApiKeys
    throughput: ThroughputTracker

    def runtime(self, kind: str, host_id: str) -> DeploymentRuntime: ...

    def view(self, record: DeploymentRecord) -> DeploymentView: ...

    def probe_base(self, record: DeploymentRecord) -> str: ...


def observe_all(service: Deployments, records: list[DeploymentRecord]) -> list[DeploymentView]:
    """Views of `records`, in order: one look per runtime and host, probes in parallel."""
    seen: dict[str, tuple[DeploymentRuntime, Observation] | None] = {}
    groups: dict[tuple[str, str], list[DeploymentRecord]] = {}
    for record in records:
        groups.setdefault((runtime_of(record), record.host_id), []).append(record)
    for (kind, host_id), group in groups.items():
        try:
            runtime = service.runtime(kind, host_id)
            found = runtime.observe([handle_of(r) for r in group])
        except AnvylError:
            seen.update({r.id: None for r in group})  # unreachable: reported as such
            continue
        seen.update({r.id: (runtime, o) for r, o in zip(group, found, strict=True)})

    def one(record: DeploymentRecord) -> DeploymentView:
        return _view(service, record, seen.get(record.id))

    if len(records) <= 1:
        return [one(r) for r in records]
    with ThreadPoolExecutor(max_workers=min(MAX_PROBES, len(records))) as pool:
        return list(pool.map(one, records))


def _view(
    service: Deployments,
    record: DeploymentRecord,
    looked: tuple[DeploymentRuntime, Observation] | None,
) -> DeploymentView:
    """The live state of one deployment (the runtime's, then the server's own health)."""
    view = service.view(record)
    if looked is None:
        return replace(view, state="unknown", state_reason="host unreachable")
    runtime, seen = looked
    if seen.status == STATUS_GONE:
        if record.state == table.STATE_CREATING:
            return view
        return replace(view, state=table.STATE_VANISHED, state_reason=seen.reason)
    view = replace(view, container_name=seen.name or record.name)
    if seen.status != STATUS_RUNNING:
        state = "restarting" if seen.status == STATUS_RESTARTING else table.STATE_EXITED
        return replace(view, state=state, state_reason=seen.reason)
    if seen.ready is not None:
        return _probed_view(record, view, seen)
    health, metrics = probe(service.probe_base(record), service.keys.read(record.id))
    if health == 200:
        state, reason = table.STATE_READY, seen.reason
    elif health == 503 or record.state != table.STATE_READY:
        state, reason = table.STATE_STARTING, "loading the model"
    else:
        state = table.STATE_UNHEALTHY
        reason = "health check failed" if health else "the server does not answer"
    since = record.ready_at or record.created_at
    generated = int(metrics.get("anvyl_generated_tokens_total", 0))
    return replace(
        view,
        state=state,
        state_reason=reason,
        uptime_s=max(0.0, time.time() - since) if since else 0.0,
        memory_used_bytes=int(metrics.get("process_resident_memory_bytes", 0))
        or runtime.memory_used(handle_of(record)),
        requests_total=int(metrics.get("anvyl_requests_total", 0)),
        generated_tokens_total=generated,
        tokens_per_second=service.throughput.rate(record.id, generated, metrics),
    )


def _probed_view(
    record: DeploymentRecord, view: DeploymentView, seen: Observation
) -> DeploymentView:
    """A deployment whose runtime probed its replicas, each where it runs (Swarm)."""
    assert seen.ready is not None
    serving = seen.ready > 0 or seen.ready >= seen.wanted
    if serving:
        state = table.STATE_READY
    elif record.state == table.STATE_CREATING:
        state = record.state
    else:
        state = table.STATE_STARTING if record.state != table.STATE_READY else "unhealthy"
    since = record.ready_at or record.created_at
    return replace(
        view,
        state=state,
        state_reason="" if state == table.STATE_CREATING else seen.reason,
        url=f"http://{seen.host}:{record.port}" if seen.host else view.url,
        container_name=record.name,
        uptime_s=max(0.0, time.time() - since) if since and seen.ready else 0.0,
        replicas=seen.replicas,
    )
