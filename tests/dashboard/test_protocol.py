"""The dashboard's JSON views of service results (pure functions)."""

from __future__ import annotations

from anvyl.dashboard.protocol import deployment_json
from anvyl.runtime.swarm import ReplicaView
from anvyl.services.models import DeploymentView
from anvyl.store.deployments import DeploymentRecord

RECORD = DeploymentRecord(
    id="d1", name="chat", model_id="m", host_id="h1", port=1234, bind="127.0.0.1", image="img"
)


def test_a_container_deployment_has_no_replicas() -> None:
    data = deployment_json(DeploymentView(RECORD, "ready", "", "http://localhost:1234"))
    assert data["replicas"] == []
    assert "series" not in data


def test_swarm_replicas_say_where_and_how_each_runs() -> None:
    replicas = (
        ReplicaView(1, "t1", "n1", "node-a", "10.0.0.2", "running", 100.0, 0, ready=True),
        ReplicaView(2, "t2", "n2", "node-b", "10.0.0.3", "starting", 120.0, 2, error="oom"),
    )
    view = DeploymentView(RECORD, "ready", "", "http://10.0.0.2:1234", replicas=replicas)
    data = deployment_json(view, samples=[])
    assert [(r["slot"], r["node"], r["address"], r["ready"]) for r in data["replicas"]] == [
        (1, "node-a", "10.0.0.2", True),
        (2, "node-b", "10.0.0.3", False),
    ]
    assert (
        data["replicas"][1] | {"restarts": 2, "error": "oom", "state": "starting"}
        == (data["replicas"][1])
    )
    assert data["series"] == {"t": [], "tokens_per_second": [], "requests_per_minute": []}
