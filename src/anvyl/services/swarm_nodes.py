"""Before a Swarm service starts: put the image and the model on the nodes, check it fits."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from anvyl.errors import AnvylError, FailedPrecondition
from anvyl.runtime import DockerDriver, swarm
from anvyl.runtime import model_spec as spec
from anvyl.services import node_content
from anvyl.services.swarm_owner import Owner, Say

if TYPE_CHECKING:
    from anvyl.catalog import ModelInfo


class SwarmDeployments(Protocol):
    """What preparing the nodes needs of `services.swarm_deployments.SwarmDeployments`."""

    @property
    def models(self) -> Owner: ...

    def node_driver(self, manager: DockerDriver, node_id: str) -> DockerDriver | None: ...


def prepare_nodes(
    sw: SwarmDeployments,
    manager: DockerDriver,
    nodes: list[swarm.NodeInfo],
    image: str,
    model: ModelInfo,
    say: Say,
) -> tuple[str, str]:
    """Put the image and the model files on every node that may run a replica.

    Returns the model volume's name and the model's content hash, or two empty strings
    when some node's engine is unknown: the service then bind-mounts the model's path on
    the server's machine (which those nodes must also have), as before `host add`.
    """
    drivers = {n.id: sw.node_driver(manager, n.id) for n in nodes}
    unknown = [n.hostname for n in nodes if drivers[n.id] is None]
    known = [n for n in nodes if drivers[n.id] is not None]
    registry = node_content.uses_registry(image)
    if unknown:
        say(
            "copying",
            f"no known engine for {', '.join(unknown)}: the model is bind-mounted from "
            f"{model.path} and the image {image} must already be there "
            "(`anvyl host add NODE --engine URL` lets Anvyl copy both)",
        )
    content_hash = ""
    if not unknown:
        say("copying", f"hashing the files of {model.id}")
        content_hash = node_content.model_hash(model.path, sw.models.home / "cache")
    labels = dict(sw.models.container_labels)

    def prepare(n: swarm.NodeInfo) -> None:
        node_driver = drivers[n.id]
        assert node_driver is not None
        try:
            if not registry:
                node_content.ensure_image(
                    manager, node_driver, image, n.hostname, lambda m: say("image", m)
                )
            if content_hash:
                node_content.ensure_model_volume(
                    node_driver,
                    image=image,
                    model_id=model.id,
                    model_path=Path(model.path),
                    content_hash=content_hash,
                    hostname=n.hostname,
                    labels=labels,
                    say=lambda m: say("copying", m),
                )
        except AnvylError as exc:
            raise type(exc)(f"cannot prepare node {n.hostname}: {exc.message}") from exc

    if registry and known:
        say("image", f"{image} names a registry: every node pulls it")
    if known:
        with ThreadPoolExecutor(max_workers=min(8, len(known))) as pool:
            for future in [pool.submit(prepare, n) for n in known]:
                future.result()
    if content_hash:
        say(
            "copying",
            f"the model is on {len(known)} node(s) ({node_content.volume_name(content_hash)})",
        )
    return (node_content.volume_name(content_hash), content_hash) if content_hash else ("", "")


def check_fits(
    nodes: list[swarm.NodeInfo],
    node: swarm.NodeInfo | None,
    memory: str,
    replicas: int,
) -> None:
    """Refuse what the scheduler could never place, saying why."""
    usable = [n for n in nodes if n.state == "ready" and n.availability == "active"]
    if node is not None:
        if node not in usable:
            raise FailedPrecondition(
                f"node {node.hostname} is {node.state}/{node.availability}: it takes no models"
            )
        usable = [node]
    if replicas > len(usable):
        where = f"node {node.hostname}" if node else f"{len(usable)} usable node(s)"
        raise FailedPrecondition(
            f"{replicas} replicas need {replicas} distinct nodes, but there are only {where}"
        )
    if memory:
        need = spec.parse_memory(memory)
        fitting = [n for n in usable if n.memory_bytes >= need]
        if len(fitting) < replicas:
            sizes = ", ".join(f"{n.hostname} {spec.format_bytes(n.memory_bytes)}" for n in usable)
            raise FailedPrecondition(
                f"--memory {memory} fits on {len(fitting)} node(s), {replicas} needed: "
                f"no node has that much memory ({sizes})"
            )
