"""The deployment service driving a runtime with replicas (the Swarm's shape) through a fake.

The service does not know it holds the Swarm: it reads the runtime's capabilities (replicas,
its own probes, a required key, a fixed bind, `--host-id` as a node) and its observations.
The real Swarm runtime is tested in `tests/swarm/` against a lab of real engines.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import free_port

from anvyl.errors import FailedPrecondition
from anvyl.runtime import Engines
from anvyl.runtime.base import (
    STATUS_GONE,
    STATUS_RUNNING,
    Capabilities,
    DeploymentRuntime,
    Handle,
    LaunchSpec,
    LogStream,
    Observation,
    Orphan,
    Route,
)
from anvyl.services.deployments.options import StartOptions
from anvyl.services.deployments.service import Deployments
from anvyl.services.hosts import Hosts
from anvyl.store import Store
from anvyl.store.secrets import ApiKeys

MODEL_ID = "smollm2-135m-instruct-mlx"
REPLICAS = Capabilities(
    kind="swarm", replicas=True, api_key_required=True, bind="0.0.0.0", nodes=True, probes=True
)


class ReplicaRuntime(DeploymentRuntime):
    """Services of replicas that become ready one per look (unless a test holds them)."""

    kind = "swarm"

    def __init__(self, caps: Capabilities = REPLICAS, failure: str = "") -> None:
        self.caps, self.failure = caps, failure
        self.kind = caps.kind
        self.services: dict[str, dict[str, Any]] = {}
        self.launches: list[LaunchSpec] = []
        self.discarded: list[str] = []
        self.adopted_ids: list[str] = []
        self.found: list[Orphan] = []

    def capabilities(self) -> Capabilities:
        return self.caps

    def prepare(self, say: Callable[[str], None]) -> str:
        return "fake:1"

    def check_free(self, name: str, bind: str, port: int) -> None:
        pass

    def place(self, launch: LaunchSpec, say: Callable[[str, str], None]) -> dict[str, Any]:
        say("copying", f"the model on {launch.replicas} node(s)")
        return {"replicas": launch.replicas, "node": launch.node}

    def start(self, launch: LaunchSpec) -> Handle:
        self.launches.append(launch)
        ref = f"svc-{launch.deployment_id}"
        self.services[ref] = {"wanted": launch.replicas, "ready": 0, "grow": not self.failure}
        return Handle(ref=ref)

    def observe(self, handles: list[Handle]) -> list[Observation]:
        seen = []
        for handle in handles:
            svc = self.services.get(handle.ref)
            if svc is None:
                seen.append(Observation(STATUS_GONE, "the service was removed"))
                continue
            if svc["grow"]:
                svc["ready"] = min(svc["wanted"], svc["ready"] + 1)
            ready, wanted = svc["ready"], svc["wanted"]
            seen.append(
                Observation(
                    STATUS_RUNNING,
                    f"{ready}/{wanted} replicas ready" if ready < wanted else "",
                    ready=ready,
                    wanted=wanted,
                    host="127.0.0.2" if ready else "",
                    replicas=tuple(range(wanted)),
                    failure=self.failure,
                )
            )
        return seen

    def log_tail(self, handle: Handle, lines: int = 20) -> str:
        return ""

    def logs(self, handle: Handle, *, follow: bool, tail: int | None) -> LogStream:
        raise NotImplementedError

    def apply_restart(self, handle: Handle, restart: str) -> None:
        pass

    def reach(self, handle: Handle) -> str:
        return "127.0.0.2"

    def routes(self, handles: list[Handle]) -> list[list[Route]] | None:
        return [
            [
                Route(key=f"t{i}", host="127.0.0.2", where=f"node-{i}")
                for i in range(self.services[h.ref]["ready"])
            ]
            for h in handles
        ]

    def scale(self, handle: Handle, replicas: int) -> None:
        self.services[handle.ref]["wanted"] = replicas

    def stop(self, handle: Handle, timeout: float) -> None:
        self.services.pop(handle.ref)

    def discard(self, deployment_id: str) -> None:
        self.discarded.append(deployment_id)
        self.services.pop(f"svc-{deployment_id}", None)

    def orphans(self, controller_id: str) -> list[Orphan]:
        return self.found

    def adopted(self, orphan: Orphan) -> None:
        self.adopted_ids.append(orphan.deployment_id)


def service(store: Store, home: Path, fake: ReplicaRuntime) -> Deployments:
    runtimes = {"container": lambda _h: fake, fake.kind: lambda _h: fake}
    return Deployments(store, Hosts(store, Engines()), home=home, runtimes=runtimes)


def test_a_replicated_start_waits_for_every_replica(store: Store, home: Path) -> None:
    fake = ReplicaRuntime()
    deployments = service(store, home, fake)
    phases: list[str] = []
    port = free_port()
    view = deployments.start(
        StartOptions(MODEL_ID, name="duo", port=port, replicas=2, host_id="node-b"),
        lambda phase, _m: phases.append(phase),
    )
    assert (view.state, view.state_reason, view.runtime) == ("ready", "", "swarm")
    assert view.url == f"http://127.0.0.2:{port}" and len(view.replicas) == 2
    assert "copying" in phases and phases[-1] == "ready"
    (launch,) = fake.launches
    assert (launch.node, launch.replicas, launch.bind) == ("node-b", 2, "0.0.0.0")
    assert launch.api_key_generated and launch.placement == {"replicas": 2, "node": "node-b"}
    record = view.record
    assert record.bind == "0.0.0.0" and record.container_id == f"svc-{record.id}"
    assert record.options["replicas"] == 2 and record.options["node"] == "node-b"
    assert record.options["api_key"] is True and record.options["api_key_generated"] is True
    key = ApiKeys(home).read(record.id)
    assert key and Path(launch.api_key_file).read_text().strip() == key
    deployments.stop("duo", timeout=1)
    assert deployments.list() == [] and not fake.services


def test_ps_endpoint_and_gateway_follow_the_replicas(store: Store, home: Path) -> None:
    fake = ReplicaRuntime()
    deployments = service(store, home, fake)
    port = free_port()
    view = deployments.start(StartOptions(MODEL_ID, name="duo", port=port, replicas=2))
    svc = fake.services[view.record.container_id]
    svc.update(ready=1, grow=False)
    (listed,) = deployments.list()
    assert (listed.state, listed.state_reason) == ("ready", "1/2 replicas ready")
    assert deployments.endpoint(view.record).base_url == f"http://127.0.0.2:{port}"
    (target,) = deployments.targets()
    assert target.key == f"{view.record.id}/t0" and target.deployment == "duo@node-0"
    assert target.base_url == f"http://127.0.0.2:{port}"
    assert target.client_key == "" and target.upstream_key == ApiKeys(home).read(view.record.id)
    svc["ready"] = 0
    (listed,) = deployments.list()
    assert (listed.state, listed.state_reason) == ("unhealthy", "0/2 replicas ready")
    deployments.scale("duo", 3)
    assert svc["wanted"] == 3
    deployments.stop("duo", timeout=1)


def test_only_a_runtime_with_replicas_scales(store: Store, home: Path) -> None:
    fake = ReplicaRuntime(Capabilities(kind="container"))
    deployments = service(store, home, fake)
    deployments.start(StartOptions(MODEL_ID, name="one", port=free_port(), detach=True))
    with pytest.raises(FailedPrecondition, match="only Swarm deployments scale"):
        deployments.scale("one", 2)
    deployments.stop("one", timeout=1)


def test_a_start_that_will_never_run_fails_with_the_runtime_s_reason(
    store: Store, home: Path
) -> None:
    fake = ReplicaRuntime(failure="the Swarm cannot place duo: no suitable node")
    deployments = service(store, home, fake)
    with pytest.raises(FailedPrecondition, match="cannot place duo: no suitable node"):
        deployments.start(StartOptions(MODEL_ID, name="duo", port=free_port(), replicas=2))
    (deployment_id,) = fake.discarded
    assert deployments.list() == [] and not fake.services
    assert not ApiKeys(home).read(deployment_id)


def test_reconcile_adopts_a_service_with_what_it_says(store: Store, home: Path) -> None:
    fake = ReplicaRuntime()
    deployments = service(store, home, fake)
    local = deployments.local_host().id
    deployments.where[fake.kind] = lambda: [local]
    port = free_port()
    fake.services["svc-x"] = {"wanted": 2, "ready": 2, "grow": False}
    options = {"runtime": "swarm", "replicas": 2, "api_key": True, "node_id": "n-9"}
    fake.found = [
        Orphan("d-kept", Handle("svc-x"), "kept", MODEL_ID, port, "0.0.0.0", options=options)
    ]
    deployments.reconcile()
    record = deployments.find("kept")
    assert (record.id, record.container_id, record.state) == ("d-kept", "svc-x", "ready")
    assert record.options == {**options, "adopted": True}
    assert fake.adopted_ids == ["d-kept"]
    deployments.reconcile()  # known now: not adopted twice
    assert fake.adopted_ids == ["d-kept"]
