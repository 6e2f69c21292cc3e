"""Engine URLs `host add` accepts (pure; the lab tests connect to real node engines)."""

from __future__ import annotations

import pytest

from anvyl.errors import InvalidArgument
from anvyl.services.node_engines import validate_engine_url


@pytest.mark.parametrize(
    ("url", "tls", "want"),
    [
        ("tcp://10.0.0.2:2375", False, "tcp://10.0.0.2:2375"),
        ("tcp://node-2", False, "tcp://node-2:2375"),
        ("tcp://node-2", True, "tcp://node-2:2376"),
        ("tcp://[fd00::2]:2376", True, "tcp://[fd00::2]:2376"),
        (" ssh://ops@node-2 ", False, "ssh://ops@node-2"),
        ("ssh://ops@node-2:2222/", False, "ssh://ops@node-2:2222"),
    ],
)
def test_valid_engine_urls(url: str, tls: bool, want: str) -> None:
    assert validate_engine_url(url, tls=tls) == want


@pytest.mark.parametrize(
    ("url", "tls", "why"),
    [
        ("http://node-2:2375", False, "use tcp://"),
        ("unix:///var/run/docker.sock", False, "use tcp://"),
        ("node-2:2375", False, "use tcp://"),
        ("tcp://", False, "no host"),
        ("tcp://node-2:99999", False, "invalid engine URL"),
        ("tcp://node-2:2375/v1.41", False, "no path"),
        ("tcp://me@node-2:2375", False, "takes no user"),
        ("ssh://me:secret@node-2", False, "no passwords"),
        ("ssh://me@node-2", True, "TLS options are for tcp://"),
    ],
)
def test_invalid_engine_urls(url: str, tls: bool, why: str) -> None:
    with pytest.raises(InvalidArgument, match=why):
        validate_engine_url(url, tls=tls)
