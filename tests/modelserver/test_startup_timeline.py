"""Where a start goes (the ready line's timeline) and work kept off the first request's path."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from helpers import wait_for
from modelserver_harness import MODEL_ID, RunningServer

from anvyl.modelserver.grammar import Grammars, json_schema_grammar
from anvyl.modelserver.loader import LoadedModel, load_model_dir
from anvyl.modelserver.startup import Timeline

READY = re.compile(
    r"ready on 127\.0\.0\.1:\d+ \(health on port \d+\) in (?P<total>[\d.]+) s "
    r"\(imports (?P<imports>[\d.]+), libraries [\d.]+, load [\d.]+, warm-up [\d.]+\)"
)


def test_timeline_steps_add_up() -> None:
    """Each step is the time since the previous one; a step marked twice keeps its first."""
    timeline = Timeline(started=time.monotonic() - 1.0)
    timeline.mark("imports")
    timeline.mark("imports")
    timeline.mark("load")
    steps = timeline.steps()
    assert list(steps) == ["imports", "load"]
    assert steps["imports"] >= 1.0 and sum(steps.values()) <= timeline.elapsed()
    assert re.fullmatch(r"\d+\.\d\d s \(imports \d+\.\d\d, load \d+\.\d\d\)", timeline.summary())


def test_ready_line_says_where_the_start_went(structured_server: RunningServer) -> None:
    """The one line a ready server prints names its steps, and they fit in its total."""
    # The line is printed by the server's watcher just after the engine turns ready, which
    # can be a moment after /health first answers 200: wait for it.
    found = wait_for(
        lambda: READY.search(structured_server.log_text()), timeout=10, what="the ready line"
    )
    assert f"{MODEL_ID} ready on" in structured_server.log_text()
    assert 0 < float(found["imports"]) <= float(found["total"])


@pytest.fixture(scope="module")
def loaded(bundled_model: Path) -> LoadedModel:
    """The bundled model loaded in this process."""
    return load_model_dir(bundled_model, "auto", 512)


def test_a_structured_request_does_not_wait_for_the_delay(loaded: LoadedModel) -> None:
    """The tokenizer bridge is built at once when a grammar needs it, not after the delay."""
    grammars = Grammars(loaded.tokenizer, loaded.vocab_size)
    grammars.build_soon(delay=600)
    began = time.monotonic()
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    matcher = grammars.compile(json_schema_grammar(schema), "response_format")
    assert matcher is not None and time.monotonic() - began < 300


def test_the_bridge_is_built_after_the_delay_unasked(loaded: LoadedModel) -> None:
    """Nobody asks: it is built once the delay has passed."""
    grammars = Grammars(loaded.tokenizer, loaded.vocab_size)
    grammars.build_soon(delay=0.2)
    wait_for(grammars.built, timeout=120, what="the grammar tokenizer bridge")


def test_want_builds_it_before_the_delay(loaded: LoadedModel) -> None:
    """The engine's first idle moment after a request (`want`) starts the build."""
    grammars = Grammars(loaded.tokenizer, loaded.vocab_size)
    grammars.build_soon(delay=600)
    assert not grammars.built()
    grammars.want()
    wait_for(grammars.built, timeout=120, what="the grammar tokenizer bridge")


def test_built_once_the_engine_idles_after_work(loaded: LoadedModel) -> None:
    """Idle before any request, or busy: not built; idle for a while after work: built."""
    grammars = Grammars(loaded.tokenizer, loaded.vocab_size)
    grammars.build_soon(delay=600)
    grammars.engine_turn(idle=True)  # ready, no request yet
    grammars.engine_turn(idle=False)  # serving
    grammars.engine_turn(idle=True)  # just ended: the idle clock starts
    assert not grammars.built()
    wait_for(
        lambda: grammars.engine_turn(idle=True) or grammars.built(),
        timeout=120,
        what="the grammar tokenizer bridge",
    )
