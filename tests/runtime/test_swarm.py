"""Pure pieces of the Swarm runtime: node and task records, the model service spec."""

from __future__ import annotations

from anvyl.runtime import model_spec as spec
from anvyl.runtime import swarm

NODE = {
    "ID": "n1",
    "Spec": {"Role": "manager", "Availability": "active", "Labels": {"zone": "a"}},
    "Description": {
        "Hostname": "host-1",
        "Resources": {"NanoCPUs": 4_000_000_000, "MemoryBytes": 8 << 30},
        "Engine": {"EngineVersion": "20.10.24"},
    },
    "Status": {"State": "ready", "Addr": "10.0.0.1"},
    "ManagerStatus": {"Leader": True},
}


def test_node_from_attrs() -> None:
    node = swarm.node_from_attrs(NODE)
    assert node == swarm.NodeInfo(
        id="n1",
        hostname="host-1",
        address="10.0.0.1",
        role="manager",
        availability="active",
        state="ready",
        cpus=4,
        memory_bytes=8 << 30,
        engine_version="20.10.24",
        labels={"zone": "a"},
        leader=True,
        nano_cpus=4_000_000_000,
    )
    assert swarm.resolve_node([node], "host-1") is node
    assert swarm.resolve_node([node], "n") is node


def test_task_from_attrs() -> None:
    task = swarm.task_from_attrs(
        {
            "ID": "t1",
            "Slot": 2,
            "NodeID": "n1",
            "DesiredState": "running",
            "Status": {
                "State": "running",
                "Timestamp": "2024-05-01T10:00:00.123456789Z",
                "ContainerStatus": {"ContainerID": "c1", "ExitCode": 0},
            },
        }
    )
    assert (task.slot, task.node_id, task.state, task.container_id) == (2, "n1", "running", "c1")
    assert abs(task.since - 1714557600.123456) < 1e-3


def test_model_service_spec() -> None:
    container = spec.ModelContainerSpec(
        image="anvyl/modelserver:1",
        name="m",
        model_id="model",
        model_path="/models/model",
        port=4321,
        memory="1g",
        cpus=1.5,
        deployment_id="d-1",
        extra_labels={"anvyl.test": "x"},
    )
    kwargs = swarm.ModelServiceSpec(
        container, replicas=2, node_id="n1", api_key_secret=("s1", "key")
    ).create_kwargs()
    template = kwargs["task_template"]
    c = template["ContainerSpec"]
    assert c["ReadOnly"] and c["CapabilityDrop"] == ["ALL"] and c["Init"]
    assert c["User"] == spec.CONTAINER_USER
    assert c["Labels"]["anvyl.deployment"] == "d-1" and c["Labels"]["anvyl.test"] == "x"
    assert "ANVYL_API_KEY_FILE=" + spec.CONTAINER_API_KEY_PATH in c["Env"]
    assert c["Secrets"][0]["File"]["Name"] == "anvyl-api-key"
    assert {m["Target"] for m in c["Mounts"]} == {spec.CONTAINER_MODEL_PATH, "/tmp"}
    resources = template["Resources"]
    assert resources["Limits"]["MemoryBytes"] == resources["Reservations"]["MemoryBytes"] == 1 << 30
    assert resources["Limits"]["NanoCPUs"] == 1_500_000_000
    assert template["Placement"]["Constraints"] == ["node.id==n1"]
    assert template["Placement"]["MaxReplicas"] == 1
    assert kwargs["mode"]["replicated"]["Replicas"] == 2
    (port,) = kwargs["endpoint_spec"]["Ports"]
    assert (port["PublishedPort"], port["TargetPort"], port["PublishMode"]) == (4321, 1234, "host")
