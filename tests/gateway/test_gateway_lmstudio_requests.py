"""What the gateway reads from the LM Studio SDK's load requests (pure): TTLs, `loadModel`."""

from __future__ import annotations

from typing import Any

import pytest

from anvyl.gateway.lmstudio_loads import new_instance, ttl_seconds
from anvyl.modelserver.lmstudio.protocol import ProtocolError

EMPTY_CONFIG = {"layers": [{"layerName": "apiOverride", "config": {"fields": []}}]}


def _stopped(model: str) -> bool:
    return False


def test_ttl_seconds() -> None:
    assert ttl_seconds({"loadTtlMs": 3_600_000}, "loadTtlMs") == 3600.0
    assert ttl_seconds({"loadTtlMs": None}, "loadTtlMs") is None
    assert ttl_seconds({}, "ttlMs") is None
    for bad in (-1, "10m", True):
        with pytest.raises(ProtocolError, match="ttlMs"):
            ttl_seconds({"ttlMs": bad}, "ttlMs")


def test_new_instance_of_a_stopped_model() -> None:
    param = {"modelKey": "m", "identifier": None, "loadConfigStack": EMPTY_CONFIG, "ttlMs": 2000}
    assert new_instance(param, _stopped) == ("m", 2.0)
    assert new_instance({"modelKey": "m", "identifier": "m"}, _stopped) == ("m", None)


@pytest.mark.parametrize(
    ("param", "running", "names"),
    [
        ({"modelKey": "m", "identifier": "copy"}, False, "'copy'"),
        (
            {
                "modelKey": "m",
                "loadConfigStack": {
                    "layers": [
                        {"config": {"fields": [{"key": "llm.load.contextLength", "value": 9}]}}
                    ]
                },
            },
            False,
            "llm.load.contextLength",
        ),
        ({"modelKey": "m"}, True, "already loaded"),
        ({"identifier": "m"}, False, "modelKey"),
    ],
)
def test_new_instance_refuses_by_name(param: dict[str, Any], running: bool, names: str) -> None:
    with pytest.raises(ProtocolError, match=names):
        new_instance(param, lambda model: running)
