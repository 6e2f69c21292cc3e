"""Which replica holds each stored OpenAI Response, so that a `previous_response_id` (and
`GET /v1/responses/{id}`) reaches the model server that keeps it.

A model server names each response it stores in the `x-anvyl-response-id` header of its answer
(sent before the body, streamed or not); the gateway keeps id → replica key here. The map is
bounded like the stores it points into: each entry is kept `OWNERS_TTL_S` seconds (the model
server's `STORE_TTL_S`), and at most `OWNERS_SIZE` entries (the model server's `STORE_SIZE`
for each of up to `OWNERS_REPLICAS` replicas), the least recently used going first.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from anvyl.gateway.routing import Replica, RoutingTable
from anvyl.modelserver.dialects.response_store import RESPONSE_ID_HEADER, STORE_SIZE, STORE_TTL_S

OWNERS_REPLICAS = 16
OWNERS_SIZE = STORE_SIZE * OWNERS_REPLICAS
OWNERS_TTL_S = STORE_TTL_S
__all__ = ["RESPONSE_ID_HEADER", "Pinned", "ResponseOwners", "pin"]


class ResponseOwners:
    """Bounded, expiring, least recently used first out: response id → replica key."""

    def __init__(self, size: int = OWNERS_SIZE, ttl: float = OWNERS_TTL_S) -> None:
        self._items: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self.size, self.ttl = size, ttl

    def record(self, response_id: str, key: str) -> None:
        """`key`'s replica stores `response_id` now."""
        self._items[response_id] = (key, time.monotonic())
        self._items.move_to_end(response_id)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def owner(self, response_id: str) -> str | None:
        """The key of the replica that stores `response_id`, or None (unknown or expired)."""
        entry = self._items.get(response_id)
        if entry is None:
            return None
        key, at = entry
        if time.monotonic() - at > self.ttl:
            del self._items[response_id]
            return None
        self._items.move_to_end(response_id)
        return key

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class Pinned:
    """Where a request continuing a stored response must go: `replica`, or an error."""

    replica: Replica | None = None
    status: int = 0
    message: str = ""
    retry_after: int = 0


def pin(
    owners: ResponseOwners, table: RoutingTable, model: str, response_id: str, retry_after: int
) -> Pinned | None:
    """The replica holding `response_id` (None: not known here, route as usual), or why the
    request cannot continue it (never a silent fresh start on another replica)."""
    key = owners.owner(response_id)
    if key is None:
        return None
    replica = next((r for r in table.replicas() if r.target.key == key), None)
    advice = "send the whole conversation as input instead"
    if replica is None:
        return Pinned(status=400, message=(
            f"previous_response_id {response_id!r} is stored on a model server that is no"
            f" longer running (responses are kept in the memory of the replica that made"
            f" them); {advice}"))  # fmt: skip
    where = replica.target.deployment or replica.target.key
    if replica.target.model_id != model:
        return Pinned(status=400, message=(
            f"previous_response_id {response_id!r} was made by model"
            f" {replica.target.model_id!r} and is stored on its model server ({where}); continue"
            f" it with that model, or {advice}"))  # fmt: skip
    if not replica.healthy:
        return Pinned(status=503, retry_after=retry_after, message=(
            f"previous_response_id {response_id!r} is stored on {where}, which is not healthy"
            f" right now; retry shortly, or {advice}"))  # fmt: skip
    return Pinned(replica=replica)
