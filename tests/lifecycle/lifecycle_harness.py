"""Helpers of the lifecycle tests: a real `anvyl serve` whose home holds the bundled model.

Every model container a test server creates carries the run's `anvyl.test=<run id>` label
(through `ANVYL_LABELS`), so the session fixture removes whatever a failing test leaves behind;
the `models` fixture also stops every deployment after each test and checks nothing is left.

Ports: the spec's examples publish 8080 and 8081. These tests publish free ports instead,
because other test runs and people share this engine and a fixed port would make them collide
(and on a CI runner 8080 is often taken by something else); the commands are otherwise the
spec's, as written.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import docker
import grpc
from fixtures_control_plane import Served
from models_harness import deployments, model_containers

from anvyl.api import anvyl_pb2_grpc as rpc

__all__ = ["assert_nothing_left", "model_stub"]


def assert_nothing_left(
    served: Served, client: docker.DockerClient, run_labels: dict[str, str]
) -> None:
    """No deployment in `model ps`, no model container of this run on the engine."""
    assert deployments(served) == []
    assert model_containers(client, run_labels) == []


@contextlib.contextmanager
def model_stub(served: Served) -> Iterator[rpc.ModelServiceStub]:
    """A ModelService stub on a fresh channel (closed by the caller's `with`)."""
    with grpc.insecure_channel(served.address) as channel:
        yield rpc.ModelServiceStub(channel)
