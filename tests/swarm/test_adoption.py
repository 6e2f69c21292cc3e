"""A service's store row rebuilt from its labels and spec after a lost database (pure)."""

from __future__ import annotations

import pytest

from anvyl.errors import InvalidArgument
from anvyl.services.swarm_records import adopted_record

SERVICE = {
    "ID": "svc123",
    "Version": {"Index": 7},
    "Spec": {
        "Name": "duo",
        "Labels": {
            "anvyl.managed": "true",
            "anvyl.deployment": "d-abc",
            "anvyl.model.id": "smollm2",
            "anvyl.controller": "c-1",
            "anvyl.api-key": "generated",
            "anvyl.model.hash": "f" * 64,
        },
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": "anvyl/modelserver:0.1.0@sha256:" + "0" * 64,
                "Mounts": [
                    {"Target": "/model", "Source": "anvyl-model-ffff", "Type": "volume"},
                    {"Target": "/tmp", "Type": "tmpfs"},
                ],
            },
            "Resources": {"Limits": {"MemoryBytes": 1 << 30}},
            "Placement": {"Constraints": ["node.id == n-9"]},
        },
        "Mode": {"Replicated": {"Replicas": 2}},
        "EndpointSpec": {"Ports": [{"TargetPort": 8000, "PublishedPort": 9123}]},
    },
}


def test_a_service_becomes_its_deployment_again() -> None:
    record = adopted_record(SERVICE, "h-1")
    assert (record.id, record.name, record.model_id, record.host_id) == (
        "d-abc", "duo", "smollm2", "h-1",
    )  # fmt: skip
    assert (record.port, record.bind, record.container_id) == (9123, "0.0.0.0", "svc123")
    assert record.image == "anvyl/modelserver:0.1.0"
    assert record.options == {
        "runtime": "swarm",
        "replicas": 2,
        "api_key": True,
        "api_key_generated": True,
        "adopted": True,
        "memory": "1024m",
        "node_id": "n-9",
        "model_volume": "anvyl-model-ffff",
        "model_hash": "f" * 64,
    }


def test_a_service_without_its_labels_is_not_adopted() -> None:
    spec = {**SERVICE["Spec"], "Labels": {"anvyl.managed": "true"}}  # type: ignore[dict-item]
    with pytest.raises(InvalidArgument):
        adopted_record({**SERVICE, "Spec": spec}, "h-1")
