"""On a Swarm, where an on-demand start goes: the node choice on plain data (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from anvyl.errors import ResourceExhausted
from anvyl.runtime.swarm_capacity import NodeMemory, capacity_from
from anvyl.services.ondemand.budget import Holder
from anvyl.services.ondemand.nodes import (
    NodeRoom,
    choose_node,
    node_budget,
    placed_by_node,
    rooms,
)

GIB = 1 << 30
MIB = 1 << 20


def held(name: str, size: int, *, idle: bool = False, used: float = 0.0) -> Holder:
    why = "on demand, idle" if idle else "started explicitly"
    return Holder(name, name, size, evictable=idle, last_used=used, why=why)


def node(name: str, budget: int, *holders: Holder, local: bool = False) -> NodeRoom:
    return NodeRoom(f"id-{name}", name, budget, tuple(holders), local)


def choose(*nodes: NodeRoom, need: int = GIB, max_loaded: int = 0) -> tuple[str, list[str]]:
    choice = choose_node(model="m", need=need, nodes=nodes, max_loaded=max_loaded)
    return choice.node.name, [h.name for h in choice.evict]


def test_the_node_with_the_most_free_budget_wins() -> None:
    manager = node("manager", 4 * GIB, held("pinned", 2 * GIB), local=True)
    worker = node("worker", 4 * GIB, held("small", GIB))
    assert choose(manager, worker) == ("worker", [])


def test_a_tie_goes_to_the_manager_then_by_name() -> None:
    assert choose(node("b", 4 * GIB), node("a", 4 * GIB), node("m", 4 * GIB, local=True)) == (
        "m",
        [],
    )
    assert choose(node("b", 4 * GIB), node("a", 4 * GIB)) == ("a", [])


def test_a_node_where_it_fits_as_is_beats_one_where_models_must_unload() -> None:
    roomy_if_emptied = node("big", 8 * GIB, held("idle", 7 * GIB, idle=True))
    fits = node("small", 2 * GIB)
    assert choose(roomy_if_emptied, fits) == ("small", [])


def test_idle_models_unload_on_one_node_least_recently_used_first_and_only_as_needed() -> None:
    a = node("a", 4 * GIB, held("a-old", 2 * GIB, idle=True, used=1.0),
             held("a-new", 2 * GIB, idle=True, used=5.0))  # fmt: skip
    b = node("b", 4 * GIB, held("b-idle", GIB, idle=True, used=0.5), held("b-pinned", 2 * GIB))
    # b can free 2 GiB at most, a 4 GiB: a is emptied of its oldest model only.
    assert choose(a, b, need=2 * GIB) == ("a", ["a-old"])


def test_explicit_starts_are_never_evicted_and_the_refusal_gives_every_node() -> None:
    a = node("node-a", 4 * GIB, held("pinned", 3 * GIB), local=True)
    b = node("node-b", 2 * GIB, held("busy", 1536 * MIB))
    with pytest.raises(ResourceExhausted) as refused:
        choose(a, b, need=2 * GIB)
    message = refused.value.message
    for text in ("m", "2.0 GiB", "node-a", "1.0 GiB free of its 4.0 GiB budget",
                 "pinned (started explicitly, 3.0 GiB)", "node-b", "512.0 MiB free of its "
                 "2.0 GiB budget", "--max-memory"):  # fmt: skip
        assert text in message, message


def test_no_usable_node_is_refused() -> None:
    with pytest.raises(ResourceExhausted, match="no Swarm node is ready"):
        choose_node(model="m", need=MIB, nodes=[], max_loaded=0)


def test_max_loaded_counts_deployments_on_every_node_once() -> None:
    replicated = held("duo", MIB)  # one deployment, a replica on each node
    old = held("old", MIB, idle=True, used=1.0)
    new = held("new", MIB, idle=True, used=2.0)
    a = node("a", 8 * GIB, replicated, new, local=True)
    b = node("b", 8 * GIB, replicated, old)
    # Three deployments with --max-loaded 3: the least recent one anywhere unloads.
    assert choose(a, b, max_loaded=3) == ("a", ["old"])
    assert choose(a, b, max_loaded=4) == ("a", [])
    with pytest.raises(ResourceExhausted, match="--max-loaded 1"):
        choose(node("a", 8 * GIB, replicated), node("b", 8 * GIB, replicated), max_loaded=1)


def test_max_loaded_counts_deployments_on_no_usable_node_too() -> None:
    drained = held("drained", MIB, idle=True, used=1.0)  # its node takes nothing new
    with pytest.raises(ResourceExhausted, match="--max-loaded 1"):
        choose_node(model="m", need=MIB, nodes=[node("a", GIB)], max_loaded=1,
                    elsewhere=[held("pinned", MIB)])  # fmt: skip
    choice = choose_node(model="m", need=MIB, nodes=[node("a", GIB)], max_loaded=1,
                         elsewhere=[drained])  # fmt: skip
    assert [h.name for h in choice.evict] == ["drained"]


def test_budget_is_memory_less_headroom_capped_by_max_memory() -> None:
    assert node_budget(8 * GIB, 0) == 7 * GIB
    assert node_budget(64 * GIB, 0) == 64 * GIB - int(64 * GIB * 0.1)
    assert node_budget(64 * GIB, 2 * GIB) == 2 * GIB
    assert node_budget(4 * GIB, 16 * GIB) == 3 * GIB  # never more than the node has


def test_rooms_count_each_holder_on_its_nodes() -> None:
    duo, solo = held("duo", GIB), held("solo", 2 * GIB)
    nodes = [NodeMemory("n1", "one", 8 * GIB, local=True), NodeMemory("n2", "two", 4 * GIB)]
    found = rooms(nodes, [(duo, ("n1", "n2")), (solo, ("n2",)), (held("gone", GIB), ("n3",))],
                  max_memory=0)  # fmt: skip
    assert [(r.name, r.budget, r.free, r.local) for r in found] == [
        ("one", 7 * GIB, 6 * GIB, True),
        ("two", 3 * GIB, 0, False),
    ]


def test_a_deployment_holds_its_tasks_nodes_else_its_pinned_one() -> None:
    tasks = {"svc": ("n1", "n2")}
    assert placed_by_node(tasks, "svc", "") == ("n1", "n2")
    assert placed_by_node(tasks, "other", "n3") == ("n3",)
    assert placed_by_node(tasks, "", "") == ()


def _node(node_id: str, name: str, *, state: str = "ready", avail: str = "active") -> Any:
    return {
        "ID": node_id,
        "Description": {"Hostname": name, "Resources": {"MemoryBytes": 4 * GIB}},
        "Spec": {"Availability": avail, "Role": "worker"},
        "Status": {"State": state},
    }


def _task(service: str, node_id: str, desired: str = "running") -> dict[str, Any]:
    return {"ServiceID": service, "NodeID": node_id, "DesiredState": desired, "Status": {}}


def test_capacity_lists_usable_nodes_and_where_tasks_are() -> None:
    capacity = capacity_from(
        "n1",
        [
            _node("n2", "b"),
            _node("n1", "a"),
            _node("n3", "c", state="down"),
            _node("n4", "d", avail="drain"),
        ],
        [_task("s1", "n1"), _task("s1", "n2"), _task("s2", ""), _task("s3", "n2", "shutdown")],
    )
    assert capacity.nodes == (
        NodeMemory("n1", "a", 4 * GIB, local=True),
        NodeMemory("n2", "b", 4 * GIB),
    )
    assert dict(capacity.tasks) == {"s1": ("n1", "n2")}
    assert capacity.local_node_id == "n1"
