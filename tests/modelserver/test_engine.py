"""The engine's scheduling with a fake generator and tokenizer (no MLX, no model).

The fake emits the characters of a script one token per step; the real generator is exercised
by the API tests with the bundled model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from helpers import wait_for

from anvyl.modelserver.engine import Engine, Event, FinishEvent, GenerationRequest, TextEvent
from anvyl.modelserver.errors import QueueFull, Unavailable
from anvyl.modelserver.loader import LoadedModel, ModelInfo
from anvyl.modelserver.sampling import SamplingParams

EOS = 0
GREEDY = SamplingParams(temperature=0.0)


class FakeDetokenizer:
    """Characters in, text out."""

    def __init__(self) -> None:
        self._pending = ""

    def add_token(self, token: int) -> None:
        self._pending += chr(token)

    def finalize(self) -> None:
        pass

    @property
    def last_segment(self) -> str:
        out, self._pending = self._pending, ""
        return out


class FakeTokenizer:
    """One token per character; EOS is 0."""

    eos_token_ids = {EOS}

    def encode(self, text: str, **_: Any) -> list[int]:
        return [ord(c) for c in text]

    @property
    def detokenizer(self) -> FakeDetokenizer:
        return FakeDetokenizer()


@dataclass
class FakeResponse:
    uid: int
    token: int
    finish_reason: str | None


class FakeGenerator:
    """Emits `script` then EOS for every sequence; `hold` pauses all decoding."""

    def __init__(self, script: str, batch_sizes: list[int], hold: threading.Event) -> None:
        self.script = [ord(c) for c in script] + [EOS]
        self.seqs: dict[int, list[int]] = {}
        self.uid = 0
        self.batch_sizes = batch_sizes
        self.hold = hold
        self.fail_next = False

    def insert(self, prompts: list[list[int]], max_tokens: list[int], **_: Any) -> list[int]:
        uids = []
        for _p, m in zip(prompts, max_tokens, strict=True):
            self.seqs[self.uid] = [0, m]
            uids.append(self.uid)
            self.uid += 1
        return uids

    def next(self) -> tuple[list[Any], list[FakeResponse]]:
        if self.hold.is_set():
            time.sleep(0.002)
            return [], []
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("boom")
        out = []
        self.batch_sizes.append(len(self.seqs))
        for uid, state in list(self.seqs.items()):
            token = self.script[min(state[0], len(self.script) - 1)]
            state[0] += 1
            reason = "stop" if token == EOS else "length" if state[0] >= state[1] else None
            out.append(FakeResponse(uid, token, reason))
            if reason:
                del self.seqs[uid]
        return [], out

    def remove(self, uids: list[int], return_prompt_caches: bool = False) -> dict[int, Any]:
        for uid in uids:
            self.seqs.pop(uid, None)
        return {}


class FakeEngine(Engine):
    """An engine whose generator is a `FakeGenerator`."""

    def __init__(self, script: str = "Hello world", **kwargs: Any) -> None:
        self.hold = threading.Event()
        self.batch_sizes: list[int] = []
        self.script = script
        self.fake: FakeGenerator | None = None
        super().__init__(self._load, **kwargs)

    def _load(self) -> LoadedModel:
        return LoadedModel(None, FakeTokenizer(), ModelInfo("fake", "fp32", 64), "float32", 256)

    def _new_generator(self) -> FakeGenerator:
        self.fake = FakeGenerator(self.script, self.batch_sizes, self.hold)
        return self.fake


class Collector:
    """A sink that records events and signals the finish."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.done = threading.Event()
        self.request: GenerationRequest | None = None

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        if isinstance(event, FinishEvent):
            self.done.set()

    @property
    def text(self) -> str:
        assert self.done.wait(10)
        return "".join(e.text for e in self.events if isinstance(e, TextEvent))

    @property
    def finish(self) -> FinishEvent:
        assert self.done.wait(10)
        last = self.events[-1]
        assert isinstance(last, FinishEvent)
        return last


@pytest.fixture
def engine() -> Iterator[FakeEngine]:
    """A started fake engine with 2 slots and a queue of 2."""
    e = FakeEngine(max_batch=2, max_queue=2)
    e.start()
    assert e.wait_ready(10)
    yield e
    e.hold.clear()
    e.shutdown()


def submit(engine: Engine, max_tokens: int = 100, stop: tuple[str, ...] = ()) -> Collector:
    """Submit a small request; return its collector."""
    sink = Collector()
    sink.request = GenerationRequest([1, 2, 3], max_tokens, sink, GREEDY, stop)
    engine.submit(sink.request)
    return sink


def test_generates_until_eos_with_counts(engine: FakeEngine) -> None:
    """The text arrives in pieces; the finish carries reason and token counts (EOS counted)."""
    c = submit(engine)
    assert c.finish.reason == "stop"
    assert c.text == "Hello world"
    assert c.finish.completion_tokens == len("Hello world") + 1
    assert c.finish.prompt_tokens == 3


def test_max_tokens_gives_length(engine: FakeEngine) -> None:
    """Reaching max_tokens finishes with `length` and exactly that many tokens."""
    c = submit(engine, max_tokens=4)
    assert (c.text, c.finish.reason, c.finish.completion_tokens) == ("Hell", "length", 4)


def test_stop_string_cuts_and_frees_the_slot(engine: FakeEngine) -> None:
    """A stop string ends the sequence early and removes it from the batch."""
    c = submit(engine, stop=("o w",))
    assert (c.text, c.finish.reason) == ("Hell", "stop")
    assert engine.fake is not None and not engine.fake.seqs
    wait_for(lambda: engine.in_flight() == 0)


def test_requests_join_the_running_batch(engine: FakeEngine) -> None:
    """Two requests submitted together decode in the same steps."""
    engine.hold.set()
    a, b = submit(engine), submit(engine)
    wait_for(lambda: engine.metrics.active._value.get() == 2)
    engine.hold.clear()
    assert a.finish.reason == b.finish.reason == "stop"
    assert max(engine.batch_sizes) == 2


def test_queue_limit_and_cancel_of_waiting_and_running(engine: FakeEngine) -> None:
    """Past 2 running + 2 waiting, submit raises QueueFull; cancels free both kinds."""
    engine.hold.set()
    running = [submit(engine) for _ in range(2)]
    wait_for(lambda: engine.metrics.active._value.get() == 2)
    waiting = [submit(engine) for _ in range(2)]
    with pytest.raises(QueueFull) as info:
        submit(engine)
    assert info.value.status == 429 and info.value.headers() == {"Retry-After": "1"}
    # cancel one waiting and one running request
    engine.cancel(_id_of(waiting[0]))
    engine.cancel(_id_of(running[0]))
    assert waiting[0].finish.reason == "cancelled" and waiting[0].finish.completion_tokens == 0
    assert running[0].finish.reason == "cancelled"
    engine.hold.clear()
    assert running[1].finish.reason == waiting[1].finish.reason == "stop"
    wait_for(lambda: engine.in_flight() == 0)


def _id_of(collector: Collector) -> str:
    """The id of the request behind a collector."""
    assert collector.request is not None
    return collector.request.id


def test_a_failing_step_fails_the_batch_and_the_engine_goes_on(engine: FakeEngine) -> None:
    """An exception in a step finishes its requests with `error`; the next request works."""
    engine.hold.set()
    c = submit(engine)
    wait_for(lambda: engine.metrics.active._value.get() == 1)
    assert engine.fake is not None
    engine.fake.fail_next = True
    engine.hold.clear()
    assert c.finish.reason == "error" and "boom" in (c.finish.error or "")
    assert submit(engine).finish.reason == "stop"


def test_stop_accepting_and_load_failure() -> None:
    """A draining engine refuses with 503; a failed load reports the error."""
    e = FakeEngine()
    e.start()
    assert e.wait_ready(10)
    e.stop_accepting()
    with pytest.raises(Unavailable):
        submit(e)
    e.shutdown()

    def broken() -> LoadedModel:
        raise FileNotFoundError("no weights")

    failed = Engine(broken)
    failed.start()
    assert not failed.wait_ready(10)
    assert failed.state == "failed" and "no weights" in (failed.error or "")
    with pytest.raises(Unavailable) as info:
        submit(failed)
    assert info.value.code == "model_failed"
