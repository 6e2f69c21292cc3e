"""The engine's speed levers: thread counts, transposed weights, prefix reuse, prefill chunks."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from anvyl.modelserver.engine import Engine, Event, FinishEvent, GenerationRequest, TextEvent
from anvyl.modelserver.loader import LoadedModel, load_model_dir
from anvyl.modelserver.prefix_cache import PrefixCache
from anvyl.modelserver.sampling import SamplingParams
from anvyl.modelserver.threads import (
    blas_threads,
    cgroup_cpu_limit,
    kernel_threads,
    prefill_threads,
    usable_cpus,
)

GREEDY = SamplingParams(temperature=0.0)


# ------------------------------------------------------------------ threads (pure)


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    """`cpu.max` of cgroup v2: a quota in CPUs, or none."""
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    """`cpu.cfs_quota_us` over `cpu.cfs_period_us` of cgroup v1; -1 means none."""
    cpu = tmp_path / "cpu"
    cpu.mkdir()
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    (cpu / "cpu.cfs_quota_us").write_text("200000\n")
    assert cgroup_cpu_limit(tmp_path) == 2.0
    (cpu / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(tmp_path) is None


def test_usable_cpus_bounded_by_quota(tmp_path: Path) -> None:
    """A fractional quota rounds up; never more than the affinity mask allows."""
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert usable_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cpus(tmp_path) == len(os.sched_getaffinity(0))


def test_blas_threads_leave_a_core_for_mlx() -> None:
    """One BLAS thread per usable CPU but one, at least one, capped; the env overrides."""
    assert blas_threads(1, {}) == 1
    assert blas_threads(2, {}) == 1
    assert blas_threads(4, {}) == 3
    assert blas_threads(64, {}) == 8
    assert blas_threads(2, {"ANVYL_BLAS_THREADS": "2"}) == 2
    assert blas_threads(2, {"ANVYL_BLAS_THREADS": "zero"}) == 1


def test_kernel_threads_use_every_usable_cpu() -> None:
    """The quantized kernel decodes on every usable CPU (up to 8); the env fixes it."""
    assert kernel_threads(1, {}) == 1
    assert kernel_threads(2, {}) == 2
    assert kernel_threads(4, {}) == 4
    assert kernel_threads(64, {}) == 8
    assert kernel_threads(2, {"ANVYL_KERNEL_THREADS": "1"}) == 1


def test_prefill_alone_uses_every_cpu() -> None:
    """A lone prefill is compute-bound: all usable CPUs, capped; the env fixes it too."""
    assert prefill_threads(1, {}) == 1
    assert prefill_threads(2, {}) == 2
    assert prefill_threads(64, {}) == 8
    assert prefill_threads(2, {"ANVYL_BLAS_THREADS": "1"}) == 1


# ------------------------------------------------------------------ real model


@pytest.fixture(scope="module")
def loaded(bundled_model: Path) -> LoadedModel:
    """The bundled model as the server loads it on the CPU (its default dtype)."""
    return load_model_dir(bundled_model)


@pytest.mark.model
def test_transposed_layers_match_linear(bundled_model: Path) -> None:
    """Transposed layers give the logits of mlx-lm's own layers, with no extra weights."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from anvyl.modelserver.layout import TransposedEmbedding, TransposedLinear

    loaded = load_model_dir(bundled_model, "float32")
    os.environ["ANVYL_TRANSPOSE_WEIGHTS"] = "0"
    try:
        plain = load_model_dir(bundled_model, "float32")
    finally:
        del os.environ["ANVYL_TRANSPOSE_WEIGHTS"]
    assert isinstance(loaded.model.model.embed_tokens, TransposedEmbedding)
    assert isinstance(loaded.model.model.layers[0].mlp.up_proj, TransposedLinear)
    size = sum(v.nbytes for _, v in tree_flatten(loaded.model.parameters()))
    assert size == sum(v.nbytes for _, v in tree_flatten(plain.model.parameters()))
    tokens = mx.array([[1, 504, 3458, 282, 4649, 314, 2114, 47]])
    a = loaded.model(tokens)
    b = plain.model(tokens)
    assert mx.allclose(a, b, atol=1e-4).item()
    assert (a.argmax(-1) == b.argmax(-1)).all().item()


@pytest.mark.model
def test_prefix_cache_reuse_is_exact(loaded: LoadedModel) -> None:
    """A follow-up turn reuses the first turn's cache and generates the same greedy ids."""
    history = loaded.tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
    )
    cold = Engine(lambda: loaded, prefix_cache_bytes=0)
    warm = Engine(lambda: loaded)
    for e in (cold, warm):
        e.start()
        assert e.wait_ready(300)
    try:
        first = _generate(warm, history, 12)
        followup = [*history, *first.ids, 198, 504, 3458]
        assert warm.prefix_cache is not None
        assert len(warm.prefix_cache) >= 1
        hits = warm.prefix_cache.hits
        reused = _generate(warm, followup, 12)
        assert warm.prefix_cache.hits == hits + 1
        assert warm.prefix_cache.reused_tokens >= len(history)
        fresh = _generate(cold, followup, 12)
        assert reused.ids == fresh.ids
        assert reused.text == fresh.text
        assert reused.finish.prompt_tokens == len(followup)
    finally:
        cold.shutdown()
        warm.shutdown()


@pytest.mark.model
def test_prefix_cache_respects_its_bound(loaded: LoadedModel) -> None:
    """Entries beyond the byte bound are evicted, and a cache larger than it is not kept."""
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    def cache_of(tokens: list[int]) -> list:
        cache = make_prompt_cache(loaded.model)
        loaded.model(mx.array([tokens]), cache=cache)
        return cache

    sample = cache_of(list(range(100, 132)))
    per_token = sum(c.keys[..., :1, :].nbytes + c.values[..., :1, :].nbytes for c in sample)
    bound = per_token * 80  # room for two 32-token entries, not three
    pc = PrefixCache(max_bytes=bound)
    for start in (1000, 2000, 3000):
        tokens = list(range(start, start + 32))
        pc.store(tokens, cache_of(tokens))
        assert pc.nbytes <= bound
    assert len(pc) == 2
    big = list(range(5000, 5100))
    pc.store(big, cache_of(big))
    assert pc.fetch([*big, 7])[0] is None
    assert pc.fetch([*range(3000, 3032), 7])[1] == 32


# ------------------------------------------------------------------ prefill chunks (fake)


def test_prefill_chunks_shrink_while_streams_decode() -> None:
    """Nothing decoding: full prefill chunks; streams decoding: the short busy chunks."""
    from test_engine import Collector, FakeEngine

    e = FakeEngine(script="x" * 40, prefill_step=512, busy_prefill_step=64)
    seen: list[int] = []
    e.start()
    assert e.wait_ready(10)
    assert e.fake is not None
    inner = e.fake.next

    def next_() -> tuple[list, list]:
        seen.append(e.fake.prefill_step_size)  # type: ignore[union-attr]
        return inner()

    e.fake.next = next_  # type: ignore[method-assign]
    try:
        c = Collector()
        e.submit(GenerationRequest(prompt=[65], max_tokens=30, sink=c, sampling=GREEDY))
        assert c.done.wait(10)
    finally:
        e.shutdown()
    assert seen[0] == 512
    assert 64 in seen[1:]


# ------------------------------------------------------------------ helpers


@dataclass
class Generated:
    """What one greedy request produced."""

    ids: list[int]
    text: str
    finish: FinishEvent


def _generate(engine: Engine, prompt: list[int], max_tokens: int) -> Generated:
    """Run one greedy request to its end; the ids come from the engine's detokenizer."""
    done = threading.Event()
    events: list[Event] = []

    def sink(event: Event) -> None:
        events.append(event)
        if isinstance(event, FinishEvent):
            done.set()

    assert engine.loaded is not None
    tokenizer = engine.loaded.tokenizer
    engine.submit(
        GenerationRequest(prompt=list(prompt), max_tokens=max_tokens, sink=sink, sampling=GREEDY)
    )
    assert done.wait(300)
    finish = events[-1]
    assert isinstance(finish, FinishEvent)
    text = "".join(e.text for e in events if isinstance(e, TextEvent))
    ids = [int(t) for t in tokenizer.encode(text)] if text else []
    return Generated(ids, text, finish)


def test_heap_tuning_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """glibc's mmap threshold is fixed unless the env says otherwise (then left alone)."""
    from anvyl.modelserver.loader import keep_heap_small

    monkeypatch.setenv("ANVYL_MALLOC_TUNING", "0")
    assert keep_heap_small() is False
    monkeypatch.delenv("ANVYL_MALLOC_TUNING")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert keep_heap_small() is False
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    assert keep_heap_small() is True
