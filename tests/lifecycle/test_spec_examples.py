"""The spec's "Usage Examples", run as a user runs them: the CLI and curl as subprocesses.

The bundled model's id replaces the llama ids and free ports replace 8080/8081 (see
conftest.py); names, options and request bodies are the spec's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import docker
import httpx
from fixtures_control_plane import ANVYL, Served
from helpers import free_port, wait_for
from models_harness import MODEL_ID, deployments, failed, model_containers, ok, start_model

# The spec's request body, byte for byte, with the bundled model's id.
CHAT_BODY = """{
    "model": "smollm2-135m-instruct-mlx",
    "messages": [{"role": "user", "content": "Hello!"}]
  }"""


def curl_chat(port: int) -> dict:
    """The spec's curl command against `localhost:<port>`; the parsed reply."""
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "--fail-with-body",
            "-X",
            "POST",
            f"http://localhost:{port}/v1/chat/completions",
            "-H",
            "Content-Type: application/json",
            "-d",
            CHAT_BODY,
        ],
        capture_output=True,
        text=True,
        # The spec's body sets no max_tokens: the tiny model may ramble up to the server's
        # limit (2048 tokens), slow on a busy 2-core runner. Usually it answers in a second.
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def short_chat(port: int) -> dict:
    """A bounded chat request (8 tokens at most); the parsed reply."""
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 8}
    reply = httpx.post(f"http://localhost:{port}/v1/chat/completions", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    return reply.json()


def assert_answered(reply: dict) -> None:
    """A chat completion from the bundled model with some text in it."""
    assert reply["object"] == "chat.completion"
    assert reply["model"] == MODEL_ID
    (choice,) = reply["choices"]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].strip()
    assert reply["usage"]["completion_tokens"] > 0


def test_basic_model_deployment(
    models: Served, docker_client: docker.DockerClient, run_labels: dict[str, str]
) -> None:
    port = free_port()
    # 1. Check available models
    listed = ok(models.cli("model", "list"))
    assert MODEL_ID in listed.stdout and "MODEL ID" in listed.stdout

    # 2. Start a model container
    started = ok(start_model(models, MODEL_ID, "--port", str(port)))
    assert f"model-{MODEL_ID}" in started.stdout and "ready" in started.stdout
    assert f"http://localhost:{port}/v1" in started.stdout
    assert f"curl -X POST http://localhost:{port}/v1/chat/completions" in started.stdout
    for phase in ("Resolving", "Creating the container", "Loading weights", "Ready"):
        assert phase in started.stderr, started.stderr

    # 3. Check container status
    ps = ok(models.cli("model", "ps"))
    assert f"model-{MODEL_ID}" in ps.stdout and MODEL_ID in ps.stdout
    assert "ready" in ps.stdout and f"http://localhost:{port}" in ps.stdout
    (dep,) = deployments(models)
    assert dep["state"] == "ready" and dep["port"] == port

    # 4. Test the model (using curl)
    assert_answered(curl_chat(port))
    # `model ps` counts API requests only (not its own health probes) and shows memory used.
    (dep,) = deployments(models)
    assert dep["requests_total"] == 1
    wait_for(lambda: deployments(models)[0]["memory_used_bytes"] > 50 * 1024**2)

    # 5. Stop the model (by model id)
    stopped = ok(models.cli("model", "stop", MODEL_ID))
    assert f"Stopped model-{MODEL_ID}" in stopped.stdout
    assert deployments(models) == []
    assert model_containers(docker_client, run_labels) == []


def test_multiple_model_deployment(any_runtime: Served) -> None:
    models = any_runtime
    small_port, medium_port = free_port(), free_port()
    # Start multiple models on different ports
    ok(start_model(models, MODEL_ID, "--name", "llama-small", "--port", str(small_port)))
    ok(start_model(models, MODEL_ID, "--name", "llama-medium", "--port", str(medium_port)))

    # Check all running models
    ps = ok(models.cli("model", "ps"))
    assert "llama-small" in ps.stdout and "llama-medium" in ps.stdout
    states = {d["name"]: (d["state"], d["port"]) for d in deployments(models)}
    assert states == {"llama-small": ("ready", small_port), "llama-medium": ("ready", medium_port)}
    assert_answered(short_chat(small_port))
    assert_answered(short_chat(medium_port))

    # The model id now names two deployments: an error listing both, nothing stopped.
    failed(models.cli("model", "stop", MODEL_ID), "llama-small", "llama-medium")
    assert len(deployments(models)) == 2

    # Stop specific models
    assert "Stopped llama-small" in ok(models.cli("model", "stop", "llama-small")).stdout
    assert [d["name"] for d in deployments(models)] == ["llama-medium"]
    assert_answered(short_chat(medium_port))
    assert "Stopped llama-medium" in ok(models.cli("model", "stop", "llama-medium")).stdout
    assert deployments(models) == []


def test_production_deployment(
    models: Served, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    port = free_port()
    hosts = json.loads(ok(models.cli("host", "list", "-o", "json")).stdout)["hosts"]
    (local,) = [h for h in hosts if h["local"]]
    # The model server is quiet at its default log level; a startup script gives the logs
    # something to show (the spec's STARTUP_SCRIPT).
    script = tmp_path / "startup.sh"
    script.write_text("echo production-llama warming up\n")

    # Start with memory limit and custom name
    ok(
        start_model(
            models,
            MODEL_ID,
            "--name",
            "production-llama",
            "--port",
            str(port),
            "--memory",
            "16g",
            "--host-id",
            local["id"],
            "--startup-script",
            str(script),
        )
    )
    (dep,) = deployments(models)
    assert dep["host_id"] == local["id"] and dep["memory_limit_bytes"] == 16 * 1024**3
    container = docker_client.containers.get("production-llama")
    assert container.attrs["HostConfig"]["Memory"] == 16 * 1024**3

    # Monitor logs: read lines as they come, then Ctrl-C; the CLI exits cleanly.
    follow = subprocess.Popen(
        [ANVYL, "container", "logs", "production-llama", "--follow"],
        env={**os.environ, "ANVYL_ADDR": models.address, **models.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follow.stdout is not None
        # The container's stdout and stderr interleave in no fixed order.
        lines = sorted(follow.stdout.readline().strip() for _ in range(2))
        assert lines[0].startswith("anvyl-entrypoint: running STARTUP_SCRIPT"), lines
        assert lines[1] == "production-llama warming up", lines
        assert follow.poll() is None  # still following
        follow.send_signal(signal.SIGINT)
        _, err = follow.communicate(timeout=60)  # generous: a loaded 2-core machine
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    assert follow.returncode == 130 and "Traceback" not in err, err

    # Check health
    health = subprocess.run(
        ["curl", "-sS", "--fail-with-body", f"http://localhost:{port}/health"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert health.returncode == 0, health.stdout + health.stderr
    assert json.loads(health.stdout) | {"dtype": None} == {
        "status": "ok",
        "model": MODEL_ID,
        "dtype": None,
        "memory_limit": "16g",
    }

    # Stop by container id, as `docker ps` shows it (12 hex digits).
    stopped = ok(models.cli("model", "stop", container.id[:12]))
    assert "Stopped production-llama" in stopped.stdout
    wait_for(lambda: not docker_client.containers.list(all=True, filters={"name": "production"}))


def test_stop_by_full_id_and_unique_prefix(models: Served) -> None:
    first_port, second_port = free_port(), free_port()
    ok(start_model(models, MODEL_ID, "--name", "by-id-1", "--port", str(first_port), "--detach"))
    ok(start_model(models, MODEL_ID, "--name", "by-id-2", "--port", str(second_port), "--detach"))
    ids = {d["name"]: d["container_id"] for d in deployments(models)}
    first, second = ids["by-id-1"], ids["by-id-2"]
    assert len(first) == 64

    ok(models.cli("model", "stop", first))
    assert [d["name"] for d in deployments(models)] == ["by-id-2"]
    # The shortest prefix that tells the remaining one apart from nothing else: 4 digits.
    assert "Stopped by-id-2" in ok(models.cli("model", "stop", second[:4])).stdout
    failed(models.cli("model", "stop", second[:4]), "no model deployment matches")
