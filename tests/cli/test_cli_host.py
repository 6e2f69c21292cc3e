"""`anvyl host …` against a real `anvyl serve`, with the engine up and down."""

from __future__ import annotations

import json
from pathlib import Path

from fixtures_control_plane import MakeContainer, Served, start_serve

HOST_KEYS = [
    "id",
    "name",
    "address",
    "status",
    "status_reason",
    "cpus",
    "memory_bytes",
    "engine_version",
    "running_containers",
    "local",
    "created_at",
    "runtime",
]


def test_host_list(served: Served) -> None:
    table = served.cli("host", "list")
    assert table.returncode == 0 and "reachable" in table.stdout, table.stderr
    (host,) = json.loads(served.cli("host", "list", "-o", "json").stdout)["hosts"]
    assert list(host) == HOST_KEYS
    assert host["status"] == "reachable" and host["local"] and host["cpus"] > 0
    assert host["id"] in table.stdout


def test_host_metrics(served: Served, make_container: MakeContainer) -> None:
    c = make_container()
    (host,) = json.loads(served.cli("host", "list", "-o", "json").stdout)["hosts"]
    data = json.loads(served.cli("host", "metrics", host["id"], "-o", "json").stdout)
    assert data["host_id"] == host["id"] and data["cpu_count"] > 0 and len(data["load"]) == 3
    assert c.id in [x["id"] for x in data["containers"]]
    table = served.cli("host", "metrics", host["name"])
    assert table.returncode == 0 and "CPU" in table.stdout and c.name in table.stdout
    bad = served.cli("host", "metrics", "h-nope")
    assert bad.returncode == 1 and "no host" in bad.stderr and "Traceback" not in bad.stderr


def test_engine_down(tmp_path: Path) -> None:
    down = start_serve(tmp_path, env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    try:
        table = down.cli("host", "list")
        assert table.returncode == 0 and "unreachable" in table.stdout
        (host,) = json.loads(down.cli("host", "list", "-o", "json").stdout)["hosts"]
        assert host["status"] == "unreachable" and "nonexistent.sock" in host["status_reason"]
        for args in (
            ("container", "list"),
            ("container", "stop", "abc"),
            ("host", "metrics", host["id"]),
        ):
            result = down.cli(*args)
            assert result.returncode == 1, args
            assert "unreachable" in result.stderr and "cannot reach the Anvyl" not in result.stderr
    finally:
        assert down.stop() == 0
