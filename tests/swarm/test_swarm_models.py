"""Models on a real 3-node Swarm through `anvyl serve` and its CLI, and the gateway in front.

The module's lab runs three engines in network namespaces; `anvyl serve` talks to node 1 (the
manager), so deployments become Swarm services. The tests run in order (one lab, one server):
placement, refusal, two replicas behind the gateway, drain, a killed node, scale.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import httpx
import lmstudio as lms
import openai
import pytest
from helpers import free_port, wait_for
from lab import SwarmLab
from served_cluster import MODEL_ID, START_TIMEOUT_S, Cluster, serve_on

from anvyl.store import profiles
from anvyl.store.db import Store

pytestmark = [pytest.mark.docker, pytest.mark.model]

MOVE_TIMEOUT_S = 180.0
OTHER_ID = "smollm2-second-copy"  # the bundled model under a second id (hard links, no copy)
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
TTL_S = 20  # an idle on-demand deployment's keep-alive: time for `model ps` to list it first


@pytest.fixture(scope="module")
def cluster(
    swarm: SwarmLab,
    docker_client: docker.DockerClient,
    modelserver_image: str,
    bundled_model: Path,
    tmp_path_factory: pytest.TempPathFactory,
    run_labels: dict[str, str],
) -> Iterator[Cluster]:
    """The model-server image on every node and `anvyl serve` on the manager's engine."""
    swarm.load_image(docker_client, modelserver_image)
    with serve_on(swarm, bundled_model, tmp_path_factory, run_labels) as served:
        yield served


def test_host_list_shows_every_node(cluster: Cluster) -> None:
    hosts = json.loads(cluster.ok("host", "list", "-o", "json"))["hosts"]
    assert sorted(h["hostname"] for h in hosts) == sorted(n.hostname for n in cluster.lab.nodes)
    by_name = {h["hostname"]: h for h in hosts}
    for node in cluster.lab.nodes:
        h = by_name[node.hostname]
        assert h["address"] == node.address and h["state"] == "ready"
        assert h["availability"] == "active" and h["cpus"] > 0 and h["memory_bytes"] > 0
        assert h["engine_version"]
        assert h["labels"] == {}
    assert by_name[cluster.lab.manager.hostname]["role"] == "manager"
    table = cluster.ok("host", "list")
    assert all(n.hostname in table for n in cluster.lab.nodes)
    token = cluster.ok("cluster", "join-token")
    assert token.startswith("docker swarm join --token SWMTKN-")
    assert cluster.lab.manager.address in token


def test_host_id_pins_the_model(cluster: Cluster) -> None:
    node = cluster.lab.nodes[2]
    port = str(free_port())
    cluster.ok("model", "start", MODEL_ID, "--name", "pinned", "--port", port,
               "--memory", "1g", "--host-id", node.hostname, timeout=START_TIMEOUT_S)  # fmt: skip
    try:
        d = cluster.deployment("pinned")
        assert d["state"] == "ready"
        assert [(r["node"], r["ready"]) for r in d["replicas"]] == [(node.hostname, True)]
        # Host-mode ports bind every interface: without the generated key, the model refuses.
        direct = httpx.get(f"http://{node.address}:{port}/v1/models", timeout=10)
        assert direct.status_code == 401
    finally:
        cluster.ok("model", "stop", "pinned", timeout=60)
    assert "pinned" not in cluster.ok("model", "ps")


def test_a_model_that_fits_nowhere_is_refused(cluster: Cluster) -> None:
    result = cluster.cli("model", "start", MODEL_ID, "--name", "huge", "--port",
                         str(free_port()), "--memory", "900g")  # fmt: skip
    assert result.returncode != 0
    assert "no node has that much memory" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert "huge" not in cluster.ok("model", "ps")
    too_many = cluster.cli("model", "start", MODEL_ID, "--name", "many", "--replicas", "4",
                           "--port", str(free_port()))  # fmt: skip
    assert too_many.returncode != 0 and "distinct nodes" in too_many.stderr


@pytest.fixture(scope="module")
def two(cluster: Cluster) -> str:
    """A deployment with two replicas (started once for the tests below)."""
    cluster.ok("model", "start", MODEL_ID, "--name", "duo", "--replicas", "2", "--port",
               str(free_port()), "--memory", "1g", timeout=START_TIMEOUT_S)  # fmt: skip
    return "duo"


def _client(cluster: Cluster) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{cluster.gateway}/v1", api_key="unused", max_retries=0, timeout=120
    )


def test_two_replicas_on_distinct_nodes_behind_the_gateway(cluster: Cluster, two: str) -> None:
    nodes = cluster.ready_nodes(two)
    assert len(nodes) == 2 and len(set(nodes)) == 2
    ps = cluster.ok("model", "ps")
    assert "replicas" in ps and all(n in ps for n in nodes)
    wait_for(lambda: _gateway_ready(cluster) == 2, timeout=30, what="the gateway sees both")
    client = _client(cluster)
    served_by = set()
    for _ in range(4):
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL_ID, messages=QUESTION, max_tokens=1
        )
        assert raw.parse().choices
        served_by.add(raw.headers["x-anvyl-deployment"])
    assert served_by == {f"{two}@{n}" for n in nodes}
    stream = client.chat.completions.create(
        model=MODEL_ID, messages=QUESTION, max_tokens=3, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_lmstudio_sdk_through_the_gateway(cluster: Cluster, two: str) -> None:
    """LM Studio's SDK on the gateway reaches the Swarm replicas (their generated key held)."""
    wait_for(lambda: _gateway_ready(cluster) == 2, timeout=30, what="the gateway sees both")
    port = int(cluster.gateway.rsplit(":", 1)[1])
    with lms.Client(f"127.0.0.1:{port}") as client:
        assert [m.identifier for m in client.llm.list_loaded()] == [MODEL_ID]
        result = client.llm.model(MODEL_ID).respond(QUESTION[0]["content"], config={"maxTokens": 8})
        assert result.content and result.stats.predicted_tokens_count


def test_host_metrics_of_every_node(cluster: Cluster, two: str) -> None:
    on = cluster.ready_nodes(two)
    for node in cluster.lab.nodes:
        m = json.loads(cluster.ok("host", "metrics", node.hostname, "-o", "json"))
        n = m["node"]
        assert m["host_id"] == node.node_id == n["id"]
        assert n["hostname"] == node.hostname and n["address"] == node.address
        assert n["state"] == "ready" and n["availability"] == "active"
        assert n["nano_cpus"] > 0 and n["memory_bytes"] > 0
        assert (two in {c.get("deployment") for c in m["containers"]}) == (node.hostname in on)
        if node is cluster.lab.manager:  # the server's own engine
            assert n["engine_state"] == "reachable" and n["engine"]["version"]
            assert m["container_stats"] and m["cpu_percent"] is not None
            for c in m["containers"]:
                assert c["memory_used_bytes"] > 0 and c["cpu_percent"] >= 0
        else:  # figures need the node's own engine: said, not shown as zeros
            assert n["engine_state"] == "unknown" and n["engine"] is None
            assert not m["container_stats"] and "engine" in m["container_stats_reason"]
            assert m["cpu_percent"] is None and m["load"] is None
            for c in m["containers"]:
                assert c["cpu_percent"] is None and c["memory_used_bytes"] is None
                assert c["state"] == "running" and c["task_id"]
    worker = next(n for n in cluster.lab.nodes[1:] if n.hostname in on)
    table = cluster.cli("host", "metrics", worker.hostname)
    assert table.returncode == 0, table.stderr
    assert two in table.stdout and "n/a" in table.stdout
    assert "no per-container figures" in table.stderr


def _nodes(cluster: Cluster) -> dict[str, dict[str, Any]]:
    return {h["hostname"]: h for h in json.loads(cluster.ok("host", "list", "-o", "json"))["hosts"]}


def test_host_add_records_a_node_engine_only_when_it_is_that_node(
    cluster: Cluster, two: str
) -> None:
    lab = cluster.lab
    second, third = lab.nodes[1], lab.nodes[2]
    wrong = cluster.cli("host", "add", second.hostname, "--engine", third.tcp_url)
    assert wrong.returncode != 0 and f"not node {second.hostname}" in wrong.stderr, wrong.stderr
    bad = cluster.cli("host", "add", second.hostname, "--engine", f"http://{second.address}")
    assert bad.returncode != 0 and "invalid engine URL" in bad.stderr, bad.stderr
    closed = cluster.cli("host", "add", second.hostname, "--engine", f"tcp://{second.address}:1")
    assert closed.returncode != 0 and "cannot use" in closed.stderr, closed.stderr
    assert "Traceback" not in wrong.stderr + bad.stderr + closed.stderr
    nodes = _nodes(cluster)
    assert nodes[second.hostname]["engine_state"] == "unknown"  # nothing recorded on failure
    assert nodes[lab.manager.hostname]["engine_state"] == "reachable"  # the server's own
    for node in lab.nodes[1:]:
        added = cluster.cli("host", "add", node.hostname, "--engine", node.tcp_url)
        assert added.returncode == 0, added.stderr
        assert "recorded" in added.stdout and "without TLS" in added.stderr
    nodes = _nodes(cluster)
    assert {n["engine_state"] for n in nodes.values()} == {"reachable"}
    assert nodes[third.hostname]["engine_url"] == third.tcp_url
    assert "reachable" in cluster.ok("host", "list")
    on = cluster.ready_nodes(two)
    worker = next(n for n in lab.nodes[1:] if n.hostname in on)
    m = json.loads(cluster.ok("host", "metrics", worker.hostname, "-o", "json"))
    assert m["container_stats"] and m["node"]["engine_state"] == "reachable"
    assert m["node"]["engine"]["version"] and m["node"]["engine"]["containers_running"] >= 1
    mine = [c for c in m["containers"] if c.get("deployment") == two]
    assert len(mine) == 1 and mine[0]["memory_used_bytes"] > 0 and mine[0]["state"] == "running"
    # Forget one, then record it again (later tests rely on every engine being known).
    cluster.ok("host", "remove", third.hostname)
    assert _nodes(cluster)[third.hostname]["engine_state"] == "unknown"
    again = cluster.cli("host", "remove", third.hostname)
    assert again.returncode != 0 and "no engine" in again.stderr
    cluster.ok("host", "add", third.node_id[:8], "--engine", third.tcp_url)
    assert _nodes(cluster)[third.hostname]["engine_state"] == "reachable"


def test_an_on_demand_start_goes_to_the_node_with_the_most_free_budget(
    cluster: Cluster, two: str, bundled_model: Path, swarm_busybox: str, run_labels: dict[str, str]
) -> None:
    """Three nodes of equal memory, two holding a replica of `two`: the third has the most free
    budget, so a chat for a stopped model starts its replica there and is answered. Two tasks
    that are not Anvyl's on the third node make the Swarm's own spread choose another."""
    lab = cluster.lab
    held = cluster.ready_nodes(two)
    free = next(n for n in lab.nodes if n.hostname not in held)
    other = cluster.served.home / "models" / OTHER_ID
    other.mkdir()
    for item in bundled_model.resolve().iterdir():  # files, not links: a replica mounts the folder
        os.link(item, other / item.name)
    with lab.manager.client() as client:
        sleepers = client.services.create(
            swarm_busybox,
            ["/bin/busybox", "sleep", "3600"],
            name=f"sleepers-{free_port()}",
            labels=run_labels,
            mode=docker.types.ServiceMode("replicated", replicas=2),
            constraints=[f"node.id=={free.node_id}"],
        )
        try:
            wait_for(lambda: _running(sleepers) == 2, timeout=60, what="two tasks on the node")
            reply = _client(cluster).chat.completions.create(
                model=OTHER_ID, messages=QUESTION, max_tokens=3
            )
            assert reply.choices and reply.choices[0].message.content
            deployments = json.loads(cluster.ok("model", "ps", "-o", "json"))["deployments"]
            started = [d for d in deployments if d["model_id"] == OTHER_ID]
            assert len(started) == 1 and started[0]["on_demand"], started
            assert [r["node"] for r in started[0]["replicas"]] == [free.hostname]
        finally:
            sleepers.remove()
            for d in json.loads(cluster.ok("model", "ps", "-o", "json"))["deployments"]:
                if d["model_id"] == OTHER_ID:
                    cluster.cli("model", "stop", d["name"], timeout=60)
            shutil.rmtree(other)
            # The gateway's routing table refreshes every second: until it has, a request for
            # the model still reaches the stopping replica (the next test's must start one).
            wait_for(
                lambda: _gateway_ready(cluster, OTHER_ID) == 0,
                timeout=30,
                what="the gateway to forget the stopped replica",
            )
    assert cluster.ready_nodes(two) == held


def test_an_idle_on_demand_deployment_on_the_swarm_unloads(
    cluster: Cluster, bundled_model: Path
) -> None:
    """A chat asking LM Studio's `ttl` of 20 s starts a Swarm service on demand; the keep-alive
    clock reads its replica's `/metrics` (the peak memory is recorded) and, once it is idle for
    20 s, stops it gracefully: the deployment and its service are gone. (20 s, not 2: time for
    `model ps` to list the deployment before it may unload, on a loaded machine too.)"""
    other = cluster.served.home / "models" / OTHER_ID
    other.mkdir()
    for item in bundled_model.resolve().iterdir():  # files, not links: a replica mounts the folder
        os.link(item, other / item.name)
    try:
        reply = _client(cluster).chat.completions.create(
            model=OTHER_ID, messages=QUESTION, max_tokens=3, extra_body={"ttl": TTL_S}
        )
        assert reply.choices and reply.choices[0].message.content
        started = _deployments_of(cluster, OTHER_ID)
        assert len(started) == 1 and started[0]["on_demand"], started
        assert started[0]["keep_alive_seconds"] == TTL_S and started[0]["replicas"], started
        name = started[0]["name"]
        wait_for(
            lambda: not _deployments_of(cluster, OTHER_ID),
            timeout=60 + TTL_S,
            interval=0.5,
            what="the idle on-demand deployment to unload",
        )
        with cluster.lab.manager.client() as client:
            assert not client.services.list(filters={"name": name})
        store = Store(cluster.served.home / "anvyl.db")
        assert profiles.get_profile(store, OTHER_ID).peak_memory > 0
    finally:
        for d in _deployments_of(cluster, OTHER_ID):
            cluster.cli("model", "stop", d["name"], timeout=60)
        shutil.rmtree(other)


def _deployments_of(cluster: Cluster, model_id: str) -> list[dict[str, Any]]:
    deployments = json.loads(cluster.ok("model", "ps", "-o", "json"))["deployments"]
    return [d for d in deployments if d["model_id"] == model_id]


def _running(service: Any) -> int:
    return sum(t["Status"]["State"] == "running" for t in service.tasks())


def _two_ready_without(cluster: Cluster, name: str, hostname: str) -> list[str] | None:
    """The two ready replicas' nodes once none is on `hostname`; None before."""
    nodes = cluster.ready_nodes(name)
    return nodes if len(nodes) == 2 and hostname not in nodes else None


def _gateway_ready(cluster: Cluster, model_id: str = MODEL_ID) -> int:
    listing = httpx.get(f"{cluster.gateway}/v1/models", timeout=5).json()["data"]
    return sum(m["ready_replicas"] for m in listing if m["id"] == model_id)


def test_drain_moves_the_model_off(cluster: Cluster, two: str) -> None:
    before = cluster.ready_nodes(two)
    drained = before[0]
    cluster.ok("host", "drain", drained)
    try:
        after = wait_for(
            lambda: _two_ready_without(cluster, two, drained),
            timeout=MOVE_TIMEOUT_S,
            what="the replica to move off the drained node",
        )
        assert set(after) == {n.hostname for n in cluster.lab.nodes} - {drained}
        hosts = json.loads(cluster.ok("host", "list", "-o", "json"))["hosts"]
        assert {h["hostname"]: h["availability"] for h in hosts}[drained] == "drain"
    finally:
        cluster.ok("host", "activate", drained)


@dataclass
class Traffic:
    """Requests sent one after another through the gateway until stopped."""

    client: openai.OpenAI
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        """Send until stopped, counting successes and failures."""
        while not self.stop.is_set():
            try:
                reply = self.client.chat.completions.create(
                    model=MODEL_ID, messages=QUESTION, max_tokens=1
                )
                assert reply.choices
                self.ok += 1
            except Exception as exc:  # counted, not raised: the test judges the count
                self.failed.append(repr(exc))


def test_a_killed_node_is_failed_over(cluster: Cluster, two: str) -> None:
    nodes = cluster.ready_nodes(two)
    # Kill a worker holding a replica (the manager holds the Swarm's state).
    victim = next(n for n in cluster.lab.nodes[1:] if n.hostname in nodes)
    traffic = Traffic(_client(cluster))
    sender = threading.Thread(target=traffic.run)
    sender.start()
    try:
        wait_for(lambda: traffic.ok >= 2, timeout=60, what="traffic flowing")
        cluster.lab.kill_node(victim)
        moved = wait_for(
            lambda: _two_ready_without(cluster, two, victim.hostname),
            timeout=MOVE_TIMEOUT_S,
            what="the replica rescheduled on a live node",
        )
        seen = traffic.ok
        wait_for(lambda: traffic.ok >= seen + 2, timeout=60, what="traffic after the move")
    finally:
        traffic.stop.set()
        sender.join(timeout=150)
    assert victim.hostname not in moved
    assert traffic.failed == [], traffic.failed
    assert traffic.ok >= 4


def test_scale(cluster: Cluster, two: str) -> None:
    cluster.ok("model", "scale", two, "1")
    wait_for(lambda: len(cluster.deployment(two)["replicas"]) == 1, timeout=60, what="one replica")
    cluster.ok("model", "stop", two, timeout=60)
    assert json.loads(cluster.ok("model", "ps", "-o", "json"))["deployments"] == []
