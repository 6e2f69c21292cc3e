"""The built image itself: its configuration and what runs inside a container of it."""

from __future__ import annotations

import docker
import pytest

import anvyl

pytestmark = pytest.mark.docker

HARDENED = {
    "read_only": True,
    "tmpfs": {"/tmp": ""},
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
    "pids_limit": 256,
    "mem_limit": "2g",
    "user": "10001",
}


def run(
    client: docker.DockerClient, image: str, command: list[str], labels: dict[str, str], **kwargs
) -> str:
    """Run `command` in a container of `image`; return its output (stdout and stderr)."""
    output = client.containers.run(
        image, command, labels=labels, remove=True, stdout=True, stderr=True, **kwargs
    )
    return output.decode()


def test_config_user_ports_healthcheck_env(
    docker_client: docker.DockerClient, modelserver_image: str
) -> None:
    config = docker_client.images.get(modelserver_image).attrs["Config"]
    assert config["User"] == "10001:10001"
    assert set(config["ExposedPorts"]) == {"1234/tcp", "8080/tcp"}
    test = config["Healthcheck"]["Test"]
    assert test[:2] == ["CMD", "python"]
    assert "/health" in " ".join(test) and "curl" not in " ".join(test)
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["ANVYL_BIND"] == "0.0.0.0"
    assert env["MODEL_PATH"] == "/model"
    assert env["HOME"] == "/tmp"
    assert env["HF_HUB_CACHE"] == "/tmp/hf"
    assert config["Entrypoint"] == ["/usr/local/bin/anvyl-entrypoint"]
    assert config["Cmd"] == ["python", "-m", "anvyl.modelserver"]
    assert config["Labels"]["anvyl.version"] == anvyl.__version__


def test_runs_as_non_root_and_ps_works(
    docker_client: docker.DockerClient, modelserver_image: str, run_labels: dict[str, str]
) -> None:
    assert run(docker_client, modelserver_image, ["id", "-u"], run_labels).strip() == "10001"
    out = run(docker_client, modelserver_image, ["ps", "aux"], run_labels)
    assert out.splitlines()[0].split()[:2] == ["USER", "PID"]
    assert "ps aux" in out


def test_python_stack_and_same_anvyl_version(
    docker_client: docker.DockerClient, modelserver_image: str, run_labels: dict[str, str]
) -> None:
    code = "import mlx.core, mlx_lm, anvyl; print(anvyl.__version__)"
    out = run(docker_client, modelserver_image, ["python", "-c", code], run_labels)
    assert out.strip().splitlines()[-1] == anvyl.__version__


def test_openblas_is_where_the_model_server_looks(
    docker_client: docker.DockerClient, modelserver_image: str, run_labels: dict[str, str]
) -> None:
    code = "import glob; print(glob.glob('/usr/lib/*-linux-gnu/openblas-pthread/libblas.so.3')[0])"
    out = run(docker_client, modelserver_image, ["python", "-c", code], run_labels)
    assert out.strip().endswith("/openblas-pthread/libblas.so.3")


def test_mlx_computes_in_a_hardened_container(
    docker_client: docker.DockerClient, modelserver_image: str, run_labels: dict[str, str]
) -> None:
    code = "import mlx.core as mx; print((mx.ones((64, 64)) @ mx.ones((64, 64))).sum().item())"
    out = run(docker_client, modelserver_image, ["python", "-c", code], run_labels, **HARDENED)
    assert out.strip().splitlines()[-1] == "262144.0"


def test_startup_script_runs_before_the_command(
    docker_client: docker.DockerClient,
    modelserver_image: str,
    run_labels: dict[str, str],
    tmp_path,
) -> None:
    script = tmp_path / "startup.sh"
    script.write_text('echo "startup ran as $(id -u)"\n')
    out = run(
        docker_client,
        modelserver_image,
        ["echo", "server started"],
        run_labels,
        environment={"STARTUP_SCRIPT": "/etc/anvyl/startup.sh"},
        volumes={str(script): {"bind": "/etc/anvyl/startup.sh", "mode": "ro"}},
        **HARDENED,
    )
    lines = [line for line in out.splitlines() if not line.startswith("anvyl-entrypoint:")]
    assert lines == ["startup ran as 10001", "server started"]


def test_failing_startup_script_stops_the_container(
    docker_client: docker.DockerClient,
    modelserver_image: str,
    run_labels: dict[str, str],
    tmp_path,
) -> None:
    script = tmp_path / "startup.sh"
    script.write_text("exit 3\n")
    with pytest.raises(docker.errors.ContainerError) as info:
        run(
            docker_client,
            modelserver_image,
            ["echo", "server started"],
            run_labels,
            environment={"STARTUP_SCRIPT": "/etc/anvyl/startup.sh"},
            volumes={str(script): {"bind": "/etc/anvyl/startup.sh", "mode": "ro"}},
        )
    assert info.value.exit_status == 3


def test_missing_startup_script_is_skipped_with_a_warning(
    docker_client: docker.DockerClient, modelserver_image: str, run_labels: dict[str, str]
) -> None:
    out = run(
        docker_client,
        modelserver_image,
        ["echo", "server started"],
        run_labels,
        environment={"STARTUP_SCRIPT": "/nowhere/startup.sh"},
    )
    # stdout and stderr are separate streams in the engine's log: their order is not fixed.
    assert "does not exist; skipped" in out
    assert "server started" in out


def test_startup_script_value_is_a_path_not_code(
    docker_client: docker.DockerClient, modelserver_image: str, run_labels: dict[str, str]
) -> None:
    out = run(
        docker_client,
        modelserver_image,
        ["echo", "server started"],
        run_labels,
        environment={"STARTUP_SCRIPT": "; echo injected"},
    )
    assert "injected\n" not in out.replace("; echo injected", "")
    assert "server started" in out


def test_cpu_kernel_is_in_the_image_when_the_host_can_build_it(
    docker_client: docker.DockerClient, modelserver_image: str, run_labels: dict[str, str]
) -> None:
    """Anvyl's CPU kernel is installed, passes its self-check and is what the server would use."""
    import shutil

    from anvyl.imaging.wheels import kernel_source_dir

    if kernel_source_dir() is None or not (shutil.which("cmake") and shutil.which("c++")):
        pytest.skip("this host cannot build the kernel (scripts/setup.sh installs cmake, c++)")
    code = (
        "import anvyl_kernels; from anvyl.modelserver.kernel import load_kernels;"
        "print(load_kernels() is not None, anvyl_kernels.simd())"
    )
    out = run(docker_client, modelserver_image, ["python", "-c", code], run_labels, **HARDENED)
    assert out.strip().splitlines()[-1].startswith("True ")
