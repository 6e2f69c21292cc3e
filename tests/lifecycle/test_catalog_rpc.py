"""The model catalog through the server: import by path (gRPC), `list -o json`, `rm`."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import grpc
import pytest
from fixtures_control_plane import Served
from helpers import free_port
from lifecycle_harness import model_stub
from models_harness import MODEL_ID, deployments, failed, ok, start_model

from anvyl.api import anvyl_pb2 as pb

MODEL_KEYS = [
    "id",
    "architecture",
    "parameters",
    "quantization",
    "size_bytes",
    "context_length",
    "memory_bytes",
    "tool_format",
    "source",
    "origin",
    "path",
    "running",
]


def catalog_ggufs() -> ModuleType:
    """tests/catalog/catalog_ggufs.py (tiny GGUF writer), loaded by path."""
    path = Path(__file__).parents[1] / "catalog" / "catalog_ggufs.py"
    spec = importlib.util.spec_from_file_location("lifecycle_catalog_ggufs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def import_by_rpc(served: Served, path: Path, name: str = "") -> tuple[list[float], pb.Model]:
    """ImportModel over gRPC; (the progress fractions, the imported model)."""
    fractions: list[float] = []
    model = None
    with model_stub(served) as stub:
        for event in stub.ImportModel(
            pb.ImportModelRequest(path=str(path), name=name), timeout=300
        ):
            if event.HasField("model"):
                model = event.model
            else:
                fractions.append(event.fraction)
    assert model is not None
    return fractions, model


def listed(served: Served) -> dict[str, dict]:
    """`model list -o json` by id."""
    data = json.loads(ok(served.cli("model", "list", "-o", "json")).stdout)
    assert list(data) == ["models"]
    return {m["id"]: m for m in data["models"]}


def test_list_json_schema(procs: Served) -> None:
    """The listing is the catalog's, whatever the runtime: the process one needs no image."""
    row = listed(procs)[MODEL_ID]
    assert list(row) == MODEL_KEYS
    assert row["architecture"] == "llama" and 100e6 < row["parameters"] < 200e6
    assert row["size_bytes"] > 0 and row["memory_bytes"] > row["size_bytes"]
    assert row["source"] == "anvyl" and row["running"] == 0
    assert row["tool_format"] == "generic"  # the bundled model's template has no tool syntax
    assert Path(row["path"]).name == MODEL_ID
    table = ok(procs.cli("model", "list")).stdout
    assert "TOOLS" in table and "generic" in table and MODEL_ID in table


def test_import_mlx_dir_by_rpc_and_rm_refused_while_deployed(
    models: Served, bundled_model: Path
) -> None:
    fractions, model = import_by_rpc(models, bundled_model, name="smol-copy")
    assert model.id == "smol-copy"  # an explicit name is kept as given
    assert fractions == sorted(fractions) and all(0 <= f <= 1 for f in fractions)
    copy = models.home / "models" / model.id
    assert (copy / "config.json").is_file() and not copy.is_symlink()
    assert listed(models)[model.id]["source"] == "anvyl"

    ok(start_model(models, model.id, "--name", "uses-copy", "--port", str(free_port()), "-d"))
    assert listed(models)[model.id]["running"] == 1
    failed(models.cli("model", "rm", model.id), "uses-copy", "model stop")
    assert (copy / "config.json").is_file()

    ok(models.cli("model", "stop", "uses-copy"))
    assert deployments(models) == []
    removed = ok(models.cli("model", "rm", model.id))
    assert f"Removed {model.id}" in removed.stdout
    assert not copy.exists() and model.id not in listed(models)
    assert (bundled_model / "config.json").is_file()  # the source is untouched


def test_import_gguf_by_rpc(models: Served, tmp_path: Path) -> None:
    pytest.importorskip("gguf")
    gguf_path = catalog_ggufs().write_tiny_gguf(tmp_path / "tiny-llama.gguf")
    _, model = import_by_rpc(models, gguf_path)
    assert model.id.endswith("-mlx") and model.architecture == "llama"
    assert (Path(model.path) / "config.json").is_file()
    assert list(Path(model.path).glob("*.safetensors"))
    assert model.id in listed(models)
    ok(models.cli("model", "rm", model.id))
    assert model.id not in listed(models)


def test_import_refuses_relative_and_missing_paths(models: Served) -> None:
    with model_stub(models) as stub:
        for path, code in (
            ("relative/dir", grpc.StatusCode.INVALID_ARGUMENT),
            ("/no/such/model-dir", grpc.StatusCode.NOT_FOUND),
        ):
            with pytest.raises(grpc.RpcError) as err:
                list(stub.ImportModel(pb.ImportModelRequest(path=path), timeout=30))
            assert err.value.code() in (code, grpc.StatusCode.INVALID_ARGUMENT), err.value
            assert path in err.value.details()
