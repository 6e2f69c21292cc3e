"""The root command: server down, debug, tokens, options, serve's own errors."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from fixtures_control_plane import ANVYL, Served, start_serve
from helpers import free_port

from anvyl.cli.address import Target, parse_address, resolve_target


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("ANVYL_DEBUG", "ANVYL_TOKEN")}
    return subprocess.run(
        [ANVYL, *args], env={**full, **(env or {})}, capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize(
    "args",
    [
        ("container", "list"),
        ("container", "logs", "x", "-f"),
        ("container", "exec", "x", "ps"),
        ("container", "stop", "x"),
        ("host", "list"),
        ("host", "metrics", "h-1"),
    ],
)
def test_server_down_is_one_line_and_exit_2(args: tuple[str, ...]) -> None:
    port = free_port()
    result = _run(*args, env={"ANVYL_ADDR": f"127.0.0.1:{port}", "COLUMNS": "40"})
    assert result.returncode == 2
    assert result.stderr == (
        f"cannot reach the Anvyl server at 127.0.0.1:{port} — start it with `anvyl serve`\n"
    )
    assert result.stdout == ""


def test_default_address_in_the_message() -> None:
    env = {k: v for k, v in os.environ.items() if k != "ANVYL_ADDR"}
    result = subprocess.run(
        [ANVYL, "host", "list", "-p", "1"], env=env, capture_output=True, text=True, timeout=30
    )
    assert "cannot reach the Anvyl server at localhost:1 —" in result.stderr


def test_debug_shows_the_traceback() -> None:
    result = _run(
        "host", "list", env={"ANVYL_ADDR": f"127.0.0.1:{free_port()}", "ANVYL_DEBUG": "1"}
    )
    assert result.returncode == 2 and "Traceback" in result.stderr


def test_dash_h_is_host_not_help() -> None:
    result = _run("container", "list", "-h", "127.0.0.1", "-p", str(free_port()))
    assert result.returncode == 2 and "cannot reach" in result.stderr
    assert _run("--help").returncode == 0
    assert _run("--version").stdout.startswith("anvyl ")
    completion = _run("--show-completion", "bash", env={"SHELL": "/bin/bash"})
    assert completion.returncode == 0 and "complete" in completion.stdout


def test_serve_refuses_non_loopback_without_token(tmp_path: Path) -> None:
    result = _run("serve", "--host", "0.0.0.0", "--port", "0", env={"ANVYL_HOME": str(tmp_path)})
    assert result.returncode == 1 and "requires an access token" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_port_in_use(served: Served) -> None:
    result = _run(
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(served.port),
        env={"ANVYL_HOME": str(served.home)},
    )
    assert result.returncode == 1 and "cannot listen" in result.stderr


def test_token(tmp_path: Path) -> None:
    secured = start_serve(tmp_path, env={"ANVYL_TOKEN": "tok-123"})
    try:
        addr = {"ANVYL_ADDR": secured.address}
        ok = _run("host", "list", "-o", "json", env={**addr, "ANVYL_TOKEN": "tok-123"})
        assert ok.returncode == 0 and json.loads(ok.stdout)["hosts"]
        missing = _run("host", "list", env=addr)
        assert missing.returncode == 1 and "access token is required" in missing.stderr
        wrong = _run("container", "list", env={**addr, "ANVYL_TOKEN": "nope"})
        assert wrong.returncode == 1 and "access token is wrong" in wrong.stderr
    finally:
        assert secured.stop() == 0


def test_address_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_address("") == Target("localhost", 50051)
    assert parse_address("box:7000") == Target("box", 7000)
    assert parse_address(":7000") == Target("localhost", 7000)
    assert parse_address("[::1]:7000").address == "[::1]:7000"
    for bad in ("box:port", "box:0", "[::1"):
        with pytest.raises(Exception, match="ANVYL_ADDR"):
            parse_address(bad)
    monkeypatch.setenv("ANVYL_ADDR", "env-host:6000")
    assert resolve_target() == Target("env-host", 6000)
    assert resolve_target("opt", None) == Target("opt", 6000)
    assert resolve_target(None, 7) == Target("env-host", 7)
