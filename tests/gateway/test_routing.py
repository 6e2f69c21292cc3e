"""Unit tests of the routing table (pure bookkeeping) and the gateway's own answers."""

from __future__ import annotations

import asyncio
import json

from anvyl.gateway import protocol
from anvyl.gateway.response_owners import ResponseOwners, pin
from anvyl.gateway.routing import RoutingTable, Target


def _target(key: str, model: str = "m", url: str = "http://127.0.0.1:1") -> Target:
    return Target(key=key, model_id=model, base_url=url)


def _table(*targets: Target, healthy: bool = True) -> RoutingTable:
    table = RoutingTable()
    table.update(targets)
    for t in targets:
        table.set_health(t.key, healthy)
    return table


def test_ties_are_taken_in_turn() -> None:
    table = _table(_target("a"), _target("b"))
    picked = {table.pick("m").target.key for _ in range(4)}  # type: ignore[union-attr]
    assert picked == {"a", "b"}


def test_least_outstanding_first() -> None:
    table = _table(_target("a"), _target("b"), _target("c"))
    busy = {r.target.key: r for r in table.replicas()}
    busy["a"].outstanding = 2
    busy["b"].outstanding = 1
    busy["c"].outstanding = 3
    assert table.pick("m").target.key == "b"  # type: ignore[union-attr]


def test_unhealthy_and_excluded_are_skipped() -> None:
    table = _table(_target("a"), _target("b"))
    table.set_health("a", False)
    b = table.pick("m")
    assert b is not None and b.target.key == "b"
    assert table.pick("m", exclude=[b]) is None
    assert table.known("m") and not table.known("other")


def test_marking_down_cancels_requests_waiting_for_it() -> None:
    async def scenario() -> None:
        table = _table(_target("a"))
        (a,) = table.replicas()
        waiter = asyncio.ensure_future(asyncio.sleep(10))
        a.waiting.add(waiter)
        table.set_health("a", False)
        await asyncio.sleep(0)
        assert waiter.cancelled() and waiter in a.given_up and not a.waiting
        assert not a.healthy and table.pick("m") is None
        table.set_health("a", True)
        assert a.healthy and table.pick("m") is a

    asyncio.run(scenario())


def test_update_keeps_state_of_unchanged_and_drops_gone() -> None:
    table = _table(_target("a"), _target("b"))
    a, b = table.replicas()
    a.outstanding = 5
    table.update([_target("a"), _target("c", model="n")])
    kept = {r.target.key: r for r in table.replicas()}
    assert kept["a"] is a and a.healthy and a.outstanding == 5
    assert not kept["c"].healthy  # unknown until probed
    assert not b.healthy  # requests waiting on a removed replica go elsewhere
    assert sorted(table.models()) == ["m", "n"]


def test_a_moved_replica_is_probed_again() -> None:
    table = _table(_target("a", url="http://10.0.0.1:1"))
    (old,) = table.replicas()
    old.outstanding = 1
    table.update([_target("a", url="http://10.0.0.2:1")])
    (a,) = table.replicas()
    assert not a.healthy and a.target.base_url == "http://10.0.0.2:1"
    assert a.outstanding == 0 and not old.healthy  # in-flight ones retry or finish on `old`


def test_a_renamed_replica_keeps_its_state() -> None:
    table = _table(_target("a"))
    (old,) = table.replicas()
    table.update([Target(key="a", model_id="m", base_url="http://127.0.0.1:1", created_at=5.0)])
    (a,) = table.replicas()
    assert a is old and a.healthy and a.target.created_at == 5.0


def test_error_body_has_openai_shape() -> None:
    body = json.loads(protocol.error_body("nope", 404, code="model_not_found", param="model"))
    assert body == {
        "error": {
            "message": "nope",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }


def test_requested_fields_in_one_parse() -> None:
    body = b'{"model": "x", "input": "hi", "previous_response_id": "resp_1"}'
    assert protocol.requested(body) == ("x", "resp_1")
    assert protocol.requested(b'{"model": "x", "previous_response_id": 3}') == ("x", None)
    assert protocol.requested(b"not json") == (None, None)


def test_response_owners_are_bounded_and_expire() -> None:
    owners = ResponseOwners(size=2, ttl=60)
    owners.record("r1", "a")
    owners.record("r2", "b")
    assert owners.owner("r1") == "a"  # used: r2 is now the least recently used
    owners.record("r3", "a")
    assert (owners.owner("r2"), owners.owner("r1"), owners.owner("r3"), len(owners)) == (
        None, "a", "a", 2)  # fmt: skip
    expired = ResponseOwners(size=2, ttl=-1)
    expired.record("r1", "a")
    assert expired.owner("r1") is None and len(expired) == 0


def test_a_continuation_is_pinned_to_its_replica_or_refused() -> None:
    table = _table(_target("a"), _target("b"), _target("c", model="other"))
    owners = ResponseOwners()
    for rid, key in (("ra", "a"), ("rc", "c"), ("rx", "gone")):
        owners.record(rid, key)
    assert pin(owners, table, "m", "unknown", 2) is None  # routed as usual
    pinned = pin(owners, table, "m", "ra", 2)
    assert pinned is not None and pinned.replica is not None and pinned.replica.target.key == "a"
    gone = pin(owners, table, "m", "rx", 2)
    assert gone is not None and gone.status == 400 and "no longer running" in gone.message
    other = pin(owners, table, "m", "rc", 2)
    assert other is not None and other.status == 400 and "'other'" in other.message
    table.set_health("a", False)
    down = pin(owners, table, "m", "ra", 2)
    assert down is not None and (down.status, down.retry_after) == (503, 2)


def test_requested_model() -> None:
    assert protocol.requested_model(b'{"model": "x", "messages": []}') == "x"
    assert protocol.requested_model(b'{"model": 3}') is None
    assert protocol.requested_model(b"[1]") is None
    assert protocol.requested_model(b"not json") is None
