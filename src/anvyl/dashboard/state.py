"""What the dashboard's routes share: its state, blocking calls off the loop, sampled views."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request

from anvyl.dashboard.history import Sampler
from anvyl.dashboard.jobs import StartJobs
from anvyl.dashboard.protocol import deployment_json, health_json, host_json
from anvyl.errors import AnvylError
from anvyl.services import HostMetrics, Services

STATIC_DIR = Path(__file__).parent / "static"


@dataclass
class DashboardState:
    """What the routes share: the services, the sampler, the start jobs, the token."""

    services: Services
    sampler: Sampler
    jobs: StartJobs
    token: str | None
    closing: threading.Event


def state_of(request: Request) -> DashboardState:
    """The dashboard state on `app.state` (and a sign of use: the sampler keeps sampling)."""
    dash: DashboardState = request.app.state.dashboard
    dash.sampler.touch()
    return dash


async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking service call off the event loop."""
    return await asyncio.to_thread(fn, *args, **kwargs)


def snapshot_json(dash: DashboardState) -> dict[str, Any]:
    """The latest sample of every deployment, with chart points and health history."""
    snap = dash.sampler.snapshot
    history = dash.sampler.history
    deployments = []
    for view in snap.views:
        item = deployment_json(view, history.samples(view.record.id))
        item["health"] = health_json(history.health(view.record.id))
        item["on_demand"] = bool(view.record.options.get("on_demand"))
        item["keep_alive_seconds"] = dash.services.ondemand.keep_alive_of(view.record)
        item["unload_at"] = dash.services.ondemand.unload_at(view.record)
        deployments.append(item)
    return {
        "version": snap.version,
        "taken_at": snap.taken_at,
        "interval": dash.sampler.interval,
        "error": snap.error,
        "deployments": deployments,
    }


def collect_hosts(dash: DashboardState) -> list[dict[str, Any]]:
    """Every host with its live status, its usage (local hosts) and the models on it."""
    hosts = dash.services.hosts.list_hosts()
    by_host: dict[str, set[str]] = {}
    for view in dash.sampler.snapshot.views:
        # A Swarm deployment is on the nodes its replicas run on; a container on its host.
        nodes = {r.node_id for r in view.replicas if r.node_id} or {view.record.host_id}
        for node in nodes:
            by_host.setdefault(node, set()).add(view.record.name)
    result = []
    for host in hosts:
        metrics: HostMetrics | None = None
        if host.reachable and host.local:
            try:
                metrics = dash.services.hosts.metrics(host.id)
            except AnvylError:
                metrics = None
        result.append(host_json(host, metrics, sorted(by_host.get(host.id, ()))))
    return result
