"""Images and model files reach the nodes without a registry, through each node's own engine.

The module's lab starts with the model-server image on the manager only, its engines reachable
over TCP with mutual TLS. Once `host add` tells Anvyl every worker's engine and certificates,
`model start --replicas 2` loads the image on the workers and copies the model into a volume
keyed by its content hash on every node that may run it; a second start finds both there. A
node whose engine is unknown keeps the bind mount, and the start says so. Last, a server that
lost its database adopts the running services again (and a lost API key is replaced).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import docker
import openai
import pytest
from helpers import free_port, wait_for
from lab import Node, SwarmLab
from served_cluster import MODEL_ID, START_TIMEOUT_S, Cluster, serve_on

pytestmark = [pytest.mark.docker, pytest.mark.model]

VOLUME_PREFIX = "anvyl-model-"


@pytest.fixture(scope="module")
def cluster(
    swarm_tls: SwarmLab,
    docker_client: docker.DockerClient,
    modelserver_image: str,
    bundled_model: Path,
    tmp_path_factory: pytest.TempPathFactory,
    run_labels: dict[str, str],
) -> Iterator[Cluster]:
    """The image on the manager only, `anvyl serve` there, every worker's engine recorded."""
    lab = swarm_tls
    lab.load_image(docker_client, modelserver_image, nodes=[lab.manager])
    with serve_on(lab, bundled_model, tmp_path_factory, run_labels) as served:
        plain = served.cli("host", "add", lab.nodes[1].hostname, "--engine", lab.nodes[1].tcp_url)
        assert plain.returncode != 0 and "cannot use" in plain.stderr  # TLS needs certificates
        for node in lab.nodes[1:]:
            added = served.cli("host", "add", node.hostname, *_tls(lab, node))
            assert added.returncode == 0 and "without TLS" not in added.stderr, added.stderr
        yield served


def _tls(lab: SwarmLab, node: Node) -> list[str]:
    ca, cert, key = lab.tls_files
    return ["--engine", node.tcp_url, "--tls-ca", str(ca), "--tls-cert", str(cert),
            "--tls-key", str(key)]  # fmt: skip


def _image_id(node: Node, tag: str) -> str:
    with node.client() as client:
        try:
            return str(client.images.get(tag).id)
        except docker.errors.ImageNotFound:
            return ""


def _model_volumes(node: Node) -> dict[str, dict[str, str]]:
    with node.client() as client:
        return {
            v.name: v.attrs.get("Labels") or {}
            for v in client.volumes.list()
            if v.name.startswith(VOLUME_PREFIX)
        }


def _model_mount(cluster: Cluster, name: str) -> dict[str, object]:
    with cluster.lab.manager.client() as client:
        service = client.services.get(name)
    mounts = service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Mounts"]
    return next(m for m in mounts if m["Target"] == "/model")


def test_a_start_puts_image_and_model_on_every_node(
    cluster: Cluster, modelserver_image: str
) -> None:
    lab = cluster.lab
    assert all(_image_id(n, modelserver_image) == "" for n in lab.nodes[1:])
    started = time.monotonic()
    cold = cluster.cli("model", "start", MODEL_ID, "--name", "cold", "--replicas", "2",
                       "--port", str(free_port()), "--memory", "1g",
                       timeout=START_TIMEOUT_S)  # fmt: skip
    cold_s = time.monotonic() - started
    assert cold.returncode == 0, cold.stderr
    # The manager's image now (the start rebuilds it when Anvyl's sources changed meanwhile).
    want = _image_id(lab.manager, modelserver_image)
    for node in lab.nodes[1:]:
        assert f"{node.hostname}: the model-server image is missing" in cold.stderr
        assert _image_id(node, modelserver_image) == want
    for node in lab.nodes:  # every node that may run it, not only the two chosen
        assert f"{node.hostname}: copying the model files" in cold.stderr, cold.stderr
        volumes = _model_volumes(node)
        assert len(volumes) == 1, volumes
        (labels,) = volumes.values()
        assert labels["anvyl.model.id"] == MODEL_ID and len(labels["anvyl.model.hash"]) == 64
    mount = _model_mount(cluster, "cold")
    assert mount["Type"] == "volume" and str(mount["Source"]).startswith(VOLUME_PREFIX)
    assert mount.get("ReadOnly") is True
    assert len(set(cluster.ready_nodes("cold"))) == 2
    # The gateway reads the replicas once a second: wait until it routes to them.
    wait_for(lambda: _chat(cluster), timeout=30, what="the gateway routing to the replicas")
    cluster.ok("model", "stop", "cold", timeout=60)

    started = time.monotonic()
    warm = cluster.cli("model", "start", MODEL_ID, "--name", "warm", "--replicas", "2",
                       "--port", str(free_port()), "--memory", "1g",
                       timeout=START_TIMEOUT_S)  # fmt: skip
    warm_s = time.monotonic() - started
    assert warm.returncode == 0, warm.stderr
    assert "image is missing" not in warm.stderr and "copying the model files" not in warm.stderr
    assert _model_mount(cluster, "warm")["Source"] == mount["Source"]  # the same volume, reused
    assert all(len(_model_volumes(n)) == 1 for n in lab.nodes)
    cluster.ok("model", "stop", "warm", timeout=60)
    print(f"start --replicas 2 to ready: {cold_s:.1f} s cold, {warm_s:.1f} s warm")


def test_a_node_without_a_known_engine_keeps_the_bind_mount(cluster: Cluster) -> None:
    third = cluster.lab.nodes[2]
    cluster.ok("host", "remove", third.hostname)
    try:
        started = cluster.cli("model", "start", MODEL_ID, "--name", "bound", "--detach",
                              "--port", str(free_port()), "--memory", "1g")  # fmt: skip
        assert started.returncode == 0, started.stderr
        assert f"no known engine for {third.hostname}" in started.stderr
        assert _model_mount(cluster, "bound")["Type"] == "bind"
        cluster.ok("model", "stop", "bound", timeout=60)
    finally:
        cluster.ok("host", "add", third.hostname, *_tls(cluster.lab, third))


def test_scaling_up_needs_every_engine_and_uses_the_volume(cluster: Cluster) -> None:
    third = cluster.lab.nodes[2]
    cluster.ok("model", "start", MODEL_ID, "--name", "grow", "--port", str(free_port()),
               "--memory", "1g", timeout=START_TIMEOUT_S)  # fmt: skip
    try:
        cluster.ok("host", "remove", third.hostname)
        try:
            refused = cluster.cli("model", "scale", "grow", "3")
            assert refused.returncode != 0, refused.stdout
            assert f"cannot reach the engine of {third.hostname}" in refused.stderr
        finally:
            cluster.ok("host", "add", third.hostname, *_tls(cluster.lab, third))
        cluster.ok("model", "scale", "grow", "3", timeout=120)
        nodes = wait_for(
            lambda: nodes if len(nodes := cluster.ready_nodes("grow")) == 3 else None,
            timeout=START_TIMEOUT_S,
            what="three replicas ready",
        )
        assert len(set(nodes)) == 3
        assert _model_mount(cluster, "grow")["Type"] == "volume"
    finally:
        cluster.ok("model", "stop", "grow", timeout=60)


def _chat(cluster: Cluster) -> bool:
    client = openai.OpenAI(base_url=f"{cluster.gateway}/v1", api_key="unused", max_retries=0)
    try:
        reply = client.chat.completions.create(
            model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}], max_tokens=1
        )
    except openai.APIError:
        return False
    return bool(reply.choices)


def test_services_are_adopted_after_a_lost_database(cluster: Cluster) -> None:
    cluster.ok("model", "start", MODEL_ID, "--name", "kept", "--replicas", "2",
               "--port", str(free_port()), "--memory", "1g",
               timeout=START_TIMEOUT_S)  # fmt: skip
    before = cluster.deployment("kept")
    try:
        cluster.restart(forget=("anvyl.db*",))  # the API key file survives in secrets/
        after = cluster.deployment("kept")
        assert (after["id"], after["port"], after["container_id"]) == (
            before["id"], before["port"], before["container_id"],
        )  # fmt: skip
        assert after["state"] == "ready" and len(after["replicas"]) == 2
        # The gateway finds the replicas again, and their key.
        wait_for(lambda: _chat(cluster), timeout=30, what="the gateway routing to them")

        cluster.restart(forget=("anvyl.db*", "secrets"))  # the key is lost too: replaced
        wait_for(
            lambda: len(cluster.ready_nodes("kept")) == 2 and _chat(cluster),
            timeout=START_TIMEOUT_S,
            what="the adopted service answering with its new key",
        )
    finally:
        cluster.ok("model", "stop", "kept", timeout=60)
    with cluster.lab.manager.client() as client:
        assert not client.services.list(filters={"name": "kept"})
        assert not [s for s in client.secrets.list() if before["id"] in s.name]
