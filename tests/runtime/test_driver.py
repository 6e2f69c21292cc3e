"""The Docker driver against the real engine, and its pure helpers."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from fixtures_control_plane import MakeContainer
from helpers import wait_for

from anvyl.errors import FailedPrecondition, InvalidArgument, NotFound, RuntimeUnavailable
from anvyl.runtime import ContainerInfo, DockerDriver, count_engine_calls
from anvyl.runtime.driver import container_from_list_row, resolve_container, stats_from_raw


@pytest.fixture
def driver() -> DockerDriver:
    d = DockerDriver()
    yield d
    d.close()


def test_engine_info(driver: DockerDriver) -> None:
    info = driver.engine_info()
    assert info.cpus > 0 and info.memory_bytes > 0 and info.version


def test_list_is_one_api_call_whatever_the_count(
    driver: DockerDriver, make_container: MakeContainer, run_labels: dict[str, str]
) -> None:
    selector = [f"anvyl.test={run_labels['anvyl.test']}", "anvyl.managed=true", "batch=calls"]
    driver.ping()  # connect first: version negotiation is once per connection
    with count_engine_calls() as calls:
        assert driver.list_containers(labels=selector) == []
    assert calls.value == 1
    for _ in range(4):
        make_container(labels={"batch": "calls"})
    with count_engine_calls() as calls:
        found = driver.list_containers(labels=selector)
    assert len(found) == 4 and calls.value == 1
    assert all(c.state == "running" and c.labels["batch"] == "calls" for c in found)


def test_find_exec_logs_stop(driver: DockerDriver, make_container: MakeContainer) -> None:
    c = make_container(["sh", "-c", "echo one; echo two; echo three; exec sleep 300"])
    by_name = driver.find_container(c.name)
    assert by_name.id == c.id
    assert driver.find_container(c.id[:10]).id == c.id
    assert driver.find_container(c.id).name == c.name

    result = driver.exec(c.id, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (result.exit_code, result.stdout, result.stderr) == (3, b"out\n", b"err\n")

    wait_for(lambda: b"three" in b"".join(driver.stream_logs(c.id, follow=False, tail=None)))
    tail = b"".join(driver.stream_logs(c.id, follow=False, tail=1))
    assert tail == b"three\n"

    driver.stop(c.id, timeout=0)
    assert driver.get_container(c.id).state == "exited"
    driver.stop(c.id, timeout=0)  # stopping a stopped container is fine
    with pytest.raises(FailedPrecondition, match="not running"):
        driver.exec(c.id, ["true"])


def test_followed_logs_end_when_closed(driver: DockerDriver, make_container: MakeContainer) -> None:
    c = make_container(["sh", "-c", "echo ready; exec sleep 300"])
    stream = driver.stream_logs(c.id, follow=True, tail=None)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.extend(stream), daemon=True)
    reader.start()
    wait_for(lambda: b"ready" in b"".join(got), what="the first log line")
    stream.close()  # from another thread: unblocks the pending read
    reader.join(timeout=10)
    assert not reader.is_alive()


def test_stats_samples(driver: DockerDriver, make_container: MakeContainer) -> None:
    a, b = make_container(), make_container()
    samples = driver.sample_stats([a.id, b.id, "0" * 64])
    assert set(samples) == {a.id, b.id}
    assert all(s.memory_limit_bytes > 0 and s.cpu_total_ns > 0 for s in samples.values())


def test_unknown_container(driver: DockerDriver) -> None:
    with pytest.raises(NotFound):
        driver.find_container("no-such-container-" + "x" * 8)
    with pytest.raises(InvalidArgument):
        driver.find_container("  ")
    with pytest.raises(NotFound):
        driver.stop("f" * 64)


def test_unreachable_engine_then_reconnect(tmp_path: Path) -> None:
    sock = tmp_path / "engine.sock"
    driver = DockerDriver(f"unix://{sock}")
    with pytest.raises(RuntimeUnavailable, match="unreachable"):
        driver.list_containers()
    with pytest.raises(RuntimeUnavailable):
        driver.engine_info()
    sock.symlink_to("/var/run/docker.sock")  # the engine "comes back"
    assert driver.engine_info().version
    driver.close()


def _info(cid: str, name: str) -> ContainerInfo:
    return ContainerInfo(id=cid, name=name, image="i", state="running", status="", created_at=0)


def test_resolve_container_rules() -> None:
    containers = [_info("abc123" + "0" * 58, "web"), _info("abd456" + "0" * 58, "abc")]
    assert resolve_container("abc", containers).name == "abc"  # a name wins over a prefix
    assert resolve_container("abc1", containers).name == "web"
    assert resolve_container("/web", containers).name == "web"
    with pytest.raises(InvalidArgument, match=r"ambiguous.*abc123000000.*abd456000000"):
        resolve_container("ab", containers)
    with pytest.raises(NotFound):
        resolve_container("zzz", containers)


def test_list_row_and_stats_parsing() -> None:
    row = {
        "Id": "f" * 64,
        "Names": ["/svc"],
        "Image": "img:1",
        "State": "running",
        "Status": "Up 2 minutes",
        "Created": 1700000000,
        "Labels": {"anvyl.managed": "true"},
        "Ports": [{"IP": "127.0.0.1", "PrivatePort": 1234, "PublicPort": 8080, "Type": "tcp"}],
    }
    info = container_from_list_row(row)
    assert (info.name, info.short_id, info.ports[0].host_port) == ("svc", "f" * 12, 8080)
    raw = {
        "cpu_stats": {
            "cpu_usage": {"total_usage": 500},
            "system_cpu_usage": 10_000,
            "online_cpus": 2,
        },
        "memory_stats": {"usage": 1000, "limit": 4000, "stats": {"total_inactive_file": 100}},
    }
    sample = stats_from_raw("x", raw)
    assert (sample.memory_used_bytes, sample.online_cpus, sample.cpu_total_ns) == (900, 2, 500)
