"""The operation layer: what Anvyl can do, as plain Python over the store and the runtime.

The gRPC servicers (and later the web dashboard) are thin adapters over these classes; results
are frozen dataclasses and failures are `anvyl.errors`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from anvyl.runtime import Engines
from anvyl.runtime.base import KIND_CONTAINER
from anvyl.services.containers import Containers, parse_label_selector
from anvyl.services.deployments.service import StepHook
from anvyl.services.hosts import ContainerUsage, HostMetrics, Hosts, HostView
from anvyl.services.models import Models
from anvyl.services.ondemand import DemandPolicy, OnDemand
from anvyl.store import Store


@dataclass(frozen=True)
class Services:
    """Every service, wired to one store and one set of engines."""

    store: Store
    engines: Engines
    hosts: Hosts
    containers: Containers
    models: Models
    ondemand: OnDemand


def build_services(
    store: Store,
    engines: Engines,
    *,
    home: Path | None = None,
    container_labels: dict[str, str] | None = None,
    default_runtime: str = KIND_CONTAINER,
    step_hook: StepHook | None = None,
    demand: DemandPolicy | None = None,
    generate_keys: bool = False,
) -> Services:
    """Wire the services together (`default_runtime`: what `model start` uses by default;
    `demand`: how models load on demand; `generate_keys`: on-demand deployments get an API
    key only Anvyl holds)."""
    hosts = Hosts(store, engines, default_runtime=default_runtime)
    models = Models(
        store,
        hosts,
        home=home,
        container_labels=container_labels,
        default_runtime=default_runtime,
        step_hook=step_hook,
    )
    return Services(
        store=store,
        engines=engines,
        hosts=hosts,
        containers=Containers(hosts),
        models=models,
        ondemand=OnDemand(models, demand or DemandPolicy(), generate_keys=generate_keys),
    )


__all__ = [
    "ContainerUsage",
    "Containers",
    "HostMetrics",
    "HostView",
    "Hosts",
    "Models",
    "OnDemand",
    "Services",
    "build_services",
    "parse_label_selector",
]
