"""The routing table: which replicas serve which model, and which one takes the next request.

Pure bookkeeping, no I/O: the server feeds it targets (from the store or the Swarm) and health
probe results; the proxy asks it for a replica and reports connection failures back.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Target:
    """One replica the control plane knows of: where it answers and with which key.

    Args:
        key: Unique per replica (a deployment id, or a deployment id and a task slot).
        model_id: The model it serves (what clients put in `model`).
        base_url: `http://address:port` of its OpenAI API.
        upstream_key: The API key the gateway sends to it ("" when it has none).
        client_key: A key clients may use instead of the server's token ("" when none).
        created_at: When it was started (for `/v1/models`).
        deployment: The deployment's name, for messages.
        tool_format: How its model writes tool calls (for `/v1/models`; "" when unknown).
    """

    key: str
    model_id: str
    base_url: str
    upstream_key: str = ""
    client_key: str = ""
    created_at: float = 0.0
    deployment: str = ""
    tool_format: str = ""

    @property
    def route(self) -> tuple[str, str, str]:
        """What decides where and how requests go; a change means a new replica."""
        return (self.model_id, self.base_url, self.upstream_key)


@dataclass(eq=False)
class Replica:
    """A target plus what the gateway knows about it: health and outstanding requests."""

    target: Target
    healthy: bool = False
    outstanding: int = 0
    # Requests waiting for this replica's first byte, and those cancelled by `mark_down`.
    waiting: set[asyncio.Task[Any]] = field(default_factory=set)
    given_up: set[asyncio.Task[Any]] = field(default_factory=set)

    def mark_down(self) -> None:
        """No new requests; those still waiting for a first byte are cancelled (and retried)."""
        self.healthy = False
        for task in self.waiting:
            self.given_up.add(task)
            task.cancel()
        self.waiting.clear()

    def mark_up(self) -> None:
        """Take requests again."""
        self.healthy = True


class RoutingTable:
    """Replicas by model; least outstanding requests first, ties taken in turn."""

    def __init__(self) -> None:
        self._replicas: dict[str, Replica] = {}
        self._by_model: dict[str, list[Replica]] = {}
        self._turn = itertools.count()

    def update(self, targets: Iterable[Target]) -> None:
        """Replace the known targets, keeping the state of replicas that remain."""
        fresh: dict[str, Replica] = {}
        for target in targets:
            old = self._replicas.get(target.key)
            if old is not None and old.target.route == target.route:
                old.target = target  # names, keys for clients, times: no need to re-probe
                fresh[target.key] = old
            else:  # new, or moved/changed: health unknown until probed
                fresh[target.key] = Replica(target)
                if old is not None:
                    old.mark_down()  # its in-flight requests still count on the old object
        for key, old in self._replicas.items():
            if key not in fresh:
                old.mark_down()  # stopped: requests still waiting on it go elsewhere
        self._replicas = fresh
        by_model: dict[str, list[Replica]] = {}
        for replica in fresh.values():
            by_model.setdefault(replica.target.model_id, []).append(replica)
        self._by_model = by_model

    def replicas(self) -> list[Replica]:
        """Every known replica."""
        return list(self._replicas.values())

    def models(self) -> dict[str, list[Replica]]:
        """Known replicas grouped by model id."""
        return {model: list(replicas) for model, replicas in self._by_model.items()}

    def known(self, model_id: str) -> bool:
        """True when some deployment serves `model_id`, healthy or not."""
        return model_id in self._by_model

    def serving(self, model_id: str) -> bool:
        """True when some replica of `model_id` is healthy now (takes no turn)."""
        return any(r.healthy for r in self._by_model.get(model_id, ()))

    def pick(self, model_id: str, exclude: Iterable[Replica] = ()) -> Replica | None:
        """The healthy replica of `model_id` with the fewest outstanding requests, or None."""
        skip = {id(r) for r in exclude}
        candidates = [
            r for r in self._by_model.get(model_id, ()) if r.healthy and id(r) not in skip
        ]
        if not candidates:
            return None
        fewest = min(r.outstanding for r in candidates)
        tied = [r for r in candidates if r.outstanding == fewest]
        return tied[next(self._turn) % len(tied)]

    def set_health(self, key: str, healthy: bool) -> None:
        """Record a probe result for the replica `key` (ignored when it is gone)."""
        replica = self._replicas.get(key)
        if replica is None or replica.healthy == healthy:
            return
        if healthy:
            replica.mark_up()
        else:
            replica.mark_down()
