"""The image serves the bundled model in a hardened container to the official `openai` SDK."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest
from helpers import free_port, wait_for

import anvyl.modelserver

pytestmark = [pytest.mark.docker, pytest.mark.model]

MODEL_ID = "smollm2-135m-instruct-mlx"


@pytest.fixture
def served_model(
    docker_client: docker.DockerClient,
    modelserver_image: str,
    bundled_model: Path,
    run_labels: dict[str, str],
) -> Iterator[tuple[str, docker.models.containers.Container]]:
    """A hardened container of the image serving the bundled model; yields its API base URL."""
    if not (Path(anvyl.modelserver.__file__).parent / "__main__.py").exists():
        pytest.skip("anvyl.modelserver has no entry point yet")
    port = free_port()
    container = docker_client.containers.run(
        modelserver_image,
        detach=True,
        labels=run_labels,
        environment={"MODEL_ID": MODEL_ID},
        volumes={str(bundled_model): {"bind": "/model", "mode": "ro"}},
        ports={"1234/tcp": ("127.0.0.1", port)},
        read_only=True,
        tmpfs={"/tmp": ""},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        pids_limit=256,
        mem_limit="2g",
        user="10001",
    )
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        container.reload()
        if container.status == "exited":
            logs = container.logs(tail=40).decode(errors="replace")
            raise AssertionError(f"the model server exited:\n{logs}")
        return httpx.get(f"{base}/health", timeout=2).status_code == 200

    try:
        wait_for(healthy, timeout=180, interval=0.2, what="/health of the model container")
        yield base, container
    finally:
        container.remove(force=True)


def test_openai_sdk_gets_paris_from_a_hardened_container(
    served_model: tuple[str, docker.models.containers.Container],
) -> None:
    from openai import OpenAI

    base, _ = served_model
    client = OpenAI(base_url=f"{base}/v1", api_key="unused", timeout=120)
    reply = client.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        temperature=0,
        max_tokens=32,
    )
    assert "Paris" in (reply.choices[0].message.content or "")


def test_healthcheck_ps_and_openblas_in_the_running_container(
    served_model: tuple[str, docker.models.containers.Container],
) -> None:
    _, container = served_model

    def docker_says_healthy() -> bool:
        container.reload()
        return container.attrs["State"]["Health"]["Status"] == "healthy"

    wait_for(docker_says_healthy, timeout=60, interval=0.5, what="the image's HEALTHCHECK")
    code, out = container.exec_run(["ps", "aux"])
    assert code == 0
    pid1 = next(line for line in out.decode().splitlines()[1:] if line.split()[1] == "1")
    assert "anvyl.modelserver" in pid1
    assert pid1.split()[0] == "anvyl"
    code, maps = container.exec_run(["cat", "/proc/1/maps"])
    assert code == 0 and b"openblas-pthread/libblas.so.3" in maps  # preloaded by the server
