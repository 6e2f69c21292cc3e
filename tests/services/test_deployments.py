"""The deployment service driven through a fake runtime (as httpx tests swap in a transport).

The fake runs a tiny real HTTP server for `/health` and `/metrics`, so the service's own probe
is exercised as it is against a model server; everything else is the service's logic: rows,
phases, refusing options a runtime cannot honour, a failed start cleaned up with its reason.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import free_port

from anvyl.errors import FailedPrecondition, InvalidArgument, NotFound
from anvyl.runtime import Engines
from anvyl.runtime.base import (
    STATUS_EXITED,
    STATUS_GONE,
    STATUS_RUNNING,
    Capabilities,
    DeploymentRuntime,
    Handle,
    LaunchSpec,
    LogStream,
    Observation,
    Orphan,
)
from anvyl.services.deployments.options import StartOptions
from anvyl.services.deployments.service import Deployments
from anvyl.services.hosts import Hosts
from anvyl.store import Store

MODEL_ID = "smollm2-135m-instruct-mlx"


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"anvyl_generated_tokens_total 7\n" if self.path == "/metrics" else b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


class FakeRuntime(DeploymentRuntime):
    """Starts an HTTP server per deployment, or fails the start when told to."""

    kind = "container"

    def __init__(self, *, fail: bool = False, caps: Capabilities | None = None) -> None:
        self.fail = fail
        self.caps = caps or Capabilities(kind="container")
        self.servers: dict[str, ThreadingHTTPServer] = {}
        self.discarded: list[str] = []
        self.stopped: list[str] = []
        self.launched: list[LaunchSpec] = []

    def capabilities(self) -> Capabilities:
        return self.caps

    def prepare(self, say: Callable[[str], None]) -> str:
        return "fake:1"

    def check_free(self, name: str, bind: str, port: int) -> None:
        pass

    def start(self, spec: LaunchSpec) -> Handle:
        self.launched.append(spec)
        if not self.fail:
            server = ThreadingHTTPServer((spec.bind, spec.port), _Health)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self.servers[spec.deployment_id] = server
        return Handle(ref=f"fake-{spec.deployment_id}", data={"x": 1})

    def observe(self, handles: list[Handle]) -> list[Observation]:
        seen = []
        for h in handles:
            if self.fail:
                seen.append(Observation(STATUS_EXITED, "exited with code 3"))
            elif h.data["deployment"] in self.servers:
                seen.append(Observation(STATUS_RUNNING, name="fake"))
            else:
                seen.append(Observation(STATUS_GONE, "gone"))
        return seen

    def log_tail(self, handle: Handle, lines: int = 20) -> str:
        return "boom: cannot load"

    def logs(self, handle: Handle, *, follow: bool, tail: int | None) -> LogStream:
        raise NotImplementedError

    def apply_restart(self, handle: Handle, restart: str) -> None:
        pass

    def stop(self, handle: Handle, timeout: float) -> None:
        self.stopped.append(handle.ref)
        server = self.servers.pop(handle.data["deployment"])
        server.shutdown()
        server.server_close()

    def discard(self, deployment_id: str) -> None:
        self.discarded.append(deployment_id)

    def orphans(self, controller_id: str) -> list[Orphan]:
        return []


def service(store: Store, home: Path, fake: FakeRuntime) -> Deployments:
    return Deployments(
        store, Hosts(store, Engines()), home=home, runtimes={"container": lambda _h: fake}
    )


def test_start_ps_stop(store: Store, home: Path) -> None:
    fake = FakeRuntime()
    deployments = service(store, home, fake)
    phases: list[str] = []
    port = free_port()
    view = deployments.start(
        StartOptions(MODEL_ID, name="one", port=port), lambda phase, _m: phases.append(phase)
    )
    assert view.state == "ready" and view.url == f"http://localhost:{port}"
    assert view.record.container_id.startswith("fake-") and view.runtime == "container"
    assert phases == ["resolving", "creating", "loading", "ready"]
    (listed,) = deployments.list()
    assert listed.state == "ready" and listed.generated_tokens_total == 7
    assert deployments.find("one").id == view.record.id
    stopped = deployments.stop("one", timeout=1)
    assert stopped.state == "stopped" and fake.stopped == [view.record.container_id]
    assert deployments.list() == []
    with pytest.raises(NotFound):
        deployments.find("one")


def test_failed_start_reports_why_and_leaves_nothing(store: Store, home: Path) -> None:
    fake = FakeRuntime(fail=True)
    deployments = service(store, home, fake)
    with pytest.raises(FailedPrecondition) as caught:
        deployments.start(StartOptions(MODEL_ID, name="bad", port=free_port(), api_key="k"))
    assert "bad failed while loading: exited with code 3" in caught.value.message
    assert "boom: cannot load" in caught.value.message
    assert deployments.list() == [] and len(fake.discarded) == 1
    assert not (home / "secrets" / fake.discarded[0]).exists()


def test_unsupported_options_are_refused_at_the_edge(store: Store, home: Path) -> None:
    caps = Capabilities(kind="container", cpus=False, startup_script=False)
    fake = FakeRuntime(caps=caps)
    deployments = service(store, home, fake)
    with pytest.raises(InvalidArgument, match="--cpus"):
        deployments.start(StartOptions(MODEL_ID, port=free_port(), cpus=1.0))
    with pytest.raises(InvalidArgument, match="--runtime"):
        deployments.start(StartOptions(MODEL_ID, port=free_port(), runtime="vm"))
    assert deployments.list() == [] and not fake.servers


def test_allowed_origins_reach_the_runtime_normalised(store: Store, home: Path) -> None:
    """`--allow-origin` values as browsers send them; a malformed one changes nothing."""
    fake = FakeRuntime()
    deployments = service(store, home, fake)
    with pytest.raises(InvalidArgument, match="--allow-origin"):
        deployments.start(StartOptions(MODEL_ID, port=free_port(), allow_origins=("a.example",)))
    assert deployments.list() == [] and not fake.launched
    origins = ("HTTPS://App.Example:443/", "http://localhost:5173")
    deployments.start(StartOptions(MODEL_ID, name="web", port=free_port(), allow_origins=origins))
    assert fake.launched[0].allow_origins == ("http://localhost:5173", "https://app.example")
    deployments.stop("web", timeout=1)


def test_reads_never_write(store: Store, home: Path) -> None:
    fake = FakeRuntime()
    deployments = service(store, home, fake)
    deployments.start(StartOptions(MODEL_ID, name="d", port=free_port(), detach=True))
    before = store.query("SELECT * FROM deployments")
    deployments.list()
    deployments.find("d")
    assert [tuple(r) for r in store.query("SELECT * FROM deployments")] == [
        tuple(r) for r in before
    ]
    deployments.reconcile()  # the writer: the detached start is ready now
    (row,) = store.query("SELECT state FROM deployments")
    assert row["state"] == "ready"
    deployments.stop("d", timeout=1)
