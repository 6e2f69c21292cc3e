"""Reconcile: make the store agree with the runtimes. The only read of runtimes that writes.

`anvyl serve` runs it at start-up and every `RECONCILE_PERIOD_S` seconds. It adopts servers
this installation started that the store forgot (a lost database, or a server killed between
starting a model and recording its handle), forgets starts that died before anything ran,
marks detached starts ready once they answer (and hands their runtime the restart policy),
and lets runtimes do their housekeeping (log rotation).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from anvyl.errors import AlreadyExists, AnvylError
from anvyl.runtime.base import KIND_CONTAINER, DeploymentRuntime, Orphan
from anvyl.services.deployments.probe import healthy
from anvyl.services.deployments.views import handle_of, runtime_of
from anvyl.store import deployments as table
from anvyl.store.deployments import DeploymentRecord

if TYPE_CHECKING:
    from anvyl.services.hosts import Hosts
    from anvyl.store import Store

log = logging.getLogger(__name__)

RECONCILE_PERIOD_S = 5.0


class Deployments(Protocol):
    """What reconciling needs of the deployment service (`services.deployments.service`)."""

    store: Store
    hosts: Hosts
    controller_id: str
    starting: set[str]
    where: dict[str, Callable[[], list[str]]]

    def runtime(self, kind: str, host_id: str) -> DeploymentRuntime: ...

    def probe_base(self, record: DeploymentRecord) -> str: ...

    def forget(self, record: DeploymentRecord) -> None: ...


def reconcile(service: Deployments) -> list[DeploymentRecord]:
    """One pass over every runtime; returns the deployments after it."""
    for kind, host_id in _places(service):
        try:
            runtime = service.runtime(kind, host_id)
            orphans = runtime.orphans(service.controller_id)
        except AnvylError:
            continue  # unreachable: keep the rows as they are, report them as such
        _adopt(service, runtime, host_id, orphans)
        _drop_dead_starts(service, kind, host_id, {o.deployment_id for o in orphans})
        mine = [
            r
            for r in table.list_deployments(service.store)
            if runtime_of(r) == kind and r.host_id == host_id and r.container_id
        ]
        _mark_ready(service, runtime, mine)
        runtime.maintain([handle_of(r) for r in mine])
    return table.list_deployments(service.store)


def _places(service: Deployments) -> list[tuple[str, str]]:
    """(runtime, host) pairs to look at: wherever each runtime may run servers of this
    installation (containers on every engine, processes here, services on a Swarm manager),
    and wherever a deployment says it runs."""
    places = set()
    for kind, where in service.where.items():
        try:
            places |= {(kind, host_id) for host_id in where()}
        except AnvylError as exc:
            log.warning("cannot tell where the %s runtime runs: %s", kind, exc)
    places |= {(runtime_of(r), r.host_id) for r in table.list_deployments(service.store)}
    return sorted(places)


def _adopt(
    service: Deployments, runtime: DeploymentRuntime, host_id: str, orphans: list[Orphan]
) -> None:
    records = table.list_deployments(service.store)
    by_ref = {r.container_id for r in records if r.container_id}
    for orphan in orphans:
        if orphan.handle.ref in by_ref:
            continue
        known = (
            table.get_deployment(service.store, orphan.deployment_id)
            if orphan.deployment_id
            else None
        )
        options = dict(known.options) if known is not None else {"adopted": True, **orphan.options}
        if runtime.kind != KIND_CONTAINER:
            options["runtime"] = runtime.kind
        if orphan.handle.data:
            options["handle"] = {k: v for k, v in orphan.handle.data.items() if k != "restart"}
        if known is not None and not known.container_id:
            # The server died between starting it and recording its handle.
            table.update_deployment(
                service.store, known.id, container_id=orphan.handle.ref, options=options
            )
        elif known is None:
            record = DeploymentRecord(
                id=orphan.deployment_id or table.new_deployment_id(),
                name=orphan.name,
                model_id=orphan.model_id,
                host_id=host_id,
                port=orphan.port,
                bind=orphan.bind,
                image=orphan.image,
                container_id=orphan.handle.ref,
                state=table.STATE_STARTING,
                options=options,
            )
            try:
                table.insert_deployment(service.store, record)
                log.info("adopted %s %s as deployment %s", runtime.kind, orphan.name, record.id)
            except AlreadyExists:
                log.warning("cannot adopt %s: its name or port is taken", orphan.handle.ref)
                continue
            try:
                runtime.adopted(orphan)
            except AnvylError as exc:
                log.warning("adopting %s: %s", orphan.name, exc)


def _drop_dead_starts(service: Deployments, kind: str, host_id: str, running: set[str]) -> None:
    """Forget `creating` rows of starts that died before their server was made."""
    for record in table.list_deployments(service.store):
        if (
            record.host_id == host_id
            and runtime_of(record) == kind
            and record.state == table.STATE_CREATING
            and not record.container_id
            and record.id not in service.starting
            and record.id not in running
        ):
            log.warning("forgetting deployment %s: its start never made a server", record.id)
            service.forget(record)


def _mark_ready(
    service: Deployments, runtime: DeploymentRuntime, records: list[DeploymentRecord]
) -> None:
    """Detached or adopted starts that answer now: ready, with their restart policy."""
    for record in records:
        if record.state == table.STATE_READY or record.id in service.starting:
            continue
        if runtime.capabilities().probes:  # replicas, each probed where it runs
            seen = runtime.observe([handle_of(record)])[0]
            if seen.ready is None or seen.ready < seen.wanted:
                continue
        elif not healthy(service.probe_base(record)):
            continue
        try:
            runtime.apply_restart(handle_of(record), str(record.options.get("restart") or ""))
        except AnvylError as exc:
            log.warning("could not apply the restart policy of %s: %s", record.name, exc)
            continue
        table.update_deployment(
            service.store, record.id, state=table.STATE_READY, ready_at=time.time()
        )
