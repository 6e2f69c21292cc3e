"""`anvyl container …` as a user runs it, against a real `anvyl serve`."""

from __future__ import annotations

import json
import signal
import subprocess

from fixtures_control_plane import ANVYL, MakeContainer, Served
from helpers import wait_for

CONTAINER_KEYS = [
    "id",
    "name",
    "image",
    "state",
    "status",
    "host_id",
    "created_at",
    "labels",
    "ports",
]


def _one_line_error(result: subprocess.CompletedProcess[str], text: str) -> None:
    assert result.returncode == 1, result
    assert result.stderr.count("\n") == 1 and text in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_list_table_and_json(
    served: Served, make_container: MakeContainer, run_labels: dict[str, str]
) -> None:
    mine = f"anvyl.test={run_labels['anvyl.test']}"
    web = make_container(labels={"role": "cli-web"})
    foreign = make_container(managed=False, labels={"role": "cli-web"})

    table = served.cli("container", "list", "--label", mine)
    assert table.returncode == 0, table.stderr
    assert "CONTAINER ID" in table.stdout and web.name in table.stdout
    assert web.id[:12] in table.stdout and foreign.name not in table.stdout

    result = served.cli("container", "list", "-o", "json", "-l", mine, "--label", "role=cli-web")
    data = json.loads(result.stdout)
    assert list(data) == ["containers"]
    (row,) = data["containers"]
    assert list(row) == CONTAINER_KEYS
    assert row["id"] == web.id and row["state"] == "running" and row["ports"] == []
    assert row["labels"]["role"] == "cli-web" and row["created_at"].endswith("Z")

    stopped = make_container(["true"], labels={"role": "cli-done"})
    wait_for(lambda: stopped.reload() or stopped.status == "exited")
    running_only = served.cli("container", "list", "-o", "json", "-l", "role=cli-done")
    assert json.loads(running_only.stdout)["containers"] == []
    with_all = served.cli("container", "list", "--all", "-o", "json", "-l", "role=cli-done")
    assert [c["name"] for c in json.loads(with_all.stdout)["containers"]] == [stopped.name]


def test_list_bad_input(served: Served) -> None:
    _one_line_error(served.cli("container", "list", "--label", "=x"), "bad label filter")
    _one_line_error(served.cli("container", "list", "--host-id", "h-nope"), "no host")
    bad_output = served.cli("container", "list", "-o", "yaml")
    assert bad_output.returncode == 2 and "yaml" in bad_output.stderr


def test_host_and_port_options_win_over_anvyl_addr(served: Served) -> None:
    env = {"ANVYL_ADDR": "127.0.0.1:1"}
    for args in (
        ("-h", "127.0.0.1", "-p", str(served.port)),
        ("--anvyl-host", "127.0.0.1", "--anvyl-port", str(served.port)),
    ):
        result = served.cli("container", "list", *args, env=env)
        assert result.returncode == 0, result.stderr


def test_logs(served: Served, make_container: MakeContainer) -> None:
    c = make_container(["sh", "-c", "echo alpha; echo beta; exec sleep 300"])
    wait_for(lambda: served.cli("container", "logs", c.name).stdout == "alpha\nbeta\n")
    assert served.cli("container", "logs", c.id[:12], "--tail", "1").stdout == "beta\n"
    assert served.cli("container", "logs", c.name, "--tail", "all").stdout == "alpha\nbeta\n"
    for bad in ("-1", "abc", "1.5"):
        result = served.cli("container", "logs", c.name, "--tail", bad)
        assert result.returncode == 2 and "line count" in result.stderr, result.stderr
    _one_line_error(served.cli("container", "logs", "no-such-ctr-zz"), "no container")


def test_follow_ends_cleanly_on_ctrl_c(served: Served, make_container: MakeContainer) -> None:
    c = make_container(["sh", "-c", "echo first; exec sleep 300"])
    proc = subprocess.Popen(
        [ANVYL, "container", "logs", "--follow", c.name],
        env={**__import__("os").environ, "ANVYL_ADDR": served.address},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "first\n"  # blocks until the stream delivers
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)  # generous: a loaded 2-core CI machine
    assert proc.returncode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


def test_exec(served: Served, make_container: MakeContainer) -> None:
    c = make_container()
    ps = served.cli("container", "exec", c.name, "ps", "aux")
    assert ps.returncode == 0 and "sleep 300" in ps.stdout, ps.stderr
    ls = served.cli("container", "exec", c.id[:10], "--", "ls", "-la", "/bin")
    assert ls.returncode == 0 and "busybox" in ls.stdout
    opts = served.cli("container", "exec", c.name, "sh", "-c", "echo out; echo err >&2; exit 5")
    assert (opts.returncode, opts.stdout, opts.stderr) == (5, "out\n", "err\n")
    assert served.cli("container", "exec", c.name, "ls", "--help").returncode in (0, 1)


def test_exec_bad_input(served: Served, make_container: MakeContainer) -> None:
    foreign = make_container(managed=False)
    _one_line_error(served.cli("container", "exec", foreign.name, "ps"), "not managed by Anvyl")
    _one_line_error(served.cli("container", "exec", "no-such-ctr-zz", "ps"), "no container")
    missing = served.cli("container", "exec", foreign.name)
    assert missing.returncode == 2 and "COMMAND" in missing.stderr.upper()
    only_dashes = served.cli("container", "exec", foreign.name, "--")
    assert only_dashes.returncode == 2
    foreign.reload()
    assert foreign.status == "running"


def test_stop(served: Served, make_container: MakeContainer) -> None:
    c = make_container()
    bad = served.cli("container", "stop", c.name, "--timeout", "-3")
    assert bad.returncode == 2
    c.reload()
    assert c.status == "running"  # bad input changes nothing
    result = served.cli("container", "stop", c.name, "-t", "0")
    assert result.returncode == 0 and f"stopped {c.name}" in result.stdout, result.stderr
    c.reload()
    assert c.status == "exited"
    foreign = make_container(managed=False)
    _one_line_error(served.cli("container", "stop", foreign.name), "not managed by Anvyl")
    foreign.reload()
    assert foreign.status == "running"
