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
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import grpc
from fixtures_control_plane import Served, start_serve

from anvyl.api import anvyl_pb2_grpc as rpc

MODEL_ID = "smollm2-135m-instruct-mlx"
SERVICE_LABEL = "anvyl.service=lmstudio-model"
START_TIMEOUT_S = 180.0


def make_home(root: Path, bundled_model: Path) -> Path:
    """An ANVYL_HOME whose models/ links the bundled model (no copy)."""
    home = root
    (home / "models").mkdir(parents=True, exist_ok=True)
    link = home / "models" / bundled_model.name
    if not link.exists():
        link.symlink_to(bundled_model.resolve(), target_is_directory=True)
    return home


def serve_models(home: Path, run_labels: dict[str, str], **env: str) -> Served:
    """`anvyl serve` on `home` that labels its model containers with the run's label."""
    labels = ",".join(f"{k}={v}" for k, v in run_labels.items())
    return start_serve(home, env={"ANVYL_LABELS": labels, **env})


def start_model(served: Served, *args: str) -> subprocess.CompletedProcess[str]:
    """`anvyl model start <args>` (it waits for the model, hence the long timeout)."""
    return served.cli("model", "start", *args, timeout=START_TIMEOUT_S)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """Assert a CLI call succeeded; return it."""
    assert result.returncode == 0, f"rc={result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result


def failed(result: subprocess.CompletedProcess[str], *texts: str) -> str:
    """Assert a CLI call failed with one clear error naming every text; return the error."""
    assert result.returncode != 0, f"succeeded unexpectedly:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    for text in texts:
        assert text in result.stderr, f"{text!r} not in: {result.stderr}"
    return result.stderr


def deployments(served: Served) -> list[dict[str, Any]]:
    """`anvyl model ps -o json`."""
    return json.loads(ok(served.cli("model", "ps", "-o", "json")).stdout)["deployments"]


def model_containers(
    client: docker.DockerClient, run_labels: dict[str, str], **labels: str
) -> list:
    """This run's model containers (running or not), optionally narrowed by more labels."""
    selectors = [SERVICE_LABEL, *(f"{k}={v}" for k, v in run_labels.items())]
    selectors += [f"{k}={v}" for k, v in labels.items()]
    return client.containers.list(all=True, filters={"label": selectors})


def stop_all(served: Served) -> None:
    """Stop every deployment the server knows (by deployment id)."""
    for d in deployments(served):
        ok(served.cli("model", "stop", d["id"], "--timeout", "5", timeout=60))


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
