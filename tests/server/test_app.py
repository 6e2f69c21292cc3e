"""The server: health, reflection, auth, hosts, engine down and back, shutdown."""

from __future__ import annotations

import signal
from pathlib import Path

import grpc
import pytest
from fixtures_control_plane import MakeContainer, health_status, start_serve
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from helpers import wait_for

from anvyl.api import anvyl_pb2 as pb
from anvyl.api import anvyl_pb2_grpc as rpc
from anvyl.errors import InvalidArgument
from anvyl.server import AnvylServer, ServerConfig, is_loopback

SERVICES = {"anvyl.v1.HostService", "anvyl.v1.ContainerService", "anvyl.v1.ModelService"}


def test_health_and_reflection(server: AnvylServer, channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", *SERVICES):
        reply = health.Check(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert SERVICES | {"grpc.health.v1.Health"} <= services


def test_hosts(server: AnvylServer, channel: grpc.Channel, make_container: MakeContainer) -> None:
    stub = rpc.HostServiceStub(channel)
    make_container()
    (host,) = stub.ListHosts(pb.ListHostsRequest()).hosts
    assert host.id == server.local_host.id and host.local
    assert host.status == pb.HOST_STATUS_REACHABLE and not host.status_reason
    assert host.cpus > 0 and host.memory_bytes > 0 and host.engine_version
    assert host.running_containers >= 1
    assert stub.GetHost(pb.GetHostRequest(host_id=host.id[:5])).id == host.id
    assert stub.GetHost(pb.GetHostRequest(host_id=host.name)).id == host.id


def test_host_metrics(
    server: AnvylServer, channel: grpc.Channel, make_container: MakeContainer
) -> None:
    stub = rpc.HostServiceStub(channel)
    c = make_container()
    m = stub.GetHostMetrics(pb.GetHostMetricsRequest(host_id=server.local_host.id))
    assert m.cpu_count > 0 and 0 <= m.cpu_percent <= 100
    assert 0 < m.memory_used_bytes < m.memory_total_bytes
    assert 0 < m.disk_used_bytes < m.disk_total_bytes and m.load1 >= 0
    mine = [x for x in m.containers if x.id == c.id]
    assert mine and mine[0].memory_used_bytes > 0 and mine[0].memory_limit_bytes > 0
    for bad, code in (
        ("h-nope", grpc.StatusCode.NOT_FOUND),
        ("", grpc.StatusCode.INVALID_ARGUMENT),
    ):
        with pytest.raises(grpc.RpcError) as info:
            stub.GetHostMetrics(pb.GetHostMetricsRequest(host_id=bad))
        assert info.value.code() is code


def test_local_host_id_is_stable_across_restarts(tmp_path: Path) -> None:
    cfg = ServerConfig(host="127.0.0.1", port=0, db_path=tmp_path / "s.db")
    first = AnvylServer(cfg)
    first_id = first.local_host.id
    first.close()
    second = AnvylServer(cfg)
    assert second.local_host.id == first_id
    second.close()


def test_token_required_off_loopback(tmp_path: Path) -> None:
    assert is_loopback("localhost") and is_loopback("127.0.0.2") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.com")
    with pytest.raises(InvalidArgument, match="requires an access token"):
        AnvylServer(ServerConfig(host="0.0.0.0", port=0, db_path=tmp_path / "t.db"))


def test_token_auth(tmp_path: Path) -> None:
    srv = AnvylServer(
        ServerConfig(host="127.0.0.1", port=0, db_path=tmp_path / "a.db", token="s3cret")
    )
    srv.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
            hosts = rpc.HostServiceStub(channel)
            for metadata in ((), (("authorization", "Bearer wrong"),)):
                with pytest.raises(grpc.RpcError) as info:
                    hosts.ListHosts(pb.ListHostsRequest(), metadata=metadata)
                assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as info:
                list(
                    rpc.ContainerServiceStub(channel).StreamLogs(
                        pb.StreamLogsRequest(container="x")
                    )
                )
            assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
            good = (("authorization", "Bearer s3cret"),)
            assert hosts.ListHosts(pb.ListHostsRequest(), metadata=good).hosts
            # Probes need no token; reflection does.
            assert health_status(f"127.0.0.1:{srv.port}") == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as info:
                ProtoReflectionDescriptorDatabase(channel).get_services()
            assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    finally:
        srv.stop(0)


def test_engine_down_then_back(tmp_path: Path) -> None:
    sock = tmp_path / "engine.sock"
    srv = AnvylServer(
        ServerConfig(
            host="127.0.0.1", port=0, db_path=tmp_path / "d.db", docker_host=f"unix://{sock}"
        )
    )
    srv.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
            hosts = rpc.HostServiceStub(channel)
            containers = rpc.ContainerServiceStub(channel)
            (host,) = hosts.ListHosts(pb.ListHostsRequest()).hosts
            assert host.status == pb.HOST_STATUS_UNREACHABLE
            assert "unreachable" in host.status_reason and str(sock) in host.status_reason
            for call in (
                lambda: containers.ListContainers(pb.ListContainersRequest()),
                lambda: containers.StopContainer(pb.StopContainerRequest(container="abc")),
                lambda: list(containers.StreamLogs(pb.StreamLogsRequest(container="abc"))),
                lambda: hosts.GetHostMetrics(pb.GetHostMetricsRequest(host_id=host.id)),
            ):
                with pytest.raises(grpc.RpcError) as info:
                    call()
                assert info.value.code() is grpc.StatusCode.UNAVAILABLE
                assert "unreachable" in info.value.details()
            sock.symlink_to("/var/run/docker.sock")  # the engine comes back
            wait_for(
                lambda: (
                    hosts.ListHosts(pb.ListHostsRequest()).hosts[0].status
                    == pb.HOST_STATUS_REACHABLE
                ),
                what="the host to become reachable",
            )
            containers.ListContainers(pb.ListContainersRequest())
    finally:
        srv.stop(0)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_shuts_down_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    served = start_serve(tmp_path)
    assert served.stop(sig, timeout=15) == 0
    err = served.proc.stderr.read() if served.proc.stderr else ""
    assert "Traceback" not in err
    with pytest.raises(grpc.RpcError):
        health_status(served.address, timeout=0.5)
