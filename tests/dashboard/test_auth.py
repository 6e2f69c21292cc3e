"""The dashboard guard's pure helpers (the HTTP behaviour is in test_serve.py and test_http.py)."""

from __future__ import annotations

import pytest

from anvyl.dashboard.auth import (
    host_of,
    is_loopback_name,
    safe_next,
    session_value,
    token_matches,
)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("app.localhost", True),
        ("127.0.0.1", True),
        ("127.8.0.1", True),
        ("[::1]", True),
        ("::1", True),
        ("10.0.0.2", False),
        ("0.0.0.0", False),
        ("evil.example", False),
        ("localhost.evil.example", False),
    ],
)
def test_is_loopback_name(host: str, loopback: bool) -> None:
    assert is_loopback_name(host) is loopback


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("127.0.0.1:50052", "127.0.0.1"),
        ("[::1]:50052", "::1"),
        ("localhost", "localhost"),
        ("http://Evil.Example:80", "evil.example"),
    ],
)
def test_host_of(header: str, host: str) -> None:
    assert host_of(header) == host


@pytest.mark.parametrize(
    ("path", "safe"),
    [
        ("/models/x?tab=1", "/models/x?tab=1"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("", "/"),
    ],
)
def test_safe_next_stays_on_the_dashboard(path: str, safe: str) -> None:
    assert safe_next(path) == safe


def test_the_session_cookie_is_derived_from_the_token() -> None:
    value = session_value("secret")
    assert "secret" not in value
    assert value == session_value("secret") != session_value("other")
    assert token_matches("secret", "secret")
    assert not token_matches("secret", "secre")
