"""CLI flags, their environment fallbacks and the OpenBLAS re-exec decision."""

from __future__ import annotations

from pathlib import Path

import pytest

from anvyl.modelserver import __main__ as entry
from anvyl.modelserver.config import ConfigError, parse_config


def test_defaults(tmp_path: Path) -> None:
    """Without flags or env: /model, the dir name as id, loopback, 1234 and 8080."""
    c = parse_config([], {})
    assert c.model_path == Path("/model")
    assert c.model_id == "model"
    assert (c.host, c.port, c.health_port) == ("127.0.0.1", 1234, 8080)
    assert c.api_key is None and c.dtype == "auto" and c.ctx is None
    assert parse_config(["--model", str(tmp_path / "my-model")], {}).model_id == "my-model"


def test_environment_fallbacks(tmp_path: Path) -> None:
    """Each documented env variable sets its flag."""
    key_file = tmp_path / "key"
    key_file.write_text("file-key\n")
    env = {
        "MODEL_PATH": str(tmp_path),
        "MODEL_ID": "m1",
        "ANVYL_BIND": "0.0.0.0",
        "ANVYL_API_PORT": "9000",
        "ANVYL_HEALTH_PORT": "0",
        "ANVYL_API_KEY_FILE": str(key_file),
        "ANVYL_MAX_QUEUE": "3",
        "ANVYL_CTX": "1024",
        "ANVYL_MAX_TOKENS_LIMIT": "99",
        "ANVYL_DTYPE": "float16",
        "MEMORY_LIMIT": "2g",
        "ANVYL_DEBUG": "1",
    }
    c = parse_config([], env)
    assert c.model_path == tmp_path and c.model_id == "m1" and c.host == "0.0.0.0"
    assert (c.port, c.health_port, c.max_queue, c.ctx) == (9000, 0, 3, 1024)
    assert c.api_key == "file-key" and c.max_tokens_limit == 99 and c.dtype == "float16"
    assert c.memory_limit == "2g" and c.debug


def test_flags_win_over_env_and_key_from_env() -> None:
    """A flag beats its env variable; ANVYL_API_KEY gives the key directly."""
    c = parse_config(["--port", "7000"], {"ANVYL_API_PORT": "9000", "ANVYL_API_KEY": "k"})
    assert c.port == 7000 and c.api_key == "k"


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["--max-batch", "0"], {}),
        (["--ctx", "1"], {}),
        (["--port", "70000"], {}),
        ([], {"ANVYL_API_PORT": "abc"}),
        (["--api-key-file", "/nonexistent/key"], {}),
    ],
)
def test_bad_values_are_config_errors(argv: list[str], env: dict[str, str]) -> None:
    """Unusable values are reported, not crashed on."""
    with pytest.raises(ConfigError):
        parse_config(argv, env)


def test_openblas_reexec_decision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-exec once with OpenBLAS preloaded on Linux, unless disabled or already done."""
    assert entry.find_openblas((str(tmp_path / "missing"),)) is None
    lib = tmp_path / "libblas.so.3"
    lib.write_bytes(b"")
    monkeypatch.setattr(entry, "find_openblas", lambda: str(lib))
    env = entry.openblas_env({"LD_PRELOAD": "/other.so"}, "linux")
    assert env is not None
    assert env["LD_PRELOAD"] == f"{lib} /other.so"
    assert entry.openblas_env(env, "linux") is None  # already re-executed
    assert entry.openblas_env({"ANVYL_NO_OPENBLAS": "1"}, "linux") is None
    assert entry.openblas_env({}, "darwin") is None
    assert entry.openblas_env({"LD_PRELOAD": str(lib)}, "linux") is None
    monkeypatch.setattr(entry, "find_openblas", lambda: None)
    assert entry.openblas_env({}, "linux") is None
