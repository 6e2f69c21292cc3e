"""The keep-alive clock's idle decision over a deployment's servers (several Swarm replicas, or
the one server of a container or process): plain data, and a fake runtime listing replicas."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from anvyl.errors import RuntimeUnavailable
from anvyl.runtime.base import KIND_PROCESS, KIND_SWARM, Handle, Route
from anvyl.services.deployments.targets import server_bases
from anvyl.services.ondemand import idle
from anvyl.services.ondemand.idle import IdleClock, largest_memory, servers_used
from anvyl.store import Store, profiles
from anvyl.store import deployments as table
from anvyl.store import hosts as host_table

GIB = 1 << 30
IDLE = {"anvyl_requests_total": 7.0, "anvyl_active_sequences": 0.0, "anvyl_queue_depth": 0.0}


def replicas(**changes: dict[str, float]) -> dict[str, dict[str, float]]:
    """Three replicas, each as idle as before, but for `changes`."""
    seen = {key: dict(IDLE) for key in ("task-a", "task-b", "task-c")}
    for key, metrics in changes.items():
        seen.setdefault(key.replace("_", "-"), dict(IDLE)).update(metrics)
    return seen


BEFORE = {"task-a": 7.0, "task-b": 7.0, "task-c": 7.0}


def test_no_replica_changed_and_none_busy_is_idle() -> None:
    assert not servers_used(BEFORE, replicas())


def test_the_first_look_counts_as_use() -> None:
    assert servers_used(None, replicas())


@pytest.mark.parametrize(
    "change",
    [
        {"task_b": {"anvyl_requests_total": 8.0}},  # one replica served a request
        {"task_c": {"anvyl_active_sequences": 1.0}},  # one is generating now
        {"task_a": {"anvyl_queue_depth": 2.0}},  # one has requests queued
        {"task_c": {"anvyl_requests_total": 0.0}},  # restarted: its counter went back
        {"task_d": {"anvyl_requests_total": 3.0}},  # a replica not seen before has served
    ],
)
def test_any_replica_s_change_or_busy_gauge_is_use(change: dict[str, dict[str, float]]) -> None:
    assert servers_used(BEFORE, replicas(**change))


def test_a_new_replica_that_has_not_served_and_a_gone_one_are_not_use() -> None:
    seen = replicas(task_d={"anvyl_requests_total": 0.0})
    del seen["task-a"]
    assert not servers_used(BEFORE, seen)


def test_the_peak_is_the_largest_replica() -> None:
    seen = replicas(
        task_a={"process_resident_memory_bytes": 1.5 * GIB},
        task_b={"process_resident_memory_bytes": 2 * GIB},
    )
    assert largest_memory(seen) == 2 * GIB
    assert largest_memory({}) == 0


# -- the clock over a fake runtime ----------------------------------------------------------


@dataclass
class FakeRuntime:
    """Routes like a Swarm's (one per running task), or None like a single-server runtime."""

    listed: list[Route] | None

    def routes(self, handles: list[Handle]) -> list[list[Route]] | None:
        return None if self.listed is None else [list(self.listed) for _ in handles]


class FakeKeys:
    def read(self, deployment_id: str) -> str:
        return "secret"


@dataclass
class FakeService:
    store: Store
    runtimes: dict[str, FakeRuntime]
    keys: FakeKeys = field(default_factory=FakeKeys)

    def runtime(self, kind: str, host_id: str) -> FakeRuntime:
        if kind not in self.runtimes:
            raise RuntimeUnavailable(f"no {kind} engine")
        return self.runtimes[kind]

    def probe_base(self, record: table.DeploymentRecord) -> str:
        return f"http://row:{record.port}"


@dataclass
class FakeDemand:
    """The bookkeeping the clock drives (`OnDemand`'s): who was touched, what unloads."""

    deployments: FakeService
    touched: list[str] = field(default_factory=list)
    unloading: list[str] = field(default_factory=list)

    def keep_alive_of(self, record: table.DeploymentRecord) -> float:
        return float(record.options["keep_alive"])

    def touch(self, model_id: str) -> None:
        self.touched.append(model_id)

    def unload_at(self, record: table.DeploymentRecord) -> float:
        return 0.0 if self.touched else record.ready_at + self.keep_alive_of(record)

    def try_unload(self, record: table.DeploymentRecord, why: str, *, now: float) -> bool:
        self.unloading.append(record.name)
        return True


def deploy(store: Store, kind: str, name: str) -> table.DeploymentRecord:
    host = host_table.list_hosts(store)[0]
    record = table.DeploymentRecord(
        id=f"id-{name}",
        name=name,
        model_id=f"model-{name}",
        host_id=host.id,
        port=9000 + len(table.list_deployments(store)),
        bind="0.0.0.0",
        image="",
        container_id=f"ref-{name}",
        state=table.STATE_READY,
        options={"runtime": kind, "keep_alive": 2.0, "on_demand": True},
        ready_at=100.0,
    )
    return table.insert_deployment(store, record)


TASKS = [Route("task-a", "10.0.0.1", "node-1"), Route("task-b", "10.0.0.2", "node-2")]


def test_server_bases_are_every_replica_or_the_row_s_address(store: Store) -> None:
    swarm, process = deploy(store, KIND_SWARM, "two"), deploy(store, KIND_PROCESS, "one")
    service = FakeService(store, {KIND_SWARM: FakeRuntime(TASKS), KIND_PROCESS: FakeRuntime(None)})
    assert server_bases(service, swarm) == {
        "task-a": f"http://10.0.0.1:{swarm.port}",
        "task-b": f"http://10.0.0.2:{swarm.port}",
    }
    assert server_bases(service, process) == {process.id: f"http://row:{process.port}"}
    assert server_bases(FakeService(store, {}), swarm) == {swarm.id: f"http://row:{swarm.port}"}


def test_the_clock_reads_every_replica(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Idle on both replicas: unloads once due; one replica's request holds it; the peak is
    the largest replica's; a replica that does not answer is left out."""
    record = deploy(store, KIND_SWARM, "two")
    metrics = {
        f"http://10.0.0.1:{record.port}": {**IDLE, "process_resident_memory_bytes": GIB},
        f"http://10.0.0.2:{record.port}": {**IDLE, "process_resident_memory_bytes": 3 * GIB},
    }
    probed: list[tuple[str, str]] = []

    def probe(base: str, key: str) -> tuple[int, dict[str, float]]:
        probed.append((base, key))
        return (200, dict(metrics[base])) if base in metrics else (0, {})

    monkeypatch.setattr(idle, "probe", probe)
    demand = FakeDemand(FakeService(store, {KIND_SWARM: FakeRuntime(TASKS)}))
    clock = IdleClock(demand)  # type: ignore[arg-type]

    assert clock.tick(now=101.0) == []  # the first look is use
    assert demand.touched == [record.model_id]
    assert sorted(probed) == sorted((base, "secret") for base in metrics)
    assert profiles.get_profile(store, record.model_id).peak_memory == 3 * GIB

    demand.touched.clear()
    metrics[f"http://10.0.0.2:{record.port}"]["anvyl_requests_total"] += 1
    assert clock.tick(now=101.0) == [] and demand.touched == [record.model_id]

    demand.touched.clear()
    del metrics[f"http://10.0.0.1:{record.port}"]  # not answering now: judged on the other
    assert clock.tick(now=110.0) == ["two"] and demand.touched == []
    assert demand.unloading == ["two"]
