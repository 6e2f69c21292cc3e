"""The lab: three engines in namespaces form a Swarm, serve host-mode ports, die on demand."""

from __future__ import annotations

import subprocess

import docker
import httpx
import pytest
from helpers import free_port, wait_for
from lab import SwarmLab

pytestmark = pytest.mark.docker


def test_three_nodes_ready(swarm: SwarmLab) -> None:
    with swarm.manager.client() as client:
        nodes = client.nodes.list()
        assert len(nodes) == 3
        assert {n.attrs["Status"]["State"] for n in nodes} == {"ready"}
        assert {n.attrs["Status"]["Addr"] for n in nodes} == {n.address for n in swarm.nodes}
        assert {n.attrs["Description"]["Hostname"] for n in nodes} == {
            n.hostname for n in swarm.nodes
        }


def test_image_on_every_node_and_a_service_on_host_ports(
    swarm: SwarmLab, swarm_busybox: str, run_labels: dict[str, str]
) -> None:
    for node in swarm.nodes:
        with node.client() as client:
            assert client.images.get(swarm_busybox)
    port = free_port()
    with swarm.manager.client() as client:
        service = client.services.create(
            swarm_busybox,
            [
                "sh",
                "-c",
                "mkdir -p /tmp/w && hostname > /tmp/w/index.html && httpd -f -p 80 -h /tmp/w",
            ],
            name=f"lab-web-{port}",
            labels=run_labels,
            mode=docker.types.ServiceMode("replicated", replicas=3),
            endpoint_spec=docker.types.EndpointSpec(ports={port: (80, "tcp", "host")}),
            maxreplicas=1,
        )
        try:
            answers = wait_for(
                lambda: _all_answer(swarm, port), timeout=60, what="a task on every node"
            )
            assert len(set(answers)) == 3  # one task per node, each its own container
        finally:
            service.remove()


def _all_answer(swarm: SwarmLab, port: int) -> list[str] | None:
    answers = []
    for node in swarm.nodes:
        try:
            answers.append(httpx.get(f"http://{node.address}:{port}/", timeout=1).text)
        except httpx.HTTPError:
            return None
    return answers


def test_kill_node_takes_it_down(swarm: SwarmLab) -> None:
    victim = swarm.nodes[2]
    swarm.kill_node(victim)
    with swarm.manager.client() as client:
        wait_for(
            lambda: client.nodes.get(victim.node_id).attrs["Status"]["State"] == "down",
            timeout=30,
            what="the killed node reported down",
        )
    ping = subprocess.run(["ip", "netns", "pids", victim.netns], capture_output=True, text=True)
    assert ping.stdout.strip() == ""
