"""What `model start` creates, read back with `docker inspect`: the spec's contract, hardening."""

from __future__ import annotations

import json
import subprocess

import docker
import httpx
from fixtures_control_plane import Served
from helpers import free_port
from models_harness import MODEL_ID, deployments, ok, start_model

SECOND_NS = 1_000_000_000
API_KEY = "lifecycle-secret-key-7f3a"


def inspect(container_id: str) -> dict:
    """`docker inspect` as a user runs it."""
    result = subprocess.run(
        ["docker", "inspect", container_id], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    (attrs,) = json.loads(result.stdout)
    return attrs


def test_labels_env_healthcheck_limits_and_hardening(
    models: Served, docker_client: docker.DockerClient
) -> None:
    port = free_port()
    ok(
        start_model(
            models,
            MODEL_ID,
            "-n",
            "inspected",
            "-p",
            str(port),
            "-m",
            "1g",
            "--cpus",
            "1.5",
            "--allow-origin",
            "https://app.example",
        )
    )
    (dep,) = deployments(models)
    attrs = inspect(dep["container_id"])
    config, host = attrs["Config"], attrs["HostConfig"]

    labels = config["Labels"]
    assert labels["anvyl.service"] == "lmstudio-model"
    assert labels["anvyl.model.id"] == MODEL_ID
    assert labels["anvyl.model.type"] == "mlx"
    assert labels["anvyl.managed"] == "true"
    assert labels["anvyl.deployment"] == dep["id"]

    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["MODEL_ID"] == MODEL_ID
    assert env["MEMORY_LIMIT"] == "1g"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["ANVYL_ALLOW_ORIGINS"] == "https://app.example"
    assert env["ANVYL_PUBLISHED_BIND"] == "127.0.0.1"  # the Host check follows the publication
    # Bound to 0.0.0.0 inside, published on loopback: a rebound name is refused, an allowed page
    # gets CORS.
    models_url = f"http://127.0.0.1:{port}/v1/models"
    assert httpx.get(models_url, headers={"Host": "evil.example"}).status_code == 403
    allowed = httpx.get(models_url, headers={"Origin": "https://app.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"

    health = config["Healthcheck"]
    assert health["Interval"] == 30 * SECOND_NS
    assert health["Timeout"] == 10 * SECOND_NS
    assert health["Retries"] == 3
    assert health["StartPeriod"] == 60 * SECOND_NS

    assert host["Memory"] == 1024**3
    assert host["MemorySwap"] == 1024**3  # no swap on top
    assert host["NanoCpus"] == int(1.5 * SECOND_NS)
    assert host["PortBindings"] == {"1234/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}

    # Hardening.
    assert config["User"] == "10001:10001"
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["ReadonlyRootfs"] is True
    assert "/tmp" in host["Tmpfs"]
    assert 0 < host["PidsLimit"] <= 1024
    assert host["Privileged"] is False
    assert host["Init"] is True  # signals reach a server that is still starting
    (mount,) = [m for m in attrs["Mounts"] if m["Destination"] == "/model"]
    assert mount["RW"] is False and mount["Mode"] == "ro"
    assert host["NetworkMode"] == "anvyl-models"
    network = docker_client.networks.get("anvyl-models")
    assert network.attrs["Options"]["com.docker.network.bridge.enable_icc"] == "false"
    log_config = host["LogConfig"]
    assert log_config["Type"] == "json-file"
    assert log_config["Config"]["max-size"] and int(log_config["Config"]["max-file"]) >= 1

    # The engine enforces the limit: the container's cgroup says 1 GiB.
    stats = docker_client.api.stats(dep["container_id"], stream=False)
    assert stats["memory_stats"]["limit"] == 1024**3


def test_bind_all_interfaces_only_when_asked(models: Served) -> None:
    port = free_port()
    ok(start_model(models, MODEL_ID, "-n", "bind-all", "-p", str(port), "--bind", "0.0.0.0", "-d"))
    (dep,) = deployments(models)
    assert dep["bind"] == "0.0.0.0"
    bindings = inspect(dep["container_id"])["HostConfig"]["PortBindings"]
    assert bindings == {"1234/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(port)}]}


def test_api_key_is_a_mounted_file_and_enforced(models: Served) -> None:
    port = free_port()
    ok(start_model(models, MODEL_ID, "-n", "keyed", "--port", str(port), "--api-key", API_KEY))
    (dep,) = deployments(models)
    attrs = inspect(dep["container_id"])
    assert API_KEY not in json.dumps(attrs)  # not in env, labels, command: nowhere
    secret = [m for m in attrs["Mounts"] if "secret" in m["Destination"]]
    assert len(secret) == 1 and secret[0]["RW"] is False

    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    assert httpx.post(url, json=body, timeout=60).status_code == 401
    wrong = httpx.post(url, json=body, headers={"Authorization": "Bearer nope"}, timeout=60)
    assert wrong.status_code == 401
    right = httpx.post(url, json=body, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
    assert right.status_code == 200, right.text
    assert right.json()["choices"][0]["message"]["content"]
    # The control plane still reads the server's metrics with the key.
    (dep,) = deployments(models)
    assert dep["state"] == "ready" and dep["requests_total"] >= 1
    # Stopped by a unique prefix of the container id.
    ok(models.cli("model", "stop", dep["container_id"][:6]))
