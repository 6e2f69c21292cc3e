"""Memory decides what fits: a host's budget, and which idle models to unload to make room.

`host_memory()` reads the machine (inside a container or a cgroup: the cgroup's limit, not the
host's); `make_room()` is pure arithmetic over what each deployment holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from anvyl.errors import ResourceExhausted
from anvyl.runtime.model_spec import format_bytes
from anvyl.services.ondemand.policy import headroom

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class HostMemory:
    """What a host has: its total (or its cgroup's limit) and what is free now."""

    total: int
    available: int
    source: str  # "host" or "cgroup"


@dataclass(frozen=True)
class Holder:
    """A deployment holding memory on the host.

    Args:
        held: Bytes it counts for (its measured use, or its model's need when higher).
        evictable: Started on demand and idle now: may be unloaded to make room.
        last_used: When it last served (monotonic seconds): the least recent goes first.
        why: How it is shown in a refusal (`on demand, in use`, `started explicitly`).
    """

    deployment_id: str
    name: str
    held: int
    evictable: bool
    last_used: float = 0.0
    why: str = ""


def host_memory(cgroup_root: Path = CGROUP_ROOT) -> HostMemory:
    """This machine's memory as a process here sees it (cgroup v2 limits win over the host)."""
    vm = psutil.virtual_memory()
    total, available, source = int(vm.total), int(vm.available), "host"
    limit = _cgroup_limit(cgroup_root)
    if limit is not None and limit[0] < total:
        total, source = limit[0], "cgroup"
        available = min(available, max(0, limit[0] - limit[1]))
    return HostMemory(total=total, available=available, source=source)


def budget_of(memory: HostMemory, max_memory: int) -> int:
    """The bytes models may use on a host: `--max-memory`, else its total minus headroom."""
    return max_memory if max_memory > 0 else max(0, memory.total - headroom(memory.total))


def make_room(
    *,
    model: str,
    need: int,
    budget: int,
    memory: HostMemory,
    holders: Sequence[Holder],
    max_loaded: int,
) -> list[Holder]:
    """The deployments to unload (least recently used first) so `need` bytes and one more
    deployment fit; ResourceExhausted with the numbers when even that is not enough."""
    held = sum(h.held for h in holders)
    evict: list[Holder] = []
    candidates = sorted((h for h in holders if h.evictable), key=lambda h: h.last_used)

    def free() -> int:
        freed = sum(h.held for h in evict)
        return min(budget - held + freed, memory.available + freed)

    def too_many() -> bool:
        return max_loaded > 0 and len(holders) - len(evict) >= max_loaded

    while (free() < need or too_many()) and candidates:
        evict.append(candidates.pop(0))
    if free() >= need and not too_many():
        return evict
    kept = [h for h in holders if h not in evict]
    if too_many():
        raise max_loaded_refusal(model, max_loaded, kept)
    others = max(0, memory.total - memory.available - held)
    raise ResourceExhausted(
        f"cannot load {model}: it needs about {format_bytes(need)} but only "
        f"{format_bytes(max(0, free()))} is free of the {format_bytes(budget)} budget "
        f"(held by Anvyl's models: {holding(kept)}; other processes use about "
        f"{format_bytes(others)}); stop a model, or raise --max-memory"
    )


def holding(holders: Iterable[Holder]) -> str:
    """`name (why, size), ...` of what holds memory, for a refusal."""
    return ", ".join(f"{h.name} ({h.why}, {format_bytes(h.held)})" for h in holders) or "nothing"


def max_loaded_refusal(model: str, max_loaded: int, kept: Iterable[Holder]) -> ResourceExhausted:
    """The refusal when `--max-loaded` is reached and none of `kept` may unload."""
    return ResourceExhausted(
        f"cannot load {model}: --max-loaded {max_loaded} is reached and none of the loaded "
        f"models may be unloaded (loaded: {holding(kept)}); stop one or retry once one is idle"
    )


def _cgroup_limit(root: Path) -> tuple[int, int] | None:
    """(limit, current) of the tightest cgroup v2 memory limit above this process, if any."""
    try:
        line = next(
            (x for x in Path("/proc/self/cgroup").read_text().splitlines() if x.startswith("0::")),
            "",
        )
    except OSError:
        return None
    if not line:
        return None
    path = root / line.removeprefix("0::").strip("/")
    best: tuple[int, int] | None = None
    while True:
        try:
            raw = (path / "memory.max").read_text().strip()
            current = int((path / "memory.current").read_text().strip())
        except (OSError, ValueError):
            raw, current = "max", 0
        if raw != "max":
            try:
                limit = int(raw)
            except ValueError:
                limit = 0
            if limit and (best is None or limit < best[0]):
                best = (limit, current)
        if path == root or root not in path.parents:
            return best
        path = path.parent
