"""Host operations: the registered engines, their live status and their resource usage."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anvyl import config
from anvyl.errors import FailedPrecondition, InvalidArgument, NotFound, RuntimeUnavailable
from anvyl.runtime import DockerDriver, Engines, StatsSample, docker_host_from_env
from anvyl.runtime.base import KIND_CONTAINER
from anvyl.store import HostRecord, Store
from anvyl.store import hosts as host_table

MANAGED_SELECTOR = f"{config.LABEL_MANAGED}=true"
METRICS_WINDOW_S = 0.5


@dataclass(frozen=True)
class HostView:
    """A host with its engine's live status."""

    id: str
    name: str
    address: str
    local: bool
    created_at: float
    reachable: bool
    status_reason: str = ""
    cpus: int = 0
    memory_bytes: int = 0
    engine_version: str = ""
    running_containers: int = 0
    # The runtime `model start` uses there by default: container or process.
    runtime: str = KIND_CONTAINER


@dataclass(frozen=True)
class ContainerUsage:
    """CPU (percent of one CPU) and memory of one running Anvyl container."""

    id: str
    name: str
    cpu_percent: float
    memory_used_bytes: int
    memory_limit_bytes: int
    deployment: str = ""
    task_id: str = ""
    state: str = ""


@dataclass(frozen=True)
class HostMetrics:
    """Machine-wide usage plus per-container usage of Anvyl's containers.

    For a Swarm node, `node` holds what the manager knows of it (a `services.cluster.
    NodeMetrics`); the machine figures are only measured for the server's own machine
    (`machine_measured`), and `container_stats` says whether the node's engine gave figures.
    """

    host_id: str
    cpu_count: int
    cpu_percent: float
    memory_used_bytes: int
    memory_total_bytes: int
    disk_path: str
    disk_used_bytes: int
    disk_total_bytes: int
    load1: float
    load5: float
    load15: float
    containers: tuple[ContainerUsage, ...] = ()
    node: Any = None
    machine_measured: bool = True
    container_stats: bool = True
    container_stats_reason: str = ""


class Hosts:
    """The registered hosts and their engines."""

    def __init__(
        self,
        store: Store,
        engines: Engines,
        *,
        metrics_window: float = METRICS_WINDOW_S,
        default_runtime: str = KIND_CONTAINER,
    ) -> None:
        self.store = store
        self.engines = engines
        self.metrics_window = metrics_window
        self.default_runtime = default_runtime

    def register_local(self, driver: DockerDriver | None = None) -> HostRecord:
        """Register this machine's engine (stable id across restarts) and hold its driver."""
        driver = driver or DockerDriver(docker_host_from_env())
        record = host_table.ensure_local_host(self.store, address=driver.base_url)
        self.engines.register(record.id, driver)
        return record

    def records(self) -> list[HostRecord]:
        """Every registered host (no engine calls)."""
        return host_table.list_hosts(self.store)

    def local(self) -> HostRecord | None:
        """This machine's host record (None before `register_local`)."""
        return next((h for h in self.records() if h.local), None)

    def resolve(self, ref: str) -> HostRecord:
        """A host by exact id, name or unique id prefix."""
        ref = ref.strip()
        if not ref:
            raise InvalidArgument("a host id is required")
        hosts = self.records()
        for host in hosts:
            if ref in (host.id, host.name):
                return host
        matches = [h for h in hosts if h.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            names = ", ".join(f"{h.id} ({h.name})" for h in matches)
            raise InvalidArgument(f"host id prefix {ref!r} is ambiguous; it matches {names}")
        known = ", ".join(h.id for h in hosts) or "none"
        raise NotFound(f"no host with id or name {ref!r} (known hosts: {known})")

    def targets(self, ref: str = "") -> list[HostRecord]:
        """The hosts an operation applies to: one when `ref` is given, else all of them."""
        return [self.resolve(ref)] if ref.strip() else self.records()

    def driver(self, host_id: str) -> DockerDriver:
        """The engine driver of a host."""
        return self.engines.driver(host_id)

    def list_hosts(self) -> list[HostView]:
        """Every host with its live status; engines are probed in parallel."""
        records = self.records()
        if len(records) <= 1:
            return [self._view(r) for r in records]
        with ThreadPoolExecutor(max_workers=min(8, len(records))) as pool:
            return list(pool.map(self._view, records))

    def get_host(self, ref: str) -> HostView:
        """One host with its live status."""
        return self._view(self.resolve(ref))

    def _view(self, record: HostRecord) -> HostView:
        base = {
            "id": record.id,
            "name": record.name,
            "address": record.address,
            "local": record.local,
            "created_at": record.created_at,
            "runtime": self.default_runtime if record.local else KIND_CONTAINER,
        }
        try:
            driver = self.driver(record.id)
            info = driver.engine_info()
            running = driver.list_containers(labels=[MANAGED_SELECTOR])
        except (RuntimeUnavailable, NotFound) as exc:
            return HostView(**base, reachable=False, status_reason=exc.message)
        return HostView(
            **base,
            reachable=True,
            cpus=info.cpus,
            memory_bytes=info.memory_bytes,
            engine_version=info.version,
            running_containers=len(running),
        )

    def metrics(self, ref: str, *, sleep: Callable[[float], None] = time.sleep) -> HostMetrics:
        """Machine usage (psutil) and Anvyl containers' usage (Docker stats) over a short window."""
        import psutil

        record = self.resolve(ref)
        if not record.local:
            raise FailedPrecondition(
                f"machine metrics are only available for the local host, not {record.id}"
            )
        driver = self.driver(record.id)
        cpu: list[Any] = []
        usages = container_usage(
            driver, self.metrics_window, sleep, around=lambda: cpu.append(psutil.cpu_times())
        )
        cpu_before, cpu_after = cpu

        memory = psutil.virtual_memory()
        disk_path = str(_existing(config.anvyl_home()))
        disk = psutil.disk_usage(disk_path)
        load1, load5, load15 = os.getloadavg()
        return HostMetrics(
            host_id=record.id,
            cpu_count=psutil.cpu_count() or 0,
            cpu_percent=_busy_percent(cpu_before, cpu_after),
            memory_used_bytes=int(memory.total - memory.available),
            memory_total_bytes=int(memory.total),
            disk_path=disk_path,
            disk_used_bytes=int(disk.used),
            disk_total_bytes=int(disk.total),
            load1=load1,
            load5=load5,
            load15=load15,
            containers=usages,
        )


def container_usage(
    driver: DockerDriver,
    window: float = METRICS_WINDOW_S,
    sleep: Callable[[float], None] = time.sleep,
    *,
    around: Callable[[], None] | None = None,
) -> tuple[ContainerUsage, ...]:
    """CPU and memory of the engine's running Anvyl containers over `window` seconds.

    `around` runs just before the first and just after the second sample (the machine's own
    CPU counters are read there, over the same window).
    """
    running = driver.list_containers(labels=[MANAGED_SELECTOR])
    ids = [c.id for c in running]
    if around is not None:
        around()
    before = driver.sample_stats(ids)
    sleep(window)
    if around is not None:
        around()
    after = driver.sample_stats(ids)
    return tuple(
        _usage(c.id, c.name, before.get(c.id), after[c.id]) for c in running if c.id in after
    )


def _existing(path: Path) -> Path:
    """`path`, or its nearest existing parent (disk usage needs a path that exists)."""
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _busy_percent(before: Any, after: Any) -> float:
    """Percent of CPU time not idle between two `psutil.cpu_times()` samples."""
    total = sum(after) - sum(before)
    idle_after = after.idle + getattr(after, "iowait", 0.0)
    idle_before = before.idle + getattr(before, "iowait", 0.0)
    if total <= 0:
        return 0.0
    busy = total - (idle_after - idle_before)
    return round(max(0.0, min(100.0, 100.0 * busy / total)), 1)


def _usage(cid: str, name: str, before: StatsSample | None, after: StatsSample) -> ContainerUsage:
    """CPU percent of one CPU between two samples, as `docker stats` computes it."""
    cpu_percent = 0.0
    if before is not None:
        cpu_delta = after.cpu_total_ns - before.cpu_total_ns
        system_delta = after.system_cpu_ns - before.system_cpu_ns
        if cpu_delta > 0 and system_delta > 0:
            cpu_percent = round(100.0 * cpu_delta / system_delta * after.online_cpus, 1)
    return ContainerUsage(
        id=cid,
        name=name,
        cpu_percent=cpu_percent,
        memory_used_bytes=after.memory_used_bytes,
        memory_limit_bytes=after.memory_limit_bytes,
    )
