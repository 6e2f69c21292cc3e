"""Fixtures shared by every test area.

Everything a test creates on the Docker engine carries the label `anvyl.test=<run id>`; the
session removes all of it at the end, even when tests fail.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import tarfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import docker
import pytest
from helpers import imaging_cache_dir, test_cache_dir

RUN_ID = uuid.uuid4().hex[:12]
TEST_LABEL = "anvyl.test"
BUSYBOX_IMAGE = "anvyl-test/busybox:1"
BUSYBOX_APPLETS = ("sh", "sleep", "echo", "cat", "ps", "httpd", "nc", "ls", "env", "true", "false")


@pytest.fixture(scope="session")
def run_labels() -> dict[str, str]:
    """Labels to put on everything a test creates on the engine."""
    return {TEST_LABEL: RUN_ID}


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """A client of the real local engine; fails the test clearly when none answers."""
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"no Docker engine answers ({exc}); run the tests through scripts/test.sh")
    yield client
    _remove_labelled(client)
    client.close()


def _remove_labelled(client: docker.DockerClient) -> None:
    flt = {"label": f"{TEST_LABEL}={RUN_ID}"}
    for container in client.containers.list(all=True, filters=flt):
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True, v=True)
    swarm = (client.info().get("Swarm") or {}).get("ControlAvailable")
    if swarm:  # on a Swarm manager, deployments are services (with secrets)
        for service in client.services.list(filters=flt):
            with contextlib.suppress(docker.errors.APIError):
                service.remove()
        for secret in client.secrets.list(filters=flt):
            with contextlib.suppress(docker.errors.APIError):
                secret.remove()
    for network in client.networks.list(filters=flt):
        with contextlib.suppress(docker.errors.APIError):
            network.remove()


@pytest.fixture(scope="session")
def busybox_image(docker_client: docker.DockerClient) -> str:
    """A tiny local image (static busybox, made with `docker import`; no registry needed)."""
    try:
        docker_client.images.get(BUSYBOX_IMAGE)
        return BUSYBOX_IMAGE
    except docker.errors.ImageNotFound:
        pass
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.fail("busybox is not installed (apt-get install busybox-static)")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "tmp", "proc", "sys", "dev", "etc"):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add(busybox, arcname="bin/busybox")
        for applet in BUSYBOX_APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            tar.addfile(info)
    repo, tag = BUSYBOX_IMAGE.split(":")
    docker_client.api.import_image_from_data(
        buf.getvalue(), repository=repo, tag=tag, changes=['CMD ["/bin/sh"]']
    )
    return BUSYBOX_IMAGE


@pytest.fixture
def make_container(
    docker_client: docker.DockerClient, busybox_image: str, run_labels: dict[str, str]
) -> Iterator[Callable[..., Any]]:
    """Start labelled busybox containers (Anvyl-managed unless managed=False); removed after."""
    created: list[docker.models.containers.Container] = []

    def make(
        command: Sequence[str] = ("sleep", "300"),
        *,
        managed: bool = True,
        labels: dict[str, str] | None = None,
        name: str | None = None,
    ) -> docker.models.containers.Container:
        all_labels = {**run_labels, **(labels or {})}
        if managed:
            all_labels["anvyl.managed"] = "true"
        container = docker_client.containers.run(
            busybox_image,
            list(command),
            detach=True,
            labels=all_labels,
            name=name or f"anvyl-test-{uuid.uuid4().hex[:10]}",
        )
        created.append(container)
        return container

    yield make
    for container in created:
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)


@pytest.fixture(scope="session")
def bundled_model() -> Path:
    """The bundled SmolLM2-135M-Instruct, converted to an MLX directory (cached between runs)."""
    from anvyl.catalog.bundled import ensure_bundled_model

    return ensure_bundled_model(test_cache_dir() / "home")


@pytest.fixture(scope="session")
def modelserver_image(docker_client: docker.DockerClient, run_labels: dict[str, str]) -> str:
    """`anvyl/modelserver:<version>`, built from a debootstrap base or reused by content hash."""
    from anvyl.imaging import DEBIAN_BOOTSTRAP
    from anvyl.runtime.images import ensure_image

    return ensure_image(
        docker_client,
        cache_dir=imaging_cache_dir(),
        base_image=DEBIAN_BOOTSTRAP,
        container_labels=run_labels,
    )


@pytest.fixture(scope="module")
def model_home(tmp_path_factory: pytest.TempPathFactory, bundled_model: Path) -> Path:
    """A temporary ANVYL_HOME holding (a link to) the bundled model, one per module."""
    from models_harness import make_home

    return make_home(tmp_path_factory.mktemp("anvyl-home"), bundled_model)


@pytest.fixture(scope="module")
def model_served(
    model_home: Path, modelserver_image: str, run_labels: dict[str, str]
) -> Iterator[Any]:
    """One `anvyl serve` per module labelling its model containers; deployments stopped after."""
    from models_harness import serve_models, stop_all

    server = serve_models(model_home, run_labels)
    yield server
    try:
        stop_all(server)
    finally:
        server.stop()


@pytest.fixture
def fresh_home(tmp_path: Path, bundled_model: Path) -> Path:
    """An ANVYL_HOME of the test's own linking the bundled model (for restarts and faults)."""
    from models_harness import make_home

    return make_home(tmp_path / "home", bundled_model)


@pytest.fixture
def servers(run_labels: dict[str, str], modelserver_image: str) -> Iterator[Any]:
    """Start `anvyl serve` on homes of the test's own (`servers.start(home)`); all stopped after."""
    from models_harness import Servers

    with Servers(run_labels) as started:
        yield started


@pytest.fixture(scope="session")
def _engine_or_none() -> Iterator[docker.DockerClient | None]:
    """A client of the shared engine when one answers (unit tests run without one)."""
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except docker.errors.DockerException:
        yield None
        return
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _engine_stays_out_of_swarm(_engine_or_none: docker.DockerClient | None) -> Iterator[None]:
    """Fail the test that turns the shared engine into a Swarm manager, and undo it.

    On a Swarm manager every later `model start` becomes a Swarm service: one stray
    `swarm init` breaks the rest of the run in confusing ways.
    """
    client = _engine_or_none
    before = _swarm_state(client) if client is not None else "unknown"
    yield
    if before == "inactive" and _swarm_state(client) != "inactive":
        client.swarm.leave(force=True)
        pytest.fail("this test made the shared Docker engine join a Swarm (undone)")


def _swarm_state(client: docker.DockerClient) -> str:
    return str((client.info().get("Swarm") or {}).get("LocalNodeState") or "inactive")


_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remember the result for `pytest_unconfigure`."""
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave without C++ static destructors once pytest has reported everything.

    Tests run MLX in this process; its worker threads can still be joinable at interpreter
    teardown, which aborts or segfaults the process (exit 134/139) after a passing run.
    """
    if _EXIT_STATUS:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Any]:
    """A store whose local host has no engine (fakes of the runtimes need none)."""
    from anvyl.store import Store
    from anvyl.store import hosts as host_table

    db = Store(tmp_path / "anvyl.db")
    host_table.ensure_local_host(db, address="fake://local")
    yield db
    db.close()
