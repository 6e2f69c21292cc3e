"""The Docker engine restarted under a running model (a private engine: the shared one lives on).

The control plane is not restarted: while the engine is down it reports the host unreachable and
the model's state unknown; once the engine is back it reconnects by itself and reports the true
state (live restore keeps the container running, so ready again), and the model can be stopped.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import grpc
import pytest
from fixtures_control_plane import Served
from helpers import free_port, wait_for
from models_harness import MODEL_ID, Servers, deployments, ok, start_model
from private_engine import PrivateEngine, copy_image, private_engine

from anvyl.api import anvyl_pb2 as pb
from anvyl.api import anvyl_pb2_grpc as rpc

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.model]


@pytest.fixture
def engine(docker_client: docker.DockerClient, modelserver_image: str) -> Iterator[PrivateEngine]:
    """A private engine holding the model-server image."""
    with private_engine(Path("/tmp") / f"anvt-{uuid.uuid4().hex[:6]}") as eng:
        copy_image(docker_client, eng.client(), modelserver_image)
        yield eng


def hosts(served: Served) -> list[dict[str, Any]]:
    """Every host's status and reason, from the ListHosts RPC."""
    with grpc.insecure_channel(served.address) as channel:
        reply = rpc.HostServiceStub(channel).ListHosts(pb.ListHostsRequest(), timeout=60)
    return [
        {
            "status": "reachable" if h.status == pb.HOST_STATUS_REACHABLE else "unreachable",
            "status_reason": h.status_reason,
        }
        for h in reply.hosts
    ]


def test_engine_restart_while_a_model_runs(
    engine: PrivateEngine, fresh_home: Path, servers: Servers
) -> None:
    served = servers.start(fresh_home, DOCKER_HOST=engine.url)
    port = free_port()
    ok(start_model(served, MODEL_ID, "--name", "engine-bound", "--port", str(port)))
    (before,) = deployments(served)
    assert before["state"] == "ready"

    engine.stop()
    (host,) = hosts(served)
    assert host["status"] == "unreachable" and host["status_reason"]
    (during,) = deployments(served)
    assert during["state"] == "unknown" and "unreachable" in during["state_reason"]
    stopping = served.cli("model", "stop", "engine-bound")
    assert stopping.returncode != 0 and "Traceback" not in stopping.stderr
    assert "unreachable" in stopping.stderr

    engine.start()  # anvyl serve keeps running: it must reconnect on its own
    wait_for(
        lambda: hosts(served)[0]["status"] == "reachable",
        timeout=60,
        what="the host to be reachable again",
    )
    truth = engine.client().api.inspect_container(before["container_id"])["State"]
    (after,) = deployments(served)
    assert after["container_id"] == before["container_id"]
    if truth["Running"]:
        assert after["state"] in ("starting", "ready"), after
    else:
        assert after["state"] == "exited", after
        assert f"code {truth['ExitCode']}" in after["state_reason"], (after, truth)
    ok(served.cli("model", "stop", "engine-bound", "--timeout", "5", timeout=60))
    assert deployments(served) == []
    assert engine.client().containers.list(all=True) == []
