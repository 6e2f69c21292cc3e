"""On a Swarm, which node an on-demand start goes to: the one with the most free budget (pure).

A node's budget is its memory (as the Swarm reports it) less the headroom, capped by
`--max-memory`; what Anvyl's deployments hold there counts against it. A node where the model
fits as things are wins over one where idle on-demand models must unload first (least recently
used first, on that node only); ties go to the manager Anvyl talks to. `--max-loaded` counts
deployments on every node together.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from anvyl.errors import ResourceExhausted
from anvyl.runtime.model_spec import format_bytes
from anvyl.runtime.swarm_capacity import NodeMemory
from anvyl.services.ondemand.budget import Holder, holding, max_loaded_refusal
from anvyl.services.ondemand.policy import headroom


@dataclass(frozen=True)
class NodeRoom:
    """One usable node: its budget and the deployments holding memory on it."""

    node_id: str
    name: str
    budget: int
    holders: tuple[Holder, ...] = ()
    local: bool = False

    @property
    def free(self) -> int:
        """Budget bytes nothing holds."""
        return self.budget - sum(h.held for h in self.holders)

    @property
    def freeable(self) -> int:
        """Free bytes once every idle on-demand deployment here unloads."""
        return self.free + sum(h.held for h in self.holders if h.evictable)


@dataclass(frozen=True)
class NodeChoice:
    """Where the start goes and what unloads first (least recently used first)."""

    node: NodeRoom
    evict: list[Holder]


def node_budget(memory_bytes: int, max_memory: int) -> int:
    """A node's budget: its memory less the headroom, at most `--max-memory` when given."""
    own = max(0, memory_bytes - headroom(memory_bytes))
    return min(own, max_memory) if max_memory > 0 else own


def rooms(
    nodes: Iterable[NodeMemory],
    placed: Iterable[tuple[Holder, Sequence[str]]],
    max_memory: int,
) -> list[NodeRoom]:
    """Each node's room from what holds memory where (a holder on several nodes counts on each)."""
    on: dict[str, list[Holder]] = {}
    for holder, node_ids in placed:
        for node_id in node_ids:
            on.setdefault(node_id, []).append(holder)
    return [
        NodeRoom(
            n.id,
            n.hostname,
            node_budget(n.memory_bytes, max_memory),
            tuple(on.get(n.id, ())),
            n.local,
        )
        for n in nodes
    ]


def choose_node(
    *,
    model: str,
    need: int,
    nodes: Sequence[NodeRoom],
    max_loaded: int,
    elsewhere: Sequence[Holder] = (),
) -> NodeChoice:
    """The node for `need` more bytes and one more deployment, and what unloads first;
    ResourceExhausted with every node's numbers when none can take it. `elsewhere`: loaded
    deployments on no usable node (a drained one, say), counted for `--max-loaded` only."""
    if not nodes:
        raise ResourceExhausted(
            f"cannot load {model}: no Swarm node is ready and active to take it"
        )
    fits = [n for n in nodes if n.free >= need]
    if fits:
        choice = NodeChoice(min(fits, key=lambda n: _rank(n, n.free)), [])
    else:
        room = [n for n in nodes if n.freeable >= need]
        if not room:
            raise ResourceExhausted(
                f"cannot load {model}: it needs about {format_bytes(need)} and no Swarm node "
                f"has room ({'; '.join(_numbers(n) for n in nodes)}); stop a model, or raise "
                "--max-memory"
            )
        node = min(room, key=lambda n: _rank(n, n.freeable))
        evict: list[Holder] = []
        for holder in sorted((h for h in node.holders if h.evictable), key=_age):
            if node.free + sum(h.held for h in evict) >= need:
                break
            evict.append(holder)
        choice = NodeChoice(node, evict)
    loaded = [h for n in nodes for h in n.holders] + list(elsewhere)
    return _within_max_loaded(model, choice, loaded, max_loaded)


def _within_max_loaded(
    model: str, choice: NodeChoice, holders: Sequence[Holder], max_loaded: int
) -> NodeChoice:
    """Unload more (least recently used first, on any node) while `--max-loaded` is reached."""
    if max_loaded <= 0:
        return choice
    loaded: dict[str, Holder] = {_key(h): h for h in holders}
    gone = {_key(h) for h in choice.evict}
    evict = list(choice.evict)
    more = sorted((h for k, h in loaded.items() if h.evictable and k not in gone), key=_age)
    while len(loaded) - len(gone) >= max_loaded and more:
        holder = more.pop(0)
        evict.append(holder)
        gone.add(_key(holder))
    if len(loaded) - len(gone) >= max_loaded:
        raise max_loaded_refusal(model, max_loaded, (h for k, h in loaded.items() if k not in gone))
    return NodeChoice(choice.node, evict)


def _rank(node: NodeRoom, free: int) -> tuple[int, bool, str]:
    """Most free first; on a tie the manager's node, then by name."""
    return (-free, not node.local, node.name)


def _age(holder: Holder) -> float:
    return holder.last_used


def _key(holder: Holder) -> str:
    """One deployment (its replicas on several nodes are one), or one start under way."""
    return holder.deployment_id or f"loading:{holder.name}"


def _numbers(node: NodeRoom) -> str:
    return (
        f"{node.name}: {format_bytes(max(0, node.free))} free of its "
        f"{format_bytes(node.budget)} budget, held by {holding(node.holders)}"
    )


def placed_by_node(
    tasks: Mapping[str, Sequence[str]], service_id: str, pinned: str
) -> tuple[str, ...]:
    """The nodes a Swarm deployment holds memory on: its tasks', else the node it is pinned to."""
    found = tuple(tasks.get(service_id, ())) if service_id else ()
    return found or ((pinned,) if pinned else ())
