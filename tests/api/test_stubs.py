"""The committed stubs are exactly what grpcio-tools generates from anvyl.proto."""

from __future__ import annotations

from pathlib import Path

import grpc
import grpc_tools

from anvyl.api import anvyl_pb2 as pb
from anvyl.api import codegen


def test_committed_stubs_match_fresh_generation(tmp_path: Path) -> None:
    for fresh in codegen.generate(tmp_path):
        committed = codegen.API_DIR / fresh.name
        assert committed.read_text() == fresh.read_text(), (
            f"{committed.name} is stale: run `python -m anvyl.api.codegen`"
        )


def test_grpc_and_tools_versions_are_the_same() -> None:
    from importlib.metadata import version

    assert version("grpcio") == version("grpcio-tools") == grpc.__version__
    assert grpc_tools is not None
    stub = (codegen.API_DIR / "anvyl_pb2_grpc.py").read_text()
    assert f"GRPC_GENERATED_VERSION = '{grpc.__version__}'" in stub


def test_proto_package_and_services() -> None:
    assert pb.DESCRIPTOR.package == "anvyl.v1"
    services = pb.DESCRIPTOR.services_by_name
    assert set(services) == {"HostService", "ContainerService", "ModelService", "ClusterService"}
    assert {m.name for m in services["ModelService"].methods} == {
        "ListModels",
        "ImportModel",
        "PullModel",
        "RemoveModel",
        "StartModel",
        "ListDeployments",
        "StopModel",
        "DeploymentLogs",
        "LoadModel",
    }
    logs = services["ContainerService"].methods_by_name["StreamLogs"]
    assert logs.server_streaming and not logs.client_streaming


def test_no_success_or_error_fields() -> None:
    for message in pb.DESCRIPTOR.message_types_by_name.values():
        names = {f.name for f in message.fields}
        assert not names & {"success", "error", "error_message"}, message.name
