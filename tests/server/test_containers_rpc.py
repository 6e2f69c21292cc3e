"""ContainerService over real gRPC against the real engine."""

from __future__ import annotations

import threading

import grpc
import pytest
from fixtures_control_plane import MakeContainer
from helpers import wait_for

from anvyl.api import anvyl_pb2 as pb
from anvyl.api import anvyl_pb2_grpc as rpc
from anvyl.server import AnvylServer


@pytest.fixture
def stub(channel: grpc.Channel) -> rpc.ContainerServiceStub:
    return rpc.ContainerServiceStub(channel)


def _code(fn, request) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        result = fn(request)
        if not isinstance(result, pb.Container | pb.ListContainersResponse):
            list(result)  # a stream fails on its first read
    return info.value.code(), info.value.details()


def test_list_only_managed_with_filters(
    stub: rpc.ContainerServiceStub,
    server: AnvylServer,
    make_container: MakeContainer,
    run_labels: dict[str, str],
) -> None:
    mine = f"anvyl.test={run_labels['anvyl.test']}"
    web = make_container(labels={"role": "web"})
    db = make_container(labels={"role": "db"})
    foreign = make_container(managed=False)
    done = make_container(["true"])
    wait_for(lambda: done.reload() or done.status == "exited")

    reply, call = stub.ListContainers.with_call(pb.ListContainersRequest(labels=[mine]))
    names = {c.name for c in reply.containers}
    assert names == {web.name, db.name}
    assert foreign.name not in names
    assert dict(call.trailing_metadata())["anvyl-engine-calls"] == "1"
    assert all(c.host_id == server.local_host.id for c in reply.containers)

    every = stub.ListContainers(pb.ListContainersRequest(all=True, labels=[mine]))
    assert {c.name for c in every.containers} == {web.name, db.name, done.name}
    only_web = stub.ListContainers(pb.ListContainersRequest(labels=[mine, "role=web"]))
    assert [c.name for c in only_web.containers] == [web.name]
    has_role = stub.ListContainers(pb.ListContainersRequest(labels=[mine, "role"]))
    assert len(has_role.containers) == 2
    on_host = stub.ListContainers(
        pb.ListContainersRequest(host_id=server.local_host.id, labels=[mine])
    )
    assert len(on_host.containers) == 2


@pytest.mark.parametrize("selector", ["", "=web", "bad key=1", "ro,le=x", "k=a\nb"])
def test_bad_label_filters(stub: rpc.ContainerServiceStub, selector: str) -> None:
    code, details = _code(stub.ListContainers, pb.ListContainersRequest(labels=[selector]))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "bad label filter" in details


def test_unknown_host(stub: rpc.ContainerServiceStub) -> None:
    code, details = _code(stub.ListContainers, pb.ListContainersRequest(host_id="h-nope"))
    assert code is grpc.StatusCode.NOT_FOUND and "h-nope" in details
    code, _ = _code(stub.StopContainer, pb.StopContainerRequest(container="x", host_id="h-nope"))
    assert code is grpc.StatusCode.NOT_FOUND


def test_refs_unknown_foreign_and_empty(
    stub: rpc.ContainerServiceStub, make_container: MakeContainer, docker_client
) -> None:  # type: ignore[no-untyped-def]
    managed = make_container()
    foreign = make_container(managed=False)
    assert stub.GetContainer(pb.GetContainerRequest(container=managed.name)).id == managed.id
    assert stub.GetContainer(pb.GetContainerRequest(container=managed.id[:8])).id == managed.id

    requests = [
        (stub.GetContainer, lambda ref: pb.GetContainerRequest(container=ref)),
        (stub.StreamLogs, lambda ref: pb.StreamLogsRequest(container=ref)),
        (stub.ExecContainer, lambda ref: pb.ExecContainerRequest(container=ref, command=["ls"])),
        (stub.StopContainer, lambda ref: pb.StopContainerRequest(container=ref)),
    ]
    for fn, make in requests:
        code, details = _code(fn, make("no-such-container-zz"))
        assert code is grpc.StatusCode.NOT_FOUND, fn
        code, details = _code(fn, make(foreign.name))
        assert code is grpc.StatusCode.FAILED_PRECONDITION, fn
        assert "not managed by Anvyl" in details
        code, _ = _code(fn, make(""))
        assert code is grpc.StatusCode.INVALID_ARGUMENT, fn
    foreign.reload()
    assert foreign.status == "running"  # refused means untouched


def test_ambiguous_prefix_lists_candidates(
    stub: rpc.ContainerServiceStub, make_container: MakeContainer, docker_client
) -> None:  # type: ignore[no-untyped-def]
    # Start containers until two share a first hex digit (pigeonhole: at most 17).
    by_digit: dict[str, list[str]] = {}
    while True:
        c = make_container()
        by_digit.setdefault(c.id[0], []).append(c.id)
        if len(by_digit[c.id[0]]) == 2:
            break
    prefix = c.id[0]
    others = [x for x in docker_client.containers.list(all=True) if x.id.startswith(prefix)]
    assert len(others) >= 2
    code, details = _code(stub.GetContainer, pb.GetContainerRequest(container=prefix))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "ambiguous" in details
    for cid in by_digit[prefix]:
        assert cid[:12] in details


def test_exec(stub: rpc.ContainerServiceStub, make_container: MakeContainer) -> None:
    c = make_container()
    reply = stub.ExecContainer(
        pb.ExecContainerRequest(container=c.name, command=["sh", "-c", "echo hi; exit 4"])
    )
    assert (reply.exit_code, reply.stdout) == (4, b"hi\n")
    code, _ = _code(stub.ExecContainer, pb.ExecContainerRequest(container=c.name, command=[]))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    stopped = make_container(["true"])
    wait_for(lambda: stopped.reload() or stopped.status == "exited")
    code, details = _code(
        stub.ExecContainer, pb.ExecContainerRequest(container=stopped.name, command=["ls"])
    )
    assert code is grpc.StatusCode.FAILED_PRECONDITION and "not running" in details


def test_logs_tail_and_follow(
    stub: rpc.ContainerServiceStub, make_container: MakeContainer
) -> None:
    c = make_container(["sh", "-c", "for i in 1 2 3; do echo line$i; done; exec sleep 300"])

    def text(**kw: object) -> bytes:
        return b"".join(
            ch.data for ch in stub.StreamLogs(pb.StreamLogsRequest(container=c.id, **kw))
        )

    wait_for(lambda: text() == b"line1\nline2\nline3\n")
    assert text(tail=2) == b"line2\nline3\n"
    assert text(tail=0) == b""
    code, details = _code(stub.StreamLogs, pb.StreamLogsRequest(container=c.id, tail=-1))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "tail" in details

    call = stub.StreamLogs(pb.StreamLogsRequest(container=c.id, follow=True, tail=1))
    first = next(call)
    assert first.data == b"line3\n"
    threading.Timer(0.2, call.cancel).start()
    with pytest.raises(grpc.RpcError) as info:
        list(call)
    assert info.value.code() is grpc.StatusCode.CANCELLED


def test_stop(stub: rpc.ContainerServiceStub, make_container: MakeContainer) -> None:
    c = make_container()
    stopped = stub.StopContainer(pb.StopContainerRequest(container=c.name, timeout_seconds=0))
    assert stopped.state == "exited" and stopped.id == c.id
    again = stub.StopContainer(pb.StopContainerRequest(container=c.name, timeout_seconds=0))
    assert again.state == "exited"
    code, _ = _code(
        stub.StopContainer, pb.StopContainerRequest(container=c.name, timeout_seconds=-1)
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT
