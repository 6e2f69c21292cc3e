"""The dashboard's HTTP API against a real `anvyl serve` and a real model: errors, SSE, the proxy.

One model is started through the API (the first test follows its progress stream) and shared
by the rest of the module; the last test stops it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import docker
import httpx
import pytest
from dashboard_harness import Dashboard, model_containers
from helpers import free_port, wait_for
from models_harness import MODEL_ID

NAME = "http-model"


def read_events(
    response: httpx.Response, *, until: str, limit: int = 1000
) -> list[tuple[str, Any]]:
    """Server-sent events of a streamed response, up to and including the first `until` event."""
    events: list[tuple[str, Any]] = []
    name, data = "message", []
    for line in response.iter_lines():
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            payload = "\n".join(data)
            events.append((name, payload if payload == "[DONE]" else json.loads(payload)))
            if name == until or payload == until or len(events) >= limit:
                return events
            name, data = "message", []
    return events


def assert_nothing_created(
    dash: Dashboard, client: docker.DockerClient, run_labels: dict[str, str], running: int = 0
) -> None:
    """The API lists `running` deployments and the engine holds as many model containers."""
    with dash.http() as http:
        assert len(http.get("/api/models").json()["deployments"]) == running
    assert len(model_containers(client, dash, run_labels)) == running


@pytest.fixture(scope="module")
def started(dashboard: Dashboard) -> Iterator[dict[str, Any]]:
    """Start the module's model through the API; the progress events it streamed, and its port."""
    port = free_port()
    with dashboard.http() as http:
        response = http.post(
            "/api/models", json={"model_id": MODEL_ID, "name": NAME, "port": port, "memory": "2g"}
        )
        assert response.status_code == 202, response.text
        job = response.json()
        with http.stream("GET", job["events"], timeout=300) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = read_events(stream, until="ready")
        # The listing is the sampler's latest look, taken just after the start: wait for it.
        wait_for(
            lambda: [d["name"] for d in http.get("/api/models").json()["deployments"]] == [NAME],
            timeout=30,
            what="the models listing to show the started deployment",
        )
    yield {"port": port, "events": events, "job": job}


def test_start_streams_its_progress_until_ready(started: dict[str, Any]) -> None:
    names = [name for name, _ in started["events"]]
    phases = [data["phase"] for name, data in started["events"] if name == "progress"]
    assert names[-1] == "ready", started["events"]
    assert phases[0] == "resolving"
    assert {"creating", "loading", "ready"} <= set(phases)
    deployment = started["events"][-1][1]
    assert deployment["name"] == NAME
    assert deployment["state"] == "ready"
    assert deployment["url"] == f"http://localhost:{started['port']}"


@pytest.mark.parametrize(
    ("body", "status", "code", "text"),
    [
        ({"memory": "lots"}, 400, "INVALID_ARGUMENT", "invalid memory limit 'lots'"),
        ({"memory": "10m"}, 412, "FAILED_PRECONDITION", "is less than"),
        ({"model_id": "no-such-model"}, 404, "NOT_FOUND", "no-such-model"),
        ({"name": "bad name!"}, 400, "INVALID_ARGUMENT", "bad name!"),
        ({"port": 70000}, 400, "INVALID_ARGUMENT", "invalid port 70000"),
        ({"port": "eighty"}, 400, "INVALID_ARGUMENT", "port"),
        ({"colour": "red"}, 400, "INVALID_ARGUMENT", "colour"),
    ],
)
def test_refused_starts_map_to_http_statuses_and_create_nothing(
    dashboard: Dashboard,
    started: dict[str, Any],
    docker_client: docker.DockerClient,
    run_labels: dict[str, str],
    body: dict[str, Any],
    status: int,
    code: str,
    text: str,
) -> None:
    request = {"model_id": MODEL_ID, "port": free_port(), **body}
    with dashboard.http() as http:
        response = http.post("/api/models", json=request)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["status"] == status
    assert error["code"] == code
    assert text in error["message"]
    assert_nothing_created(dashboard, docker_client, run_labels, running=1)


def test_a_taken_port_or_name_is_a_conflict(
    dashboard: Dashboard,
    started: dict[str, Any],
    docker_client: docker.DockerClient,
    run_labels: dict[str, str],
) -> None:
    with dashboard.http() as http:
        port = http.post("/api/models", json={"model_id": MODEL_ID, "port": started["port"]})
        name = http.post(
            "/api/models", json={"model_id": MODEL_ID, "name": NAME, "port": free_port()}
        )
    assert port.status_code == 409, port.text
    assert str(started["port"]) in port.json()["error"]["message"]
    assert name.status_code == 409, name.text
    assert_nothing_created(dashboard, docker_client, run_labels, running=1)


def test_models_stream_sends_snapshots_with_chart_series(
    dashboard: Dashboard, started: dict[str, Any]
) -> None:
    with dashboard.http() as http, http.stream("GET", "/api/events/models") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        (first, second) = read_events(stream, until="", limit=2)
    assert first[0] == second[0] == "models"
    assert second[1]["version"] > first[1]["version"]
    (deployment,) = second[1]["deployments"]
    assert deployment["name"] == NAME
    assert deployment["state"] == "ready"
    assert deployment["series"]["tokens_per_second"]
    assert [h["state"] for h in deployment["health"]][-1] == "ready"


def test_hosts_stream_and_detail(dashboard: Dashboard, started: dict[str, Any]) -> None:
    with dashboard.http() as http:
        with http.stream("GET", "/api/events/hosts") as stream:
            ((name, data),) = read_events(stream, until="hosts")
        detail = http.get(f"/api/models/{NAME}").json()
        missing = http.get("/api/models/nothing-here")
    assert name == "hosts"
    (host,) = data["hosts"]
    assert host["reachable"] and host["local"]
    assert host["metrics"]["memory_total_bytes"] > 0
    assert NAME in host["models"]
    assert detail["labels"]["anvyl.managed"] == "true"
    assert detail["labels"]["anvyl.model.id"] == MODEL_ID
    assert missing.status_code == 404
    assert "nothing-here" in missing.json()["error"]["message"]


def test_log_stream_follows_the_container(
    dashboard: Dashboard,
    started: dict[str, Any],
    docker_client: docker.DockerClient,
    run_labels: dict[str, str],
) -> None:
    (container,) = model_containers(docker_client, dashboard, run_labels)
    lines: list[str] = []
    connected = threading.Event()

    def follow() -> None:
        with dashboard.http() as http, http.stream("GET", f"/api/models/{NAME}/logs?tail=0") as s:
            assert s.headers["content-type"].startswith("text/event-stream")
            connected.set()
            for name, data in read_events(s, until="line"):
                lines.append(f"{name}:{data}")

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    assert connected.wait(10)

    def write() -> bool:
        container.exec_run(["sh", "-c", "echo http-log-line > /proc/1/fd/1"])
        reader.join(timeout=0.5)
        return not reader.is_alive()

    wait_for(write, timeout=20, what="the log line to arrive")
    assert "line:http-log-line" in lines
    with dashboard.http() as http:
        assert http.get(f"/api/models/{NAME}/logs?tail=-1").status_code == 400


def test_chat_is_proxied_as_a_token_stream(dashboard: Dashboard, started: dict[str, Any]) -> None:
    body = {
        "deployment": NAME,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 24,
        "temperature": 0,
    }
    with dashboard.http() as http, http.stream("POST", "/api/chat", json=body) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = read_events(stream, until="[DONE]")
    assert events[-1][1] == "[DONE]"
    pieces = [
        e[1]["choices"][0]["delta"].get("content", "")
        for e in events[:-1]
        if e[1].get("choices") and e[1]["choices"][0].get("delta")
    ]
    assert len([p for p in pieces if p]) > 1, "the answer was not streamed in pieces"
    assert "".join(pieces).strip()


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        ({"deployment": "nobody", "messages": [{"role": "user", "content": "hi"}]}, 404, "nobody"),
        ({"deployment": NAME, "messages": []}, 400, "messages"),
        ({"deployment": NAME, "messages": [{"role": "robot", "content": "x"}]}, 400, "role"),
        (
            {"deployment": NAME, "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
            400,
            "max_tokens",
        ),
    ],
)
def test_chat_errors(
    dashboard: Dashboard, started: dict[str, Any], body: dict[str, Any], status: int, text: str
) -> None:
    with dashboard.http() as http:
        response = http.post("/api/chat", json=body)
    assert response.status_code == status, response.text
    assert text in response.json()["error"]["message"]


def test_requests_from_other_sites_are_refused(
    dashboard: Dashboard,
    started: dict[str, Any],
    docker_client: docker.DockerClient,
    run_labels: dict[str, str],
) -> None:
    with dashboard.http() as http:
        rebinding = http.get("/api/models", headers={"Host": "evil.example"})
        cross_site = http.delete(f"/api/models/{NAME}", headers={"Origin": "http://evil.example"})
        other_port = http.post(
            "/api/models",
            json={"model_id": MODEL_ID, "port": free_port()},
            headers={"Origin": "http://127.0.0.1:1"},
        )
    assert rebinding.status_code == 400
    assert cross_site.status_code == 403
    assert other_port.status_code == 403
    assert_nothing_created(dashboard, docker_client, run_labels, running=1)


def test_stop_removes_the_container(
    dashboard: Dashboard,
    started: dict[str, Any],
    docker_client: docker.DockerClient,
    run_labels: dict[str, str],
) -> None:
    with dashboard.http() as http:
        stopped = http.delete(f"/api/models/{NAME}", timeout=60)
        again = http.delete(f"/api/models/{NAME}")
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["state"] == "stopped"
    assert again.status_code == 404
    assert_nothing_created(dashboard, docker_client, run_labels, running=0)
