"""Pure logic of models on demand: keep-alive durations and the memory budget's arithmetic."""

from __future__ import annotations

import pytest

from anvyl.errors import InvalidArgument, ResourceExhausted
from anvyl.services.ondemand.budget import Holder, HostMemory, budget_of, make_room
from anvyl.services.ondemand.policy import FOREVER, format_keep_alive, parse_keep_alive

GIB = 1 << 30
MIB = 1 << 20


@pytest.mark.parametrize(
    ("given", "seconds"),
    [
        ("10m", 600),
        ("1h30m", 5400),
        ("90s", 90),
        ("300", 300),
        (0, 0),
        ("0", 0),
        (-1, FOREVER),
        ("-1", FOREVER),
        ("-5m", FOREVER),
        (2.5, 2.5),
        ("500ms", 0.5),
    ],
)
def test_keep_alive_durations(given: str | int | float, seconds: float) -> None:
    assert parse_keep_alive(given) == seconds


@pytest.mark.parametrize("bad", ["soon", "10 minutes", "m", "", "1e999", True, "5y"])
def test_bad_keep_alive_names_the_value(bad: object) -> None:
    with pytest.raises(InvalidArgument, match="keep-alive"):
        parse_keep_alive(bad)  # type: ignore[arg-type]


def test_keep_alive_shown_as_written() -> None:
    assert [format_keep_alive(s) for s in (300, 90, FOREVER, 7200)] == [
        "5m",
        "90s",
        "never",
        "2h0m",
    ]


def test_default_budget_leaves_the_larger_of_1_gib_and_10_percent() -> None:
    assert budget_of(HostMemory(8 * GIB, 8 * GIB, "host"), 0) == 7 * GIB
    assert budget_of(HostMemory(64 * GIB, 8 * GIB, "host"), 0) == 64 * GIB - int(64 * GIB * 0.1)
    assert budget_of(HostMemory(64 * GIB, 8 * GIB, "host"), 2 * GIB) == 2 * GIB


def holder(name: str, held: int, *, idle: bool, used: float = 0.0) -> Holder:
    why = "on demand, idle" if idle else "started explicitly"
    return Holder(name, name, held, evictable=idle, last_used=used, why=why)


def test_least_recently_used_idle_models_unload_first_and_only_as_many_as_needed() -> None:
    holders = [
        holder("old", 2 * GIB, idle=True, used=1.0),
        holder("new", 2 * GIB, idle=True, used=5.0),
        holder("pinned", 2 * GIB, idle=False),
    ]
    memory = HostMemory(16 * GIB, 10 * GIB, "host")
    evict = make_room(
        model="m", need=3 * GIB, budget=8 * GIB, memory=memory, holders=holders, max_loaded=0
    )
    assert [h.name for h in evict] == ["old"]


def test_other_processes_count_through_what_is_available() -> None:
    memory = HostMemory(16 * GIB, 1 * GIB, "host")  # others hold most of the machine
    with pytest.raises(ResourceExhausted, match="other processes"):
        make_room(model="m", need=2 * GIB, budget=14 * GIB, memory=memory, holders=[],
                  max_loaded=0)  # fmt: skip


def test_explicit_starts_are_never_evicted_and_the_refusal_names_them() -> None:
    memory = HostMemory(16 * GIB, 12 * GIB, "host")
    with pytest.raises(ResourceExhausted) as refused:
        make_room(
            model="big",
            need=3 * GIB,
            budget=4 * GIB,
            memory=memory,
            holders=[holder("pinned", 2 * GIB, idle=False)],
            max_loaded=0,
        )
    message = refused.value.message
    for text in ("big", "3.0 GiB", "2.0 GiB", "4.0 GiB", "pinned (started explicitly"):
        assert text in message, message


def test_max_loaded_counts_models_not_bytes() -> None:
    memory = HostMemory(16 * GIB, 12 * GIB, "host")
    evict = make_room(
        model="m",
        need=MIB,
        budget=8 * GIB,
        memory=memory,
        holders=[holder("a", MIB, idle=True, used=2.0), holder("b", MIB, idle=True, used=1.0)],
        max_loaded=2,
    )
    assert [h.name for h in evict] == ["b"]
    with pytest.raises(ResourceExhausted, match="--max-loaded 1"):
        make_room(model="m", need=MIB, budget=8 * GIB, memory=memory,
                  holders=[holder("a", MIB, idle=False)], max_loaded=1)  # fmt: skip
