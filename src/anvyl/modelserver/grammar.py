"""Constrained decoding: grammars compiled by llguidance and applied as a per-sequence token mask.

Why llguidance (measured on the bundled SmolLM2 tokenizer, 49152 tokens, loaded 2-core machine;
`bench/grammar_libraries.py`): a JSON schema compiles in 0.8-9 ms cold (outlines-core: 0.36-6.5 s,
it builds a whole-vocabulary index up front), a mask costs a median 17-650 us per token, and
keywords it cannot enforce (`uniqueItems`, `not`, `if`/`then`, `contains`,
`dependentRequired`) are reported by name, while outlines-core accepts most of them and
silently enforces nothing. Neither needs torch or a GPU.

The tokenizer bridge is built once from the loaded model's own tokenizer (never a hub), off the
event loop, once the engine has been idle for `IDLE_BUILD_S` after serving a request (or
`BUILD_DELAY_S` after the model is ready when none comes), or at once when a structured request
needs it. Built at readiness, it took a core from the first request (0.6 s of CPU for the bundled
model's 49k tokens); built as soon as the first request ended, from a model unloaded right after
it (a swap) and from the next model's start. Compiled
grammars are kept by their text (a small LRU of prototype matchers); each request gets a cheap
`deep_copy` of its prototype.

JSON is compact (no whitespace between tokens): a small model cannot pad a document with blanks
until `max_tokens`, and a document ends as soon as the grammar is complete (the mask then allows
only the end-of-sequence token).
"""

from __future__ import annotations

import collections
import json
import logging
import re
import threading
import time
from copy import copy
from typing import Any

from anvyl.modelserver.errors import InvalidRequest

log = logging.getLogger("anvyl.modelserver")

JSON_OPTIONS = {"whitespace_flexible": False}
MAX_CACHED_GRAMMARS = 128
BUILD_DELAY_S = 10.0
IDLE_BUILD_S = 2.0
_UNIMPLEMENTED = re.compile(r"Unimplemented keys: \[([^\]]*)\]")


def closed_objects(schema: Any) -> Any:
    """`schema` with `additionalProperties: false` where an object lists properties and is silent.

    Only narrows: whatever the narrowed schema accepts, the schema as sent accepts too. It keeps a
    small model from inventing keys until `max_tokens`. Subschemas of `allOf` are left alone
    (closing them would reject the other branches' properties).
    """
    if isinstance(schema, list):
        return [closed_objects(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: v if k in ("allOf", "const", "enum", "default", "examples") else closed_objects(v)
           for k, v in schema.items()}  # fmt: skip
    if isinstance(schema.get("properties"), dict) and not (
        {"additionalProperties", "patternProperties", "unevaluatedProperties", "allOf"}
        & set(schema)
    ):
        out["additionalProperties"] = False
    return out


def json_schema_grammar(schema: dict[str, Any]) -> str:
    """The llguidance grammar (text) for a JSON schema, compact."""
    import llguidance

    try:
        return llguidance.LLMatcher.grammar_from_json_schema(
            closed_objects(schema), defaults=JSON_OPTIONS
        )
    except ValueError as exc:
        raise InvalidRequest(f"invalid JSON schema: {exc}", param="response_format") from None


def lark_json(schema: dict[str, Any]) -> str:
    """`%json {...}`: a JSON schema inside a Lark grammar (as `json_schema_grammar`)."""
    closed = {**closed_objects(schema), "x-guidance": JSON_OPTIONS}
    return "%json " + json.dumps(closed, separators=(",", ":"))


def lark_grammar(lark: str) -> str:
    """The llguidance grammar (text) for a Lark grammar."""
    import llguidance

    return llguidance.LLMatcher.grammar_from_lark(lark)


def tokenizer_json(tokenizer: Any) -> str:
    """The serialized fast tokenizer behind mlx-lm's wrapper (added tokens included)."""
    inner = getattr(tokenizer, "_tokenizer", tokenizer)
    backend = getattr(inner, "backend_tokenizer", None)
    if backend is None:
        raise RuntimeError("structured output needs a fast (tokenizers) tokenizer")
    backend = copy(backend)
    backend.no_padding()
    backend.no_truncation()
    return backend.to_str()


class Grammars:
    """The tokenizer bridge and a cache of compiled grammars for one loaded model."""

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        self._source = tokenizer
        self.vocab_size = vocab_size
        self._tokenizer: Any = None
        self._error: str | None = None
        self._ready = threading.Event()
        self._wanted = threading.Event()
        self._served = False
        self._idle_since: float | None = None
        self._lock = threading.Lock()
        self._cache: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self.eos_ids = sorted(int(t) for t in tokenizer.eos_token_ids)

    def build_soon(self, delay: float = BUILD_DELAY_S) -> None:
        """Build in a background thread after `delay` s, or as soon as `want` is called."""

        def later() -> None:
            self._wanted.wait(delay)
            self.build()

        threading.Thread(target=later, name="anvyl-grammars", daemon=True).start()

    def engine_turn(self, idle: bool) -> None:
        """The engine thread's every turn: build once it has been idle for a while after work."""
        if self._wanted.is_set():
            return
        if not idle:
            self._served, self._idle_since = True, None
        elif self._served:
            now = time.monotonic()
            self._idle_since = self._idle_since or now
            if now - self._idle_since >= IDLE_BUILD_S:
                self.want()

    def want(self) -> None:
        """Build now (a structured request waits for it, or the engine has been idle)."""
        self._wanted.set()

    def built(self) -> bool:
        """Whether the bridge was built (or failed to be)."""
        return self._ready.is_set()

    def build(self) -> None:
        """Build the tokenizer bridge (about 2 s for a 49k vocabulary); call once, any thread."""
        try:
            import llguidance

            self._tokenizer = llguidance.LLTokenizer(
                tokenizer_json(self._source), n_vocab=self.vocab_size, eos_token=self.eos_ids
            )
        except Exception as exc:  # structured requests will say why
            log.exception("building the grammar tokenizer failed")
            self._error = f"{type(exc).__name__}: {exc}"
        finally:
            self._ready.set()

    def compile(self, grammar: str, param: str) -> Any:
        """A fresh matcher for `grammar`; a 400 naming `param` when it cannot be enforced."""
        import llguidance

        self.want()
        self._ready.wait()
        if self._tokenizer is None:
            raise InvalidRequest(
                f"structured output is unavailable for this model: {self._error}", param=param
            )
        with self._lock:
            proto = self._cache.get(grammar)
            if proto is not None:
                self._cache.move_to_end(grammar)
                return proto.deep_copy()
        try:
            proto = llguidance.LLMatcher(self._tokenizer, grammar, log_level=0)
        except Exception as exc:  # documented never to raise; a refusal either way
            raise _grammar_error(str(exc), param) from None
        if proto.is_error():
            raise _grammar_error(proto.get_error(), param)
        with self._lock:
            self._cache[grammar] = proto
            while len(self._cache) > MAX_CACHED_GRAMMARS:
                self._cache.popitem(last=False)
        return proto.deep_copy()

    def processor(self, grammar: str, param: str) -> GrammarProcessor:
        """A logits processor enforcing `grammar` for one sequence."""
        return GrammarProcessor(self.compile(grammar, param), self.vocab_size, self.eos_ids)


def _grammar_error(message: str, param: str) -> InvalidRequest:
    """A 400 for a grammar llguidance refused, naming unsupported schema keywords."""
    found = _UNIMPLEMENTED.search(message)
    if found:
        keys = found.group(1).replace('"', "")
        return InvalidRequest(
            f"the JSON schema uses keywords this server cannot enforce: {keys}; remove them",
            param=param,
            code="unsupported_schema_keyword",
        )
    first = message.strip().splitlines()[0] if message.strip() else "invalid grammar"
    return InvalidRequest(f"the schema cannot be enforced: {first}", param=param)


class GrammarProcessor:
    """mlx-lm logits processor: masks every token the grammar does not allow next.

    Called once per decode step with the sequence's tokens so far (prompt included) and its
    logits row. The first call's last token is the prompt's; later ones end with the token the
    previous step sampled, which is fed to the matcher before the next mask is computed. The
    model's forward pass for this step is started (`async_eval`) before the mask is computed on
    the CPU, so the two overlap.
    """

    def __init__(self, matcher: Any, vocab_size: int, eos_ids: list[int]) -> None:
        import numpy as np

        self._np = np
        self.matcher = matcher
        self._eos = eos_ids
        self._started = False
        self._bits = np.zeros(((vocab_size + 31) // 32,), dtype=np.int32)
        self.failed: str | None = None

    def __call__(self, tokens: Any, logits: Any) -> Any:
        """Mask `logits` (shape [1, vocab]) to the tokens the grammar allows."""
        import mlx.core as mx

        np = self._np
        mx.async_eval(logits)
        if self._started and not self.matcher.is_stopped():
            token = int(tokens[-1].item())
            if not self.matcher.consume_token(token):
                self.failed = self.matcher.get_error() or f"token {token} rejected"
        self._started = True
        if not self.failed:
            self.matcher.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
            if self.matcher.is_error():
                self.failed = self.matcher.get_error()
        if self.failed:  # end the sequence rather than let it run unconstrained
            self._bits[:] = 0
            for eos in self._eos:
                self._bits[eos // 32] |= np.int32(1 << (eos % 32)) if eos % 32 < 31 else -(2**31)
        allowed = np.unpackbits(self._bits.view(np.uint8), bitorder="little")
        width = logits.shape[-1]
        if allowed.shape[0] < width:
            allowed = np.pad(allowed, (0, width - allowed.shape[0]))
        mask = mx.array(allowed[:width].astype(np.bool_))
        return mx.where(mask, logits, mx.array(-mx.inf, dtype=logits.dtype))
