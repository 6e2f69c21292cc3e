"""Pure pieces of putting models on nodes: the content hash, the tar stream, the service mount."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from anvyl.runtime import model_spec as spec
from anvyl.runtime import swarm
from anvyl.services import node_content


def _model(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_text('{"model_type": "llama"}')
    (root / "model.safetensors").write_bytes(b"\0" * 3000)
    (root / "sub" / "tokenizer.json").write_text("{}")
    return root


def test_model_hash_follows_content_and_is_cached(tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    cache = tmp_path / "cache"
    first = node_content.model_hash(model, cache)
    assert len(first) == 64 and (cache / node_content.HASH_CACHE).exists()
    assert node_content.model_hash(model, cache) == first == node_content.model_hash(model)
    link = tmp_path / "link"
    link.symlink_to(model)
    assert node_content.model_hash(link) == first  # the files, not the path, make the hash
    (model / "sub" / "tokenizer.json").write_text('{"x": 1}')
    assert node_content.model_hash(model, cache) != first
    assert node_content.volume_name(first) == "anvyl-model-" + first[:24]


def test_tar_stream_holds_every_file_readable_by_anyone(tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    files = node_content.model_files(model)
    seen: list[int] = []
    data = b"".join(node_content._tar_stream(model.resolve(), files, seen.append))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {"config.json", "model.safetensors", "sub", "sub/tokenizer.json"}
        assert members["sub"].isdir() and members["sub"].mode == 0o755
        assert members["model.safetensors"].mode == 0o644
        assert tar.extractfile("model.safetensors").read() == b"\0" * 3000  # type: ignore[union-attr]
    assert seen and seen[-1] == len(data)


def test_registry_images_are_left_to_the_nodes() -> None:
    assert node_content.uses_registry("registry.example.com/anvyl/modelserver:1")
    assert node_content.uses_registry("localhost:5000/anvyl/modelserver:1")
    assert not node_content.uses_registry("anvyl/modelserver:0.1.0")
    assert not node_content.uses_registry("modelserver")


def test_a_model_volume_replaces_the_bind_mount() -> None:
    container = spec.ModelContainerSpec(
        image="anvyl/modelserver:1",
        name="m",
        model_id="m",
        model_path="/srv/models/m",
        port=8000,
        deployment_id="d-1",
    )
    bound = swarm.ModelServiceSpec(container=container).create_kwargs()
    mount = bound["task_template"]["ContainerSpec"]["Mounts"][0]
    assert (mount["Type"], mount["Source"]) == ("bind", "/srv/models/m")
    volume = swarm.ModelServiceSpec(container=container, model_volume="anvyl-model-ab")
    mount = volume.create_kwargs()["task_template"]["ContainerSpec"]["Mounts"][0]
    assert (mount["Type"], mount["Source"], mount["ReadOnly"]) == ("volume", "anvyl-model-ab", True)
    assert mount["Target"] == spec.CONTAINER_MODEL_PATH
