"""The bounded store of OpenAI Responses behind `previous_response_id` and
`GET /v1/responses/{id}`, and the header that names a stored response.

The store is in the memory of one model server: at most `STORE_SIZE` responses, each kept
`STORE_TTL_S` seconds; a restart empties it. The answer names a stored response in the
`RESPONSE_ID_HEADER` header (before the body, streamed or not): the gateway records which replica
holds it and routes a `previous_response_id` there (see `anvyl.gateway.response_owners`).
Light on imports: the gateway reads the bounds and the header from here.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

STORE_SIZE = 256
STORE_TTL_S = 3600.0
RESPONSE_ID_HEADER = "x-anvyl-response-id"  # the id of a response this server stores


@dataclass
class Stored:
    """A stored response and the conversation it ended (chat messages, instructions aside)."""

    body: dict[str, Any]
    history: list[dict[str, Any]]
    at: float


class ResponseStore:
    """Bounded, expiring, in memory."""

    def __init__(self, size: int = STORE_SIZE, ttl: float = STORE_TTL_S) -> None:
        self._items: OrderedDict[str, Stored] = OrderedDict()
        self.size, self.ttl = size, ttl

    def put(self, body: dict[str, Any], history: list[dict[str, Any]]) -> None:
        """Keep a response (the oldest goes when full)."""
        self._items[body["id"]] = Stored(body, history, time.monotonic())
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def get(self, response_id: str) -> Stored | None:
        """A response still kept, or None."""
        stored = self._items.get(response_id)
        if stored is not None and time.monotonic() - stored.at > self.ttl:
            del self._items[response_id]
            return None
        return stored
