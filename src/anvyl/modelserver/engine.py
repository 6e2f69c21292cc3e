"""The engine: one thread owns MLX and serves every request by continuous batching.

Front ends (the REST routes here, a websocket later) build a `GenerationRequest` with a `sink`
callback and `submit` it; the engine thread calls the sink with `TextEvent`s and exactly one
final `FinishEvent`. `submit` and `cancel` are thread-safe and never block: they put a command
on the engine's inbox. `AsyncEvents` adapts a sink to an asyncio consumer.

Scheduling sits on mlx-lm's `BatchGenerator`: a request waits in a bounded queue until one of
`max_batch` slots is free, then is inserted into the running batch, where its prompt is
prefilled in chunks between decode steps of the sequences already running. Detokenizing, stop
strings and timing happen here, so every front end sees the same text and the same numbers.

Prefill chunks are `prefill_step` tokens while nothing decodes (fastest time to first token) and
`busy_prefill_step` while other streams decode, so that a long prompt arriving costs the running
streams a few short pauses instead of one stall of its whole prefill. A finished sequence's KV
cache is kept in a bounded `PrefixCache`, and a request whose prompt starts with kept tokens
(multi-turn chat resends its history) prefills only the rest.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from anvyl.modelserver.errors import QueueFull, Unavailable
from anvyl.modelserver.events import AsyncEvents as AsyncEvents  # re-exported
from anvyl.modelserver.events import Event, FinishEvent, FinishReason, GenerationRequest, TextEvent
from anvyl.modelserver.grammar import Grammars
from anvyl.modelserver.loader import LoadedModel, ModelLoader, release_free_memory
from anvyl.modelserver.logprobs import token_logprob
from anvyl.modelserver.metrics import Metrics
from anvyl.modelserver.prefix_cache import DEFAULT_MAX_BYTES, PrefixCache
from anvyl.modelserver.sampling import make_logits_processors, make_sampler
from anvyl.modelserver.startup import TIMELINE
from anvyl.modelserver.stopping import StopMatcher
from anvyl.modelserver.threads import BlasThreads, blas

log = logging.getLogger("anvyl.modelserver")

EngineState = Literal["loading", "ready", "failed", "stopped"]
DEFAULT_PREFILL_STEP = 512
DEFAULT_BUSY_PREFILL_STEP = 128
# Tokens a batch's KV cache grows by (mlx-lm allocates 256 at a time: 11.8 MB per sequence of the
# bundled model in float32, most of it unused by a chat turn). Measured with 16 streams of 148
# tokens: 32 keeps 113 MB of cache instead of 195, decode speed unchanged within noise.
DEFAULT_KV_STEP = 32


@dataclass
class _Sequence:
    """Engine-thread state of one request in the batch."""

    request: GenerationRequest
    uid: int
    detokenizer: Any
    stopper: StopMatcher
    reused: int = 0
    tokens: int = 0
    told: int = 0  # tokens whose text was sent
    first_token_at: float = 0.0
    last_token_at: float = 0.0
    pending: list[dict[str, Any]] = field(default_factory=list)  # logprobs not yet sent


class Engine:
    """Continuous-batching generation on one thread that owns MLX."""

    def __init__(
        self,
        loader: ModelLoader,
        *,
        max_batch: int = 16,
        max_queue: int = 64,
        metrics: Metrics | None = None,
        prefill_step: int = DEFAULT_PREFILL_STEP,
        busy_prefill_step: int = DEFAULT_BUSY_PREFILL_STEP,
        prefix_cache_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self._loader = loader
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.metrics = metrics or Metrics()
        self._prefill_step = prefill_step
        busy_prefill_step = _env_int("ANVYL_BUSY_PREFILL_STEP", busy_prefill_step)
        self._busy_prefill_step = min(busy_prefill_step, prefill_step)
        self._prefix_cache_bytes = _env_int("ANVYL_PREFIX_CACHE_MB", -1) * 2**20
        if self._prefix_cache_bytes < 0:
            self._prefix_cache_bytes = prefix_cache_bytes
        self.prefix_cache: PrefixCache | None = None
        self._blas: BlasThreads | None = None
        self._inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._lock = threading.Lock()
        self._waiting_count = 0
        self._active_count = 0
        self._accepting = True
        self._stop = False
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.state: EngineState = "loading"
        self.error: str | None = None
        self.loaded: LoadedModel | None = None
        self.grammars: Grammars | None = None
        # Engine-thread only:
        self._waiting: collections.deque[GenerationRequest] = collections.deque()
        self._active: dict[int, _Sequence] = {}
        self._uid_of: dict[str, int] = {}
        self._generator: Any = None

    # ------------------------------------------------------------------ any thread

    def start(self) -> None:
        """Start the engine thread; it loads the model, then serves."""
        self._thread = threading.Thread(target=self._run, name="anvyl-engine", daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until loading ended (well or not); True when the engine can serve."""
        self._ready.wait(timeout)
        return self.state == "ready"

    def submit(self, request: GenerationRequest) -> None:
        """Queue `request`; raise `QueueFull` or `Unavailable` when it cannot be taken."""
        with self._lock:
            if self.state != "ready":
                raise Unavailable(
                    self._unavailable_message(),
                    code=self._unavailable_code(),
                    retry_after=1 if self.state == "loading" else None,
                )
            if not self._accepting:
                raise Unavailable("the server is shutting down", code="shutting_down")
            free_slots = self.max_batch - self._active_count
            if self._waiting_count >= self.max_queue + max(0, free_slots):
                raise QueueFull(
                    f"the server is busy: {self._waiting_count} requests are waiting (the limit"
                    f" is {self.max_queue}); retry later",
                    retry_after=1,
                )
            self._waiting_count += 1
            self.metrics.queue_depth.set(self._waiting_count)
        self._inbox.put(("submit", request))

    def cancel(self, request_id: str) -> None:
        """Stop generating for `request_id` (its sink gets a `cancelled` finish)."""
        self._inbox.put(("cancel", request_id))

    def stop_accepting(self) -> None:
        """Refuse new requests from now on (graceful shutdown)."""
        with self._lock:
            self._accepting = False

    def in_flight(self) -> int:
        """Requests waiting or generating."""
        with self._lock:
            return self._waiting_count + self._active_count

    def shutdown(self, timeout: float = 10.0) -> None:
        """Cancel whatever still runs and stop the engine thread."""
        self.stop_accepting()
        self._stop = True
        self._inbox.put(("stop", None))
        if self._thread is not None:
            self._thread.join(timeout)

    def _unavailable_message(self) -> str:
        """Why `submit` refuses while not ready."""
        if self.state == "loading":
            return "the model is still loading; retry shortly"
        if self.state == "failed":
            return f"the model failed to load: {self.error}"
        return "the server is shutting down"

    def _unavailable_code(self) -> str:
        """The error code for `_unavailable_message`."""
        return {"loading": "model_loading", "failed": "model_failed"}.get(
            self.state, "shutting_down"
        )

    # ------------------------------------------------------------------ engine thread

    def _run(self) -> None:
        """Thread body: load, then schedule until stopped."""
        try:
            self.loaded = self._loader()
            self._generator = self._new_generator()
            self._warm_up()
            TIMELINE.mark("warm-up")
            if getattr(self.loaded.model, "parameters", None) is not None:
                self._blas = blas()
            if self._prefix_cache_bytes > 0:
                self.prefix_cache = PrefixCache(self._prefix_cache_bytes)
            self._start_grammars()
        except BaseException as exc:  # reported through state and health
            log.exception("loading the model failed")
            with self._lock:
                self.error = f"{type(exc).__name__}: {exc}"
                self.state = "failed"
            self._ready.set()
            self._fail_inbox("the model failed to load")
            self._stopped.set()
            return
        with self._lock:
            self.state = "ready"
        self.metrics.ready.set(1)
        self._ready.set()
        try:
            self._loop()
        finally:
            self._cancel_everything("cancelled")
            with self._lock:
                self.state = "stopped"
            self.metrics.ready.set(0)
            self._stopped.set()

    def _loop(self) -> None:
        """Pump commands, admit waiting requests, advance the batch."""
        while True:
            idle = not self._active and not self._waiting
            if self.grammars is not None:
                self.grammars.engine_turn(idle)
            if self._stop:
                return
            self._pump_inbox(block=idle)
            if self._stop:
                return
            self._admit()
            if self._active:
                try:
                    self._step()
                except Exception as exc:  # fail the batch, keep serving
                    log.exception("generation step failed")
                    self._fail_active(f"generation failed: {type(exc).__name__}: {exc}")
                    self._generator = self._new_generator()
                if not self._active and not self._waiting and self._inbox.empty():
                    release_free_memory()

    def _start_grammars(self) -> None:
        """Build the grammar tokenizer bridge in the background, soon (structured requests wait)."""
        assert self.loaded is not None
        if not hasattr(self.loaded.tokenizer, "eos_token_ids"):
            return
        self.grammars = Grammars(self.loaded.tokenizer, self.loaded.vocab_size)
        self.grammars.build_soon()

    def _new_generator(self) -> Any:
        """A fresh mlx-lm BatchGenerator over the loaded model."""
        import mlx.core as mx
        from mlx_lm.generate import BatchGenerator
        from mlx_lm.models.cache import BatchKVCache

        BatchKVCache.step = _env_int("ANVYL_KV_STEP", DEFAULT_KV_STEP) or DEFAULT_KV_STEP

        assert self.loaded is not None
        eos = sorted(self.loaded.tokenizer.eos_token_ids)
        return BatchGenerator(
            self.loaded.model,
            stop_tokens=[[t] for t in eos],
            completion_batch_size=self.max_batch,
            prefill_batch_size=min(8, self.max_batch),
            prefill_step_size=self._prefill_step,
            stream=mx.default_stream(mx.default_device()),
        )

    def _warm_up(self) -> None:
        """Generate two tokens once, so the first client does not pay for cold kernels."""
        assert self.loaded is not None
        prompt = [int(t) for t in self.loaded.tokenizer.encode("Hello")] or [0]
        self._generator.insert([prompt], max_tokens=[2])
        for _ in range(64):
            _, responses = self._generator.next()
            if any(r.finish_reason for r in responses):
                return

    def _pump_inbox(self, *, block: bool) -> None:
        """Apply every queued command; wait briefly for one when idle."""
        try:
            command = self._inbox.get(timeout=0.1) if block else self._inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            self._apply(*command)
            try:
                command = self._inbox.get_nowait()
            except queue.Empty:
                return

    def _apply(self, kind: str, arg: Any) -> None:
        """Apply one inbox command."""
        if kind == "submit":
            self._waiting.append(arg)
        elif kind == "cancel":
            self._cancel(arg)
        elif kind == "stop":
            self._stop = True

    def _admit(self) -> None:
        """Move waiting requests into the batch while slots are free."""
        while self._waiting and len(self._active) < self.max_batch:
            request = self._waiting.popleft()
            assert self.loaded is not None
            sampler = make_sampler(request.sampling)
            processors = make_logits_processors(request.sampling, self.loaded.info.context_length)
            if request.grammar is not None:
                processors = [*processors, request.grammar]
            cache, reused = None, 0
            if self.prefix_cache is not None:
                cache, reused = self.prefix_cache.fetch(request.prompt)
            extra: dict[str, Any] = {}
            if cache is not None:
                extra = {"caches": [cache], "all_tokens": [list(request.prompt[:reused])]}
            (uid,) = self._generator.insert(
                [request.prompt[reused:]],
                max_tokens=[request.max_tokens],
                samplers=[sampler],
                logits_processors=[processors],
                **extra,
            )
            self._active[uid] = _Sequence(
                request=request,
                uid=uid,
                detokenizer=self.loaded.tokenizer.detokenizer,
                stopper=StopMatcher(request.stop),
                reused=reused,
            )
            self._uid_of[request.id] = uid
            self.metrics.prompt_tokens.inc(len(request.prompt))
            with self._lock:
                self._waiting_count -= 1
                self._active_count += 1
                self.metrics.queue_depth.set(self._waiting_count)
                self.metrics.active.set(self._active_count)

    def _step(self) -> None:
        """One generator step: a decode step for the batch and a prefill chunk if any."""
        decoding = any(seq.tokens for seq in self._active.values())
        self._generator.prefill_step_size = (
            self._busy_prefill_step if decoding else self._prefill_step
        )
        if self._blas is not None:
            self._blas.use(prefill_only=not decoding)
        _, responses = self._generator.next()
        if not responses:
            return
        now = time.perf_counter()
        self.metrics.decode_batch.observe(len(responses))
        self.metrics.generated_tokens.inc(len(responses))
        to_remove: list[int] = []
        for r in responses:
            seq = self._active.get(r.uid)
            if seq is None:
                continue
            seq.tokens += 1
            if seq.tokens == 1:
                seq.first_token_at = now
                self.metrics.ttft.observe(now - seq.request.submitted_at)
            else:
                self.metrics.tpot.observe(now - seq.last_token_at)
            seq.last_token_at = now
            detok = seq.detokenizer
            if r.finish_reason == "stop":  # an end-of-sequence token: not part of the text
                detok.finalize()
            else:
                detok.add_token(r.token)
                if r.finish_reason is not None:
                    detok.finalize()
            if seq.request.logprobs is not None and r.finish_reason != "stop":
                top = seq.request.logprobs
                seq.pending.append(token_logprob(self.loaded.tokenizer, r.logprobs, r.token, top))
            text, matched = seq.stopper.feed(detok.last_segment)
            if r.finish_reason is not None and not matched:
                text += seq.stopper.flush()
            if text or (seq.pending and (matched or r.finish_reason is not None)):
                self._emit(seq.request, TextEvent(text, tuple(seq.pending), seq.tokens - seq.told))
                seq.pending.clear()
                seq.told = seq.tokens
            if matched:
                if r.finish_reason is None:
                    to_remove.append(r.uid)
                else:
                    self._keep_prefix(r)
                self._finish(seq, "stop")
            elif r.finish_reason is not None:
                self._keep_prefix(r)
                failed = getattr(seq.request.grammar, "failed", None)
                if failed:
                    self._finish(seq, "error", f"the grammar could not continue: {failed}")
                else:
                    self._finish(seq, "stop" if r.finish_reason == "stop" else "length")
        if to_remove:
            if self.prefix_cache is None:
                self._generator.remove(to_remove)
            else:
                kept = self._generator.remove(to_remove, return_prompt_caches=True)
                for cache, tokens in kept.values():
                    self._keep_cache(tokens, cache)

    def _keep_prefix(self, response: Any) -> None:
        """Offer the KV cache of a sequence the generator finished to the prefix cache."""
        tokens = getattr(response, "all_tokens", None)
        self._keep_cache(tokens, getattr(response, "prompt_cache", None))

    def _keep_cache(self, tokens: list[int] | None, cache: Any) -> None:
        """Offer `cache`, holding `tokens`, to the prefix cache."""
        if self.prefix_cache is None or not tokens or not cache:
            return
        try:
            self.prefix_cache.store(tokens, cache)
        except Exception:  # a cache we cannot keep is only a lost speed-up
            log.debug("not keeping a prefix cache", exc_info=True)

    def _finish(self, seq: _Sequence, reason: FinishReason, error: str | None = None) -> None:
        """Send the final event of `seq` and free its slot."""
        now = time.perf_counter()
        ttft = (seq.first_token_at or now) - seq.request.submitted_at
        gen_time = (seq.last_token_at - seq.first_token_at) if seq.tokens else 0.0
        prompt, matched = len(seq.request.prompt), seq.stopper.matched
        finish = FinishEvent(reason, prompt, seq.tokens, ttft, gen_time, error, matched)
        self._emit(seq.request, finish)
        self._active.pop(seq.uid, None)
        self._uid_of.pop(seq.request.id, None)
        self.metrics.finished.labels(reason).inc()
        with self._lock:
            self._active_count -= 1
            self.metrics.active.set(self._active_count)

    def _cancel(self, request_id: str) -> None:
        """Drop a request wherever it is (waiting or in the batch)."""
        uid = self._uid_of.get(request_id)
        if uid is not None:
            self._generator.remove([uid])
            self._finish(self._active[uid], "cancelled")
            return
        for request in self._waiting:
            if request.id == request_id:
                self._waiting.remove(request)
                self._drop_waiting(request, "cancelled")
                return

    def _drop_waiting(self, request: GenerationRequest, reason: FinishReason) -> None:
        """Finish a request that never reached the batch."""
        with self._lock:
            self._waiting_count -= 1
            self.metrics.queue_depth.set(self._waiting_count)
        wait = time.perf_counter() - request.submitted_at
        self._emit(request, FinishEvent(reason, len(request.prompt), 0, wait, 0.0))
        self.metrics.finished.labels(reason).inc()

    def _fail_active(self, message: str) -> None:
        """Finish every sequence in the batch with an error."""
        for seq in list(self._active.values()):
            self._finish(seq, "error", message)

    def _cancel_everything(self, reason: FinishReason) -> None:
        """Finish all requests, running, waiting or still in the inbox."""
        for seq in list(self._active.values()):
            self._finish(seq, reason)
        while True:
            try:
                kind, arg = self._inbox.get_nowait()
            except queue.Empty:
                break
            if kind == "submit":
                self._waiting.append(arg)
        while self._waiting:
            self._drop_waiting(self._waiting.popleft(), reason)

    def _fail_inbox(self, message: str) -> None:
        """Answer requests queued before loading failed."""
        while True:
            try:
                kind, arg = self._inbox.get_nowait()
            except queue.Empty:
                return
            if kind == "submit":
                with self._lock:
                    self._waiting_count -= 1
                self._emit(arg, FinishEvent("error", len(arg.prompt), 0, 0.0, 0.0, message))

    @staticmethod
    def _emit(request: GenerationRequest, event: Event) -> None:
        """Deliver `event`; a broken sink must not stop the engine."""
        try:
            request.sink(event)
        except Exception:  # the consumer is gone
            log.debug("dropping an event for %s", request.id, exc_info=True)


def _env_int(name: str, default: int) -> int:
    """An integer tuning knob from the environment (benchmarks switch levers with these)."""
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() else default
