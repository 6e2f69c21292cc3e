"""Security checked from the outside: tokens, model API keys, file modes, hostile names, labels.

Names, ids and labels with shell metacharacters, `../` and very long values are refused or
carried literally (nothing goes through a shell: a marker file a shell would create never
appears). Only Anvyl-labelled containers can be stopped, exec'd into or read.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import ssl
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import grpc
import httpx
import pytest
from fixtures_control_plane import (
    ANVYL,
    MakeContainer,
    Served,
    health_status,
    start_serve,
)
from helpers import free_port, wait_for
from models_harness import (
    MODEL_ID,
    deployments,
    failed,
    make_home,
    model_containers,
    ok,
    serve_models,
    start_model,
    stop_all,
)

from anvyl.api import anvyl_pb2 as pb
from anvyl.api import anvyl_pb2_grpc as rpc

pytestmark = [pytest.mark.docker, pytest.mark.model]

MARKER = Path("/tmp") / f"anvyl-pwned-{uuid.uuid4().hex[:8]}"
SHELL = f"$(touch {MARKER});`touch {MARKER}`|touch {MARKER}&&touch {MARKER}"
API_KEY = f"k3y-{uuid.uuid4().hex}-$(touch${{IFS}}{MARKER});`id`|&<>"
HOSTILE_LABEL = f"anvyl.hostile=a b;{SHELL}'\"../../etc"


@pytest.fixture(scope="module")
def hostile_served(
    tmp_path_factory: pytest.TempPathFactory,
    bundled_model: Path,
    modelserver_image: str,
    run_labels: dict[str, str],
) -> Iterator[Served]:
    """`anvyl serve` with a label full of shell metacharacters, debug logs on."""
    home = make_home(tmp_path_factory.mktemp("anvyl-home"), bundled_model)
    server = serve_models(home, run_labels, args=("--label", HOSTILE_LABEL), ANVYL_DEBUG="1")
    yield server
    try:
        stop_all(server)
    finally:
        server.stop()


# -- the gRPC API off loopback --------------------------------------------------------------------


def test_non_loopback_without_token_refuses_to_start(tmp_path: Path) -> None:
    port = free_port()
    result = subprocess.run(
        [ANVYL, "serve", "--host", "0.0.0.0", "--port", str(port), "--dashboard-port", "0"],
        env={"PATH": "/usr/bin:/bin", "ANVYL_HOME": str(tmp_path / "home")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "token" in result.stderr and "Traceback" not in result.stderr


def test_token_required_and_compared(tmp_path: Path) -> None:
    token = f"t-{uuid.uuid4().hex}"
    server = start_serve(
        tmp_path / "home",
        args=("--dashboard-port", "0", "--token", token),
    )
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = rpc.HostServiceStub(channel)
            for metadata in ((), (("authorization", "Bearer wrong"),), (("authorization", token),)):
                with pytest.raises(grpc.RpcError) as caught:
                    stub.ListHosts(pb.ListHostsRequest(), metadata=metadata, timeout=30)
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            # A request that is not even a message is refused for the token first.
            raw = channel.unary_unary("/anvyl.v1.HostService/ListHosts")
            with pytest.raises(grpc.RpcError) as caught:
                raw(b"\xff\xff\xff\xff", timeout=30)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            good = (("authorization", f"Bearer {token}"),)
            assert stub.ListHosts(pb.ListHostsRequest(), metadata=good, timeout=30).hosts
        listed = server.cli("host", "list", env={"ANVYL_TOKEN": "wrong"})
        assert listed.returncode != 0 and "Traceback" not in listed.stderr
        ok(server.cli("host", "list", env={"ANVYL_TOKEN": token}))
    finally:
        server.stop()
    assert token not in server.proc.stderr.read()


# -- files ----------------------------------------------------------------------------------------


def test_home_is_private_and_database_0600(served: Served) -> None:
    home = served.home
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for db in home.glob("anvyl.db*"):
        assert stat.S_IMODE(db.stat().st_mode) == 0o600, db
    # The model folder stays readable by the containers' user (the model mount works).
    models = home / "models"
    assert stat.S_IMODE(models.stat().st_mode) & 0o005 == 0o005


def test_existing_home_is_tightened(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    db = home / "anvyl.db"
    sqlite3.connect(db).close()
    db.chmod(0o644)
    server = start_serve(home, args=("--dashboard-port", "0"))
    server.stop()
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


# -- hostile names, ids and labels ----------------------------------------------------------------

HOSTILE_NAMES = [SHELL, "../../etc/passwd", "a/../../b", "x" * 300, "-rf", "a\tb", "név"]


def test_hostile_names_refused(served: Served) -> None:
    port = str(free_port())
    for name in HOSTILE_NAMES:
        failed(start_model(served, MODEL_ID, "--name", name, "--port", port, "--detach"))
    for model_id in (SHELL, "../../etc", "..", "a" * 300, "/abs"):
        failed(served.cli("model", "start", model_id, "--port", port, "--detach"))
        failed(served.cli("model", "rm", model_id))
    for ref in (SHELL, "../..", "x" * 10_000):
        failed(served.cli("model", "stop", ref))
        failed(served.cli("container", "stop", ref))
        failed(served.cli("container", "logs", ref))
        failed(served.cli("container", "exec", ref, "--", "sh", "-c", f"touch {MARKER}"))
    failed(served.cli("model", "import", f"/tmp/{SHELL}.gguf"))
    failed(served.cli("container", "list", "--label", f"{SHELL}=1"))
    assert not MARKER.exists()
    assert deployments(served) == []
    assert (served.home / "models" / MODEL_ID).exists()


# -- model API key, labels carried literally ------------------------------------------------------


def test_model_api_key_and_literal_label(
    hostile_served: Served, docker_client: docker.DockerClient, run_labels: dict[str, str]
) -> None:
    port = free_port()
    started = start_model(
        hostile_served, MODEL_ID, "--name", "guarded", "--port", str(port), "--api-key", API_KEY
    )
    ok(started)
    assert API_KEY not in started.stdout + started.stderr
    base = f"http://127.0.0.1:{port}"
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    assert httpx.get(f"{base}/v1/models", timeout=30).status_code == 401
    assert httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60).status_code == 401
    wrong = {"Authorization": "Bearer not-the-key"}
    assert httpx.get(f"{base}/v1/models", headers=wrong, timeout=30).status_code == 401
    right = {"Authorization": f"Bearer {API_KEY}"}
    assert httpx.get(f"{base}/v1/models", headers=right, timeout=30).status_code == 200
    reply = httpx.post(f"{base}/v1/chat/completions", json=body, headers=right, timeout=120)
    assert reply.status_code == 200

    (container,) = model_containers(docker_client, run_labels)
    key, _, value = HOSTILE_LABEL.partition("=")
    assert container.labels[key] == value  # carried literally
    # The key is nowhere to be read: ps, -o json, logs, the container's config.
    ps = ok(hostile_served.cli("model", "ps"))
    ps_json = ok(hostile_served.cli("model", "ps", "-o", "json"))
    (deployment,) = json.loads(ps_json.stdout)["deployments"]
    assert deployment["state"] == "ready"
    logs = ok(hostile_served.cli("container", "logs", container.id))
    inspect = json.dumps(docker_client.api.inspect_container(container.id))
    for text in (ps.stdout, ps_json.stdout, logs.stdout, logs.stderr, inspect):
        assert API_KEY not in text
    ok(hostile_served.cli("model", "stop", "guarded", "--timeout", "5"))
    hostile_served.stop(signal.SIGTERM)
    server_log = hostile_served.proc.stderr.read() + hostile_served.proc.stdout.read()
    assert server_log and API_KEY not in server_log
    assert not MARKER.exists()


# -- only Anvyl's containers ----------------------------------------------------------------------


def test_only_anvyl_containers_are_touched(served: Served, make_container: MakeContainer) -> None:
    foreign = make_container(managed=False)
    for args in (
        ("container", "stop", foreign.name),
        ("container", "exec", foreign.name, "--", "echo", "hi"),
        ("container", "logs", foreign.name),
    ):
        result = served.cli(*args)
        assert result.returncode != 0 and "Traceback" not in result.stderr, args
    failed(served.cli("model", "stop", foreign.id))
    listed = json.loads(ok(served.cli("container", "list", "-a", "-o", "json")).stdout)
    assert foreign.id not in json.dumps(listed)
    foreign.reload()
    assert foreign.status == "running"


# -- TLS for the gRPC API -------------------------------------------------------------------------


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost / 127.0.0.1 and its key (openssl)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_tls_and_token(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    token = f"t-{uuid.uuid4().hex}"
    port = free_port()
    env = {**os.environ, "ANVYL_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(
        [ANVYL, "serve", "--host", "127.0.0.1", "--port", str(port), "--dashboard-port", "0",
         "--token", token, "--tls-cert", str(cert), "--tls-key", str(key)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    server = Served(proc=proc, port=port, home=tmp_path / "home")
    trusted = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    good = (("authorization", f"Bearer {token}"),)
    try:

        def answers() -> bool:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            with grpc.secure_channel(f"localhost:{port}", trusted) as channel:
                stub = rpc.HostServiceStub(channel)
                return bool(stub.ListHosts(pb.ListHostsRequest(), metadata=good, timeout=5))

        wait_for(answers, timeout=30, what="anvyl serve over TLS")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as plain:  # no TLS: no answer
            with pytest.raises(grpc.RpcError) as caught:
                rpc.HostServiceStub(plain).ListHosts(
                    pb.ListHostsRequest(), metadata=good, timeout=5
                )
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        with grpc.secure_channel(f"localhost:{port}", trusted) as channel:
            with pytest.raises(grpc.RpcError) as caught:
                rpc.HostServiceStub(channel).ListHosts(pb.ListHostsRequest(), timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        cli = {"ANVYL_ADDR": f"localhost:{port}", "ANVYL_TLS_CA": str(cert)}
        ok(server.cli("model", "list", env={**cli, "ANVYL_TOKEN": token}))
        assert server.cli("model", "list", env={**cli, "ANVYL_TOKEN": "wrong"}).returncode != 0
    finally:
        server.stop()


def test_tls_covers_the_dashboard_and_the_gateway(tmp_path: Path) -> None:
    """With --tls-cert/--tls-key the HTTP doors speak HTTPS with the same certificate."""
    cert, key = self_signed(tmp_path)
    token = f"t-{uuid.uuid4().hex}"
    port, dash, gate = free_port(), free_port(), free_port()
    proc = subprocess.Popen(
        [ANVYL, "serve", "--host", "127.0.0.1", "--port", str(port), "--token", token,
         "--tls-cert", str(cert), "--tls-key", str(key),
         "--dashboard-port", str(dash), "--gateway-port", str(gate)],
        env={**os.environ, "ANVYL_HOME": str(tmp_path / "home")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    server = Served(proc=proc, port=port, home=tmp_path / "home")
    bearer = {"Authorization": f"Bearer {token}"}
    try:
        trusted = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(verify=trusted, timeout=5, headers=bearer) as https:

            def answers() -> bool:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                return https.get(f"https://localhost:{gate}/v1/models").status_code == 200

            wait_for(answers, timeout=30, what="the gateway over TLS")
            assert https.get(f"https://localhost:{dash}/api/models").status_code == 200
        for door in (dash, gate):  # plain HTTP gets no answer
            with pytest.raises(httpx.HTTPError):
                httpx.get(f"http://127.0.0.1:{door}/", timeout=5)
    finally:
        server.stop()


def test_cleartext_token_off_loopback_is_warned(tmp_path: Path) -> None:
    server = start_serve(
        tmp_path / "home",
        args=("--dashboard-port", "0", "--token", "t0ken-" + uuid.uuid4().hex),
        command=(ANVYL,),
    )
    server.stop()
    # start_serve binds 127.0.0.1: no warning there; off loopback the server says so.
    assert "travels in cleartext" not in server.proc.stderr.read()
    port = free_port()
    proc = subprocess.Popen(
        [ANVYL, "serve", "--host", "0.0.0.0", "--port", str(port), "--dashboard-port", "0",
         "--token", "t0ken-" + uuid.uuid4().hex],
        env={**os.environ, "ANVYL_HOME": str(tmp_path / "home2")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: health_status(f"127.0.0.1:{port}") == 1, timeout=30, what="serve")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert "travels in cleartext" in err and "--tls-cert" in err
