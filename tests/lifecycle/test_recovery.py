"""The control plane and the engine disagree: restarts, lost databases, containers removed."""

from __future__ import annotations

import signal
from pathlib import Path

import docker
import httpx
from fixtures_control_plane import Served
from helpers import free_port, wait_for
from lifecycle_harness import assert_nothing_left
from models_harness import (
    MODEL_ID,
    deployments,
    failed,
    make_home,
    model_containers,
    ok,
    serve_models,
    start_model,
)


def answers(port: int) -> bool:
    """The model at `port` completes a short chat request."""
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    reply = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=60)
    return reply.status_code == 200 and bool(reply.json()["choices"])


def test_control_plane_restart_keeps_models(
    tmp_path: Path,
    bundled_model: Path,
    modelserver_image: str,
    docker_client: docker.DockerClient,
    run_labels: dict[str, str],
) -> None:
    home = make_home(tmp_path / "home", bundled_model)
    port = free_port()
    first = serve_models(home, run_labels)
    second: Served | None = None
    try:
        ok(start_model(first, MODEL_ID, "--name", "survivor", "--port", str(port)))
        (before,) = deployments(first)
        assert first.stop(signal.SIGTERM) == 0

        # The model outlives its control plane.
        (container,) = model_containers(docker_client, run_labels)
        assert container.status == "running" and answers(port)

        second = serve_models(home, run_labels)
        (after,) = deployments(second)
        assert after["id"] == before["id"] and after["name"] == "survivor"
        assert after["container_id"] == before["container_id"]
        assert after["state"] == "ready" and after["port"] == port
        assert answers(port)
        assert "Stopped survivor" in ok(second.cli("model", "stop", "survivor")).stdout
        assert_nothing_left(second, docker_client, run_labels)
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_lost_database_adopts_running_models(
    tmp_path: Path,
    bundled_model: Path,
    modelserver_image: str,
    docker_client: docker.DockerClient,
    run_labels: dict[str, str],
) -> None:
    home = make_home(tmp_path / "home", bundled_model)
    port = free_port()
    first = serve_models(home, run_labels)
    second: Served | None = None
    try:
        ok(start_model(first, MODEL_ID, "--name", "orphan", "--port", str(port)))
        (before,) = deployments(first)
        first.stop()
        databases = list(home.glob("*.db*"))
        assert databases, list(home.iterdir())
        for db in databases:
            db.unlink()

        second = serve_models(home, run_labels)
        (adopted,) = deployments(second)
        assert adopted["name"] == "orphan" and adopted["container_id"] == before["container_id"]
        assert adopted["model_id"] == MODEL_ID and adopted["port"] == port
        assert adopted["state"] == "ready"
        assert answers(port)
        ok(second.cli("model", "stop", "orphan"))
        assert_nothing_left(second, docker_client, run_labels)
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_container_removed_behind_anvyls_back(
    models: Served, docker_client: docker.DockerClient, run_labels: dict[str, str]
) -> None:
    ok(start_model(models, MODEL_ID, "--name", "doomed", "--port", str(free_port())))
    (container,) = model_containers(docker_client, run_labels)
    container.remove(force=True)

    (gone,) = deployments(models)  # reported, not silently dropped
    assert gone["name"] == "doomed" and gone["state"] == "vanished"
    assert "removed outside Anvyl" in gone["state_reason"]
    ps = ok(models.cli("model", "ps"))
    assert "doomed" in ps.stdout and "vanished" in ps.stdout

    assert "Stopped doomed" in ok(models.cli("model", "stop", "doomed")).stdout
    assert deployments(models) == []
    failed(models.cli("model", "stop", "doomed"), "doomed")


def test_container_exited_behind_anvyls_back(
    models: Served, docker_client: docker.DockerClient, run_labels: dict[str, str]
) -> None:
    ok(start_model(models, MODEL_ID, "--name", "killed", "--port", str(free_port())))
    (container,) = model_containers(docker_client, run_labels)
    container.kill()
    dep = wait_for(
        lambda: [d for d in deployments(models) if d["state"] == "exited"],
        what="model ps to report the container exited",
    )[0]
    assert dep["name"] == "killed" and "137" in dep["state_reason"]
    ok(models.cli("model", "stop", "killed"))
    assert model_containers(docker_client, run_labels) == []
