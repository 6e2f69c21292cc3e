"""Bad input and failures of `model start` (and stop/rm): one clear error, nothing half made."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from fixtures_control_plane import Served, start_serve
from helpers import free_port
from lifecycle_harness import assert_nothing_left
from models_harness import (
    MODEL_ID,
    deployments,
    failed,
    make_home,
    model_containers,
    ok,
    start_model,
    stop_all,
)
from serve_without_image import MISSING_TAG

BAD_REFS = ["../x", "a;rm -rf /", "$(id)", "x/../../etc", "`id`", "a b", "-rf"]


@pytest.fixture
def clean(
    models: Served, docker_client: docker.DockerClient, run_labels: dict[str, str]
) -> Iterator[Served]:
    """The module's server; after the test, nothing of a failed start may remain."""
    yield models
    stop_all(models)
    assert model_containers(docker_client, run_labels) == []
    assert not list((models.home / "secrets").glob("*/api-key"))


@pytest.fixture(params=["container", "process"])
def clean_any(request: pytest.FixtureRequest) -> Served:
    """`clean`, or the process server (checked as clean by `procs`), for shared behaviour."""
    return request.getfixturevalue("clean" if request.param == "container" else "procs")


def test_unknown_model_suggests_close_matches(
    clean: Served, docker_client: docker.DockerClient, run_labels: dict[str, str]
) -> None:
    err = failed(start_model(clean, "smollm2-135m-instruct", "--port", str(free_port())))
    assert "smollm2-135m-instruct" in err and MODEL_ID in err  # "did you mean …"
    failed(start_model(clean, "nothing-like-it-mlx"), "nothing-like-it-mlx")
    assert_nothing_left(clean, docker_client, run_labels)


def test_name_already_in_use(clean_any: Served) -> None:
    clean = clean_any
    ok(start_model(clean, MODEL_ID, "--name", "taken-name", "--port", str(free_port()), "-d"))
    err = failed(start_model(clean, MODEL_ID, "--name", "taken-name", "--port", str(free_port())))
    assert "taken-name" in err and "already" in err
    assert [d["name"] for d in deployments(clean)] == ["taken-name"]


def test_name_of_a_foreign_container(
    clean: Served, docker_client: docker.DockerClient, busybox_image: str, run_labels: dict
) -> None:
    other = docker_client.containers.run(
        busybox_image, ["sleep", "60"], detach=True, labels=run_labels, name="not-a-model-zz"
    )
    try:
        failed(
            start_model(clean, MODEL_ID, "--name", "not-a-model-zz", "--port", str(free_port())),
            "not-a-model-zz",
            "already exists",
        )
        assert deployments(clean) == []
    finally:
        other.remove(force=True)


def test_port_held_by_a_listening_socket(clean_any: Served) -> None:
    clean = clean_any
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        err = failed(
            start_model(clean, MODEL_ID, "-n", "held", "-p", str(port)), f"port {port}", "in use"
        )
        if "pid" in err:  # who holds it, where the server may look (psutil)
            assert f"pid {os.getpid()}" in err
    assert deployments(clean) == []


def test_port_used_by_another_deployment(clean_any: Served) -> None:
    clean = clean_any
    port = free_port()
    ok(start_model(clean, MODEL_ID, "--name", "port-owner", "--port", str(port), "--detach"))
    failed(
        start_model(clean, MODEL_ID, "--name", "port-thief", "--port", str(port)),
        f"port {port}",
        "port-owner",
    )
    assert [d["name"] for d in deployments(clean)] == ["port-owner"]


@pytest.mark.parametrize("port", ["0", "65536", "-1", "99999"])
def test_invalid_port(clean: Served, port: str) -> None:
    result = start_model(clean, MODEL_ID, "--port", port)
    failed(result, "port")


def test_port_not_a_number(clean: Served) -> None:
    result = start_model(clean, MODEL_ID, "--port", "http")
    assert result.returncode == 2 and "port" in result.stderr.lower()


@pytest.mark.parametrize("memory", ["lots", "8x", "-1g", "1.5.2g", "g", "1k"])
def test_invalid_memory(clean: Served, memory: str) -> None:
    failed(start_model(clean, MODEL_ID, "--memory", memory, "--port", str(free_port())), memory)


def test_memory_below_the_estimate_is_refused_without_force(clean: Served) -> None:
    err = failed(
        start_model(clean, MODEL_ID, "--memory", "256m", "--port", str(free_port())),
        "--memory 256m",
        "--force",
    )
    # It names the estimate, in MiB, and what to give instead.
    assert "MiB" in err and "at least --memory" in err


def test_out_of_memory_while_loading(clean: Served) -> None:
    result = start_model(
        clean, MODEL_ID, "-n", "oom", "-m", "64m", "--force", "-p", str(free_port())
    )
    failed(result, "out of memory", "OOMKilled")


def test_unknown_host_id(clean: Served) -> None:
    failed(
        start_model(clean, MODEL_ID, "--host-id", "no-such-host-zz", "--port", str(free_port())),
        "no-such-host-zz",
    )


@pytest.mark.parametrize("name", BAD_REFS)
def test_bad_names(clean: Served, name: str) -> None:
    failed(start_model(clean, MODEL_ID, "--name", name, "--port", str(free_port())), "name")


@pytest.mark.parametrize("model_id", BAD_REFS)
def test_bad_model_ids(clean: Served, model_id: str) -> None:
    result = start_model(clean, model_id, "--port", str(free_port()))
    assert result.returncode != 0 and "Traceback" not in result.stderr


def test_bad_refs_for_stop_and_rm_touch_nothing(clean: Served) -> None:
    # A valid-looking model directory next to models/: `rm ../x` must not reach it.
    outside = clean.home / "x"
    outside.mkdir(exist_ok=True)
    (outside / "config.json").write_text('{"model_type": "llama"}')
    (outside / "model.safetensors").write_bytes(b"\0" * 16)
    for ref in BAD_REFS:
        failed(clean.cli("model", "stop", ref, "--timeout", "1"))
        failed(clean.cli("model", "rm", ref))
    assert (outside / "config.json").is_file()
    assert (clean.home / "models" / MODEL_ID / "config.json").is_file()


def test_stop_unknown_reference(clean: Served) -> None:
    failed(clean.cli("model", "stop", "nothing-runs-zz"), "nothing-runs-zz")


def test_other_exit_while_loading_reports_code_and_logs(clean: Served, tmp_path: Path) -> None:
    script = tmp_path / "fail.sh"
    script.write_text("echo cannot-start-sentinel >&2\nexit 3\n")
    result = start_model(
        clean, MODEL_ID, "-n", "exits", "-p", str(free_port()), "--startup-script", str(script)
    )
    failed(result, "code 3", "cannot-start-sentinel")


def test_image_build_failure(
    tmp_path: Path,
    bundled_model: Path,
    docker_client: docker.DockerClient,
    run_labels: dict[str, str],
) -> None:
    """The image is missing and its base cannot be pulled: the build's error, nothing made."""
    launcher = [sys.executable, str(Path(__file__).with_name("serve_without_image.py"))]
    home = make_home(tmp_path / "home", bundled_model)
    labels = ",".join(f"{k}={v}" for k, v in run_labels.items())
    server = start_serve(
        home,
        command=launcher,
        env={"ANVYL_LABELS": labels, "ANVYL_BASE_IMAGE": "does-not-exist:1"},
    )
    try:
        err = failed(
            start_model(server, MODEL_ID, "-n", "no-image", "--port", str(free_port())),
            "does-not-exist:1",
        )
        assert "pull" in err
        assert_nothing_left(server, docker_client, run_labels)
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.images.get(MISSING_TAG)
    finally:
        server.stop()
