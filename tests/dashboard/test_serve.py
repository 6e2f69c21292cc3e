"""`anvyl serve` and its dashboard: the token off loopback, the port options, clean shutdown."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest
from dashboard_harness import Dashboard, serve_dashboard, shut_down
from fixtures_control_plane import ANVYL, start_serve
from helpers import free_port

TOKEN = "dashboard-secret"


@pytest.fixture(scope="module")
def guarded(
    tmp_path_factory: pytest.TempPathFactory,
    docker_client: docker.DockerClient,
    run_labels: dict[str, str],
) -> Iterator[Dashboard]:
    """A dashboard listening on every address, so behind the access token (no model)."""
    dash = serve_dashboard(
        tmp_path_factory.mktemp("anvyl-home"), run_labels, token=TOKEN, dashboard_host="0.0.0.0"
    )
    yield dash
    shut_down(dash, docker_client, run_labels)


def test_off_loopback_every_api_call_needs_the_token(guarded: Dashboard) -> None:
    with httpx.Client(base_url=guarded.url) as anonymous:
        refused = anonymous.get("/api/models")
        wrong = anonymous.get("/api/models", headers={"Authorization": "Bearer nope"})
        stream = anonymous.get("/api/events/models")
        static = anonymous.get("/static/style.css")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert "access token" in refused.json()["error"]["message"]
    assert wrong.status_code == 401
    assert stream.status_code == 401
    assert static.status_code == 200
    with guarded.http() as http:
        assert http.get("/api/models").json()["deployments"] == []


def test_pages_send_visitors_to_the_login_form(guarded: Dashboard) -> None:
    with httpx.Client(base_url=guarded.url) as browser:
        page = browser.get("/models/x?tab=log")
        form = browser.get(page.headers["location"])
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Fmodels%2Fx%3Ftab%3Dlog"
    assert form.status_code == 200
    assert 'name="token"' in form.text
    assert 'value="/models/x?tab=log"' in form.text


def test_login_sets_an_http_only_cookie_that_opens_the_api(guarded: Dashboard) -> None:
    with httpx.Client(base_url=guarded.url) as browser:
        wrong = browser.post("/login", data={"token": "nope", "next": "/hosts"})
        foreign = browser.post("/login", data={"token": TOKEN, "next": "//evil.example/"})
        assert foreign.headers["location"] == "/"
        browser.cookies.clear()
        right = browser.post("/login", data={"token": TOKEN, "next": "/hosts"})
        cookie = right.headers["set-cookie"]
        api = browser.get("/api/models")
        browser.post("/logout")
        after = browser.get("/api/models")
    assert wrong.status_code == 401
    assert "not right" in wrong.text
    assert right.status_code == 303
    assert right.headers["location"] == "/hosts"
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert TOKEN not in cookie
    assert api.status_code == 200
    assert after.status_code == 401


def test_off_loopback_without_a_token_is_refused(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ANVYL_TOKEN"}
    result = subprocess.run(
        [ANVYL, "serve", "--host", "127.0.0.1", "--port", "0", "--dashboard-host", "0.0.0.0"],
        env={**env, "ANVYL_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "requires an access token" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_explicit_port_that_is_taken_is_an_error(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(
            [ANVYL, "serve", "--host", "127.0.0.1", "--port", "0", "--dashboard-port", str(port)],
            env={**os.environ, "ANVYL_HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "--dashboard-port" in result.stderr


def test_port_zero_turns_the_dashboard_off(tmp_path: Path) -> None:
    served = start_serve(tmp_path, args=["--dashboard-port", "0"])
    try:
        time.sleep(0.5)
    finally:
        served.stop()
    assert "dashboard on" not in served.proc.stderr.read()


def test_shutdown_is_prompt_with_event_streams_open(tmp_path: Path) -> None:
    port = free_port()
    served = start_serve(tmp_path, args=["--dashboard-port", str(port)])
    url = f"http://127.0.0.1:{port}"
    opened = threading.Event()

    def watch() -> None:
        try:
            with httpx.stream("GET", f"{url}/api/events/models", timeout=30) as stream:
                opened.set()
                for _ in stream.iter_lines():
                    pass
        except httpx.HTTPError:
            pass

    watchers = [threading.Thread(target=watch, daemon=True) for _ in range(3)]
    for watcher in watchers:
        watcher.start()
    assert opened.wait(15)
    started = time.monotonic()
    code = served.stop(signal.SIGTERM, timeout=20)
    elapsed = time.monotonic() - started
    assert code == 0, served.proc.stderr.read()
    assert elapsed < 10, f"shutdown took {elapsed:.1f} s"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/static/style.css", timeout=2)
