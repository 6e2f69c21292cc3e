"""The browser rule shared by every port a model is served on (pure: no server)."""

from __future__ import annotations

import pytest

from anvyl.modelserver.browser import BrowserPolicy, parse_origin, parse_origins
from anvyl.modelserver.config import ConfigError, parse_config


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("http://localhost:5173", "http://localhost:5173"),
        ("HTTPS://App.Example.com/", "https://app.example.com"),
        ("https://app.example.com:443", "https://app.example.com"),
        ("http://[::1]:8000", "http://[::1]:8000"),
        ("*", "*"),
    ],
)
def test_origins_are_normalised_as_browsers_send_them(given: str, normal: str) -> None:
    assert parse_origin(given) == normal


@pytest.mark.parametrize(
    "bad", ["app.example.com", "ftp://x.example", "https://x.example/path", "https://*.example",
            "http://user@x.example", "http://x.example:99999", ""],
)  # fmt: skip
def test_bad_origins_are_refused_naming_the_form(bad: str) -> None:
    with pytest.raises(ValueError, match="scheme://host"):
        parse_origin(bad)


def test_comma_separated_lists_and_repeats_add_up() -> None:
    assert parse_origins(["https://a.example,https://b.example", "https://a.example"]) == {
        "https://a.example",
        "https://b.example",
    }


def test_loopback_policy_checks_host_and_origin() -> None:
    policy = BrowserPolicy("the model server", True, parse_origins(["https://app.example"]))
    assert policy.refusal("127.0.0.1:1234", None) is None
    assert policy.refusal("localhost", "http://localhost:3000") is None
    assert policy.refusal("localhost", "https://app.example") is None
    assert policy.refusal("localhost", "https://APP.example:443") is None
    assert "Host" in (policy.refusal("evil.example:1234", None) or "")
    assert "Origin" in (policy.refusal("localhost", "https://evil.example") or "")
    assert "Origin" in (policy.refusal("localhost", "null") or "")


def test_off_loopback_host_is_free_and_star_allows_any_origin() -> None:
    open_host = BrowserPolicy("the gateway", False)
    assert open_host.refusal("models.internal:50080", None) is None
    assert open_host.refusal("models.internal", "https://evil.example") is not None
    anyone = BrowserPolicy("the gateway", True, frozenset({"*"}))
    assert anyone.refusal("localhost", "https://evil.example") is None
    assert anyone.refusal("evil.example", None) is not None  # Host still checked


def test_model_server_flags_and_environment() -> None:
    """`--allow-origin` (repeatable) wins over `ANVYL_ALLOW_ORIGINS`; the published address,
    not the container's 0.0.0.0, decides the Host check; a bad origin is a config error."""
    env = {"ANVYL_ALLOW_ORIGINS": "https://a.example", "ANVYL_PUBLISHED_BIND": "127.0.0.1"}
    cfg = parse_config(["--host", "0.0.0.0"], env)
    assert cfg.allow_origins == {"https://a.example"}
    flags = ["--allow-origin", "http://b.example:8000", "--allow-origin", "https://c.example"]
    assert parse_config(flags, env).allow_origins == {"http://b.example:8000", "https://c.example"}
    assert cfg.browser_policy().loopback
    assert not parse_config(["--host", "0.0.0.0"], {}).browser_policy().loopback
    with pytest.raises(ConfigError, match="--allow-origin"):
        parse_config(["--allow-origin", "a.example"], {})
