"""Hostile input over every RPC of a real `anvyl serve`: always a deliberate status, never a crash.

Hypothesis sends arbitrary unicode (NUL, control and astral characters), strings over gRPC's 4 MB
message limit, negative and huge numbers, missing fields and undecodable bytes. Whatever comes
back must be a status the server chose (INVALID_ARGUMENT, NOT_FOUND, …) or a gRPC limit
(RESOURCE_EXHAUSTED), never UNKNOWN or INTERNAL, and the server must still answer afterwards.

Nothing fuzzed can start a model or touch another test's container: model ids are ones the
catalog lacks (or the real one with a port no engine accepts), and container references that
could resolve on this shared engine (hex id prefixes, existing names) are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import docker
import grpc
import pytest
from fixtures_control_plane import Served, health_status
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from models_harness import MODEL_ID, deployments, model_containers

from anvyl.api import anvyl_pb2 as pb
from anvyl.api import anvyl_pb2_grpc as rpc
from anvyl.catalog.bundled import BUNDLED_MODELS

pytestmark = [pytest.mark.docker, pytest.mark.model]

DELIBERATE = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.OUT_OF_RANGE,
    # gRPC's own 4 MB limit on a received message: deliberate, and the server lives on.
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
EXAMPLES = 60
CALL_TIMEOUT_S = 60.0
HUGE = "A" * (10 * 1024 * 1024)
SHELL = "$(touch /tmp/anvyl-pwned); `id` | rm -rf / && echo ${HOME} > ../../x; '\"\n"

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Strings: arbitrary unicode incl. NUL and control characters, traversal and shell text, and
# values far past every limit (10 MB is over gRPC's default 4 MB message size).
text = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=64),
    st.text(st.characters(codec="utf-8", categories=("Cc", "Cf", "Zs", "So")), max_size=16),
    st.sampled_from(
        [
            "",
            "\x00",
            "a\x00b",
            "../../../../etc/passwd",
            "..",
            "/",
            SHELL,
            "x" * 300,
            "é" * 100_000,
            HUGE,
        ]
    ),
)
int32 = st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([-1, 0, 2**31 - 1]))
int64 = st.integers(-(2**63), 2**63 - 1)
double = st.floats(allow_nan=True, allow_infinity=True)
opt_int32 = st.one_of(st.none(), int32)


def _is_hex(value: str) -> bool:
    return bool(re.fullmatch(r"[0-9a-fA-F]+", value))


@pytest.fixture(scope="module")
def channel(served: Served) -> Iterator[grpc.Channel]:
    """One channel to the module's server (the client may send any size; the server limits)."""
    with grpc.insecure_channel(served.address) as ch:
        yield ch


@pytest.fixture(scope="module")
def taken_names(docker_client: docker.DockerClient) -> set[str]:
    """Names of the containers on the shared engine, which fuzzed references must not hit."""
    return {c.name for c in docker_client.containers.list(all=True)}


def call(fn: Callable[..., Any], request: Any, *, stream: bool = False) -> grpc.StatusCode:
    """The status one RPC ends with (consuming a stream to its end)."""
    try:
        if stream:
            for _ in fn(request, timeout=CALL_TIMEOUT_S):
                pass
        else:
            fn(request, timeout=CALL_TIMEOUT_S)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def deliberate(code: grpc.StatusCode, served: Served) -> None:
    """Assert the status was chosen and the server still answers its health check."""
    assert code in DELIBERATE, f"undeliberate status {code}"
    assert served.proc.poll() is None, "anvyl serve died"


def safe_container_ref(ref: str, taken: set[str]) -> str:
    """`ref`, unless it could resolve to a real container on the shared engine."""
    stripped = ref.strip()
    assume(not _is_hex(stripped) and stripped.lstrip("/") not in taken)
    return ref


# -- HostService ----------------------------------------------------------------------------------


def test_host_rpcs(served: Served, channel: grpc.Channel) -> None:
    stub = rpc.HostServiceStub(channel)
    deliberate(call(stub.ListHosts, pb.ListHostsRequest()), served)

    @FUZZ
    @given(host_id=text)
    def check(host_id: str) -> None:
        deliberate(call(stub.GetHost, pb.GetHostRequest(host_id=host_id)), served)
        deliberate(call(stub.GetHostMetrics, pb.GetHostMetricsRequest(host_id=host_id)), served)

    check()


# -- ContainerService -----------------------------------------------------------------------------


def test_container_rpcs(served: Served, channel: grpc.Channel, taken_names: set[str]) -> None:
    stub = rpc.ContainerServiceStub(channel)

    @FUZZ
    @given(
        ref=text,
        host_id=text,
        labels=st.lists(text, max_size=4),
        all_=st.booleans(),
        tail=opt_int32,
        timeout=opt_int32,
        command=st.lists(text, max_size=4),
    )
    def check(
        ref: str,
        host_id: str,
        labels: list[str],
        all_: bool,
        tail: int | None,
        timeout: int | None,
        command: list[str],
    ) -> None:
        ref = safe_container_ref(ref, taken_names)
        listing = pb.ListContainersRequest(all=all_, host_id=host_id, labels=labels)
        deliberate(call(stub.ListContainers, listing), served)
        get = pb.GetContainerRequest(container=ref, host_id=host_id)
        deliberate(call(stub.GetContainer, get), served)
        logs = pb.StreamLogsRequest(container=ref, host_id=host_id, follow=False, tail=tail)
        deliberate(call(stub.StreamLogs, logs, stream=True), served)
        run = pb.ExecContainerRequest(container=ref, host_id=host_id, command=command)
        deliberate(call(stub.ExecContainer, run), served)
        stop = pb.StopContainerRequest(container=ref, host_id=host_id, timeout_seconds=timeout)
        deliberate(call(stub.StopContainer, stop), served)

    check()


# -- ModelService ---------------------------------------------------------------------------------


def test_model_catalog_rpcs(served: Served, channel: grpc.Channel) -> None:
    stub = rpc.ModelServiceStub(channel)
    deliberate(call(stub.ListModels, pb.ListModelsRequest()), served)

    @FUZZ
    @given(path=text, name=text, bundled=text, link=st.booleans(), model_id=text)
    def check(path: str, name: str, bundled: str, link: bool, model_id: str) -> None:
        # Never import a real bundled model (minutes) nor remove the one the tests serve.
        assume(bundled.strip().lower() not in BUNDLED_MODELS and model_id != MODEL_ID)
        # Absolute paths are prefixed so they cannot name a real model directory or GGUF file.
        if path.startswith("/"):
            path = "/nonexistent-anvyl-fuzz" + path
        elif path.startswith("~"):
            path = "nonexistent" + path
        request = pb.ImportModelRequest(path=path, name=name, bundled=bundled, link=link)
        deliberate(call(stub.ImportModel, request, stream=True), served)
        deliberate(call(stub.RemoveModel, pb.RemoveModelRequest(model_id=model_id)), served)

    check()
    # Real paths that are no model: a directory, a device, a non-GGUF file.
    for path in ("/", "/dev/zero", "/etc/passwd", "/proc/self/environ"):
        code = call(stub.ImportModel, pb.ImportModelRequest(path=path), stream=True)
        assert code == grpc.StatusCode.INVALID_ARGUMENT or code in DELIBERATE, (path, code)
    assert MODEL_ID in {m.id for m in stub.ListModels(pb.ListModelsRequest()).models}


start_fields = {
    "name": text,
    "host_id": text,
    "memory": text,
    "cpus": double,
    "ctx": int32,
    "max_queue": int32,
    "api_key": text,
    "bind": text,
    "force": st.booleans(),
    "detach": st.booleans(),
    "startup_script": text,
    "dtype": text,
    "wait_timeout_seconds": double,
    "restart": st.one_of(text, st.sampled_from(["on-failure:0", "on-failure:-1", "always"])),
}


def test_start_model_never_starts_from_fuzz(
    served: Served,
    channel: grpc.Channel,
    docker_client: docker.DockerClient,
    run_labels: dict[str, str],
) -> None:
    stub = rpc.ModelServiceStub(channel)

    @FUZZ
    @given(
        real=st.booleans(),
        model_id=text,
        bad_port=st.one_of(st.integers(-(2**31), -1), st.integers(65536, 2**31 - 1)),
        port=int32,
        fields=st.fixed_dictionaries({}, optional=start_fields),
    )
    def check(real: bool, model_id: str, bad_port: int, port: int, fields: dict[str, Any]) -> None:
        # The real model only with a port no engine publishes; otherwise an id the catalog lacks.
        if real:
            request = pb.StartModelRequest(model_id=MODEL_ID, port=bad_port, **fields)
        else:
            assume(model_id != MODEL_ID)
            request = pb.StartModelRequest(model_id=model_id, port=port, **fields)
        deliberate(call(stub.StartModel, request, stream=True), served)

    check()
    assert deployments(served) == []
    assert model_containers(docker_client, run_labels) == []


def test_deployment_rpcs(served: Served, channel: grpc.Channel) -> None:
    stub = rpc.ModelServiceStub(channel)

    @FUZZ
    @given(ref=text, host_id=text, timeout=opt_int32)
    def check(ref: str, host_id: str, timeout: int | None) -> None:
        listing = pb.ListDeploymentsRequest(host_id=host_id)
        deliberate(call(stub.ListDeployments, listing), served)
        stop = pb.StopModelRequest(ref=ref, host_id=host_id, timeout_seconds=timeout)
        deliberate(call(stub.StopModel, stop), served)

    check()


# -- bytes that are no request at all -------------------------------------------------------------

METHODS = [
    f"/{service.full_name}/{method.name}"
    for service in pb.DESCRIPTOR.services_by_name.values()
    for method in service.methods
    if not method.server_streaming
]
STREAMING = [
    f"/{service.full_name}/{method.name}"
    for service in pb.DESCRIPTOR.services_by_name.values()
    for method in service.methods
    if method.server_streaming
]


# Valid requests to these change the shared engine itself (seen: random bytes decoded into an
# empty InitClusterRequest made the test engine a Swarm manager, and every later model start a
# Swarm service). They still get the undecodable payloads above, which never parse.
MUTATES_ENGINE = {
    "/anvyl.v1.ClusterService/InitCluster",
    "/anvyl.v1.ClusterService/SetNodeAvailability",
    "/anvyl.v1.ClusterService/ScaleModel",
}

NOT_PROTOBUF = b"\xff\xff\xff\xff"  # field number 0 / invalid wire type: never parses


def test_undecodable_requests(served: Served, channel: grpc.Channel) -> None:
    """Bytes that do not parse as the request message: INVALID_ARGUMENT, not INTERNAL."""
    # Invalid UTF-8 in a string field, a truncated varint (an unknown field may parse: OK).
    garbage = [b"\x0a\x05\xff\xfe\x00\x80\x81", b"\x08" + b"\xff" * 11]
    for method in METHODS:
        send = channel.unary_unary(method)  # raw bytes in, raw bytes out
        assert call(send, NOT_PROTOBUF) == grpc.StatusCode.INVALID_ARGUMENT, method
        for payload in garbage:
            assert call(send, payload) in DELIBERATE, (method, payload)
    for method in STREAMING:
        send = channel.unary_stream(method)
        assert call(send, NOT_PROTOBUF, stream=True) == grpc.StatusCode.INVALID_ARGUMENT, method
        for payload in garbage:
            assert call(send, payload, stream=True) in DELIBERATE, (method, payload)

    @FUZZ
    @given(payload=st.binary(max_size=256), method=st.sampled_from(METHODS))
    def check(payload: bytes, method: str) -> None:
        if "Stop" in method or "Exec" in method:
            return  # a random payload might decode into a real reference; covered above
        if method in MUTATES_ENGINE:
            return  # a random payload can be a valid request: it would really do it
        deliberate(call(channel.unary_unary(method), payload), served)

    check()


def test_server_still_serving(served: Served) -> None:
    assert health_status(served.address) == health_pb2.HealthCheckResponse.SERVING
