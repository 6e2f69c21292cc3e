"""The cached import structure of transformers: the same table, the same tokens, read back.

Each run is a fresh Python (the test process may have imported transformers already): with the
cache off, filling it, and reading it back. All three must tokenize the bundled model's chat
the same way, and the table read back must equal the one transformers computes itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from anvyl.modelserver import import_cache

PROBE = r"""
import json, sys
from pathlib import Path
from anvyl.modelserver import import_cache
installed = import_cache.install()
from mlx_lm.tokenizer_utils import load
import transformers.utils.import_utils as iu
tok = load(Path(sys.argv[1]))
messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Héllo <b>!"}]
text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
out = {
    "installed": installed,
    "scans": iu.create_import_structure_from_path.cache_info().misses,
    "text": text,
    "ids": list(tok.apply_chat_template(messages, add_generation_prompt=True)),
    "decoded": tok.decode(tok.encode("Paris, l'été — 東京")),
    "eos": sorted(tok.eos_token_ids),
}
define = iu.define_import_structure
if installed:  # the file as read back (transformers' __init__ extends what it was handed)
    models = Path(iu.__file__).parents[1] / "models"
    real = getattr(define, "uncached")
    folder = import_cache.cache_dir()
    kept = import_cache.cached(lambda *a: 1 / 0, folder, iu.__file__)(models, "models")
    out["same_table"] = kept == real(models, "models") and len(kept) > 0
print(json.dumps(out))
"""


def _probe(model: Path, cache: str) -> dict:
    env = {**os.environ, import_cache.CACHE_ENV: cache}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(model)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_cached_structure_tokenizes_the_same(bundled_model: Path, tmp_path: Path) -> None:
    """Off, cold (fills the cache) and warm (reads it, no scan): same template, same ids."""
    off = _probe(bundled_model, "off")
    cold = _probe(bundled_model, str(tmp_path / "cache"))
    files = sorted((tmp_path / "cache").glob("transformers-*.json"))
    assert files, "the cold run wrote no cache"
    warm = _probe(bundled_model, str(tmp_path / "cache"))
    assert not off["installed"] and cold["installed"] and warm["installed"]
    assert off["scans"] > 0 and warm["scans"] == 0  # the warm run read every table back
    assert warm["same_table"]
    for key in ("text", "ids", "decoded", "eos"):
        assert off[key] == cold[key] == warm[key], key
    assert off["text"].startswith("<|im_start|>system\nBe brief.<|im_end|>")


def test_round_trip_and_fingerprint(tmp_path: Path) -> None:
    """encode/decode keep every backend set and name; a changed source file is a new entry."""
    table = {frozenset(): {"a.b": {"X", "Y"}}, frozenset({"torch", "vision"}): {"c": {"Z"}}}
    assert import_cache.decode(json.loads(json.dumps(import_cache.encode(table)))) == table
    calls: list[str] = []

    def define(path: object, prefix: str | None = None) -> dict:
        calls.append(str(path))
        return table

    source = tmp_path / "import_utils.py"
    source.write_text("x = 1\n")
    scanned = tmp_path / "models"
    scanned.mkdir()
    cache = tmp_path / "cache"
    assert import_cache.cached(define, cache, str(source))(scanned) == table
    assert import_cache.cached(define, cache, str(source))(scanned) == table
    assert len(calls) == 1  # the second one read the file
    source.write_text("x = 22\n")  # an upgrade: another size and mtime
    assert import_cache.cached(define, cache, str(source))(scanned) == table
    assert len(calls) == 2


def test_a_malformed_cache_is_recomputed(tmp_path: Path) -> None:
    """A truncated file is ignored and replaced; an unwritable folder only costs the scan."""
    table = {frozenset(): {"m": {"N"}}}
    source = tmp_path / "src.py"
    source.write_text("")
    scanned = tmp_path / "models"
    scanned.mkdir()
    cache = tmp_path / "cache"
    import_cache.cached(lambda *_: table, cache, str(source))(scanned)
    (entry,) = cache.glob("transformers-*.json")
    entry.write_text('[[[], {"m": ["N"')
    assert import_cache.cached(lambda *_: table, cache, str(source))(scanned) == table
    assert import_cache.decode(json.loads(entry.read_text())) == table
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    assert import_cache.cached(lambda *_: table, blocked, str(source))(scanned) == table


@pytest.mark.parametrize("value", ["off", "0", "OFF"])
def test_turned_off(value: str) -> None:
    """`ANVYL_IMPORT_CACHE=off` means no cache."""
    assert import_cache.cache_dir({import_cache.CACHE_ENV: value}) is None
    assert import_cache.cache_dir({import_cache.CACHE_ENV: "/x"}) == Path("/x")
