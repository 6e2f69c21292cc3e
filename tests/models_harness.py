"""A real `anvyl serve` whose home links the bundled model, and the CLI calls tests make on it.

Shared by the lifecycle, reliability, gateway and dashboard tests. Every model container such a
server creates carries the run's `anvyl.test=<run id>` label (through `ANVYL_LABELS`), so the
session fixture removes whatever a failing test leaves behind.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path
from typing import Any

import docker
from fixtures_control_plane import Served, start_serve

MODEL_ID = "smollm2-135m-instruct-mlx"
SERVICE_LABEL = "anvyl.service=lmstudio-model"
START_TIMEOUT_S = 240.0  # `model start` waits for the model: slow on a loaded 2-core machine


def make_home(root: Path, bundled_model: Path) -> Path:
    """An ANVYL_HOME whose models/ links the bundled model (no copy)."""
    (root / "models").mkdir(parents=True, exist_ok=True)
    link = root / "models" / bundled_model.name
    if not link.exists():
        link.symlink_to(bundled_model.resolve(), target_is_directory=True)
    return root


def labels_env(run_labels: dict[str, str]) -> dict[str, str]:
    """`ANVYL_LABELS` putting the run's labels on everything the server creates."""
    return {"ANVYL_LABELS": ",".join(f"{k}={v}" for k, v in run_labels.items())}


def serve_models(
    home: Path, run_labels: dict[str, str], *, args: tuple[str, ...] = (), **env: str
) -> Served:
    """`anvyl serve` on `home` labelling its model containers; no dashboard unless asked."""
    return start_serve(
        home, args=("--dashboard-port", "0", *args), env={**labels_env(run_labels), **env}
    )


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


def start_model(served: Served, *args: str) -> subprocess.CompletedProcess[str]:
    """`anvyl model start <args>` (it waits for the model, hence the long timeout)."""
    return served.cli("model", "start", *args, timeout=START_TIMEOUT_S)


def deployments(served: Served) -> list[dict[str, Any]]:
    """`anvyl model ps -o json`."""
    return json.loads(ok(served.cli("model", "ps", "-o", "json")).stdout)["deployments"]


def stop_all(served: Served) -> None:
    """Stop every deployment the server knows (by deployment id), if the server still runs."""
    if served.proc.poll() is not None:
        return
    for d in deployments(served):
        ok(served.cli("model", "stop", d["id"], "--timeout", "5", timeout=60))


def model_containers(
    client: docker.DockerClient, run_labels: dict[str, str], **labels: str
) -> list[Any]:
    """This run's model containers (running or not), optionally narrowed by more labels."""
    selectors = [SERVICE_LABEL, *(f"{k}={v}" for k, v in run_labels.items())]
    selectors += [f"{k}={v}" for k, v in labels.items()]
    return client.containers.list(all=True, filters={"label": selectors})


class Servers:
    """`anvyl serve` processes a test starts on homes of its own (restarts, faults, engines).

    Leaving the `with` block (or `close()`) stops every one still running, its deployments
    first, even when the test failed; the `servers` fixture of tests/conftest.py wraps it.
    """

    def __init__(self, run_labels: dict[str, str]) -> None:
        self.run_labels = run_labels
        self.started: list[Served] = []

    def start(self, home: Path, *, args: tuple[str, ...] = (), **env: str) -> Served:
        """`anvyl serve` on `home` (see `serve_models`), stopped with the others at the end."""
        server = serve_models(home, self.run_labels, args=args, **env)
        self.started.append(server)
        return server

    def close(self) -> None:
        """Stop every server still running, newest first, each after its deployments."""
        for server in reversed(self.started):
            if server.proc.poll() is None:
                with contextlib.suppress(Exception):
                    for d in deployments(server):
                        server.cli("model", "stop", d["id"], "--timeout", "5", timeout=60)
            server.stop()
        self.started.clear()

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
