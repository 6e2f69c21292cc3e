"""Greedy token ids of the real engine on a fixed prompt set: the before/after check of speed work.

Run as a script to (re)record the reference, which `test_engine_greedy.py` compares against:

    .venv/bin/python tests/modelserver/greedy_ids.py --record

Each prompt is generated alone (one sequence in the batch) and all together (one batch), in
every variant listed (weight dtype and matmul). The script runs with OpenBLAS preloaded as the
server runs (it re-executes itself, like `python -m anvyl.modelserver`), so the float32 matmuls
are the server's own. `--record` needs `anvyl_kernels` installed (else "kernel" is MLX's path).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).with_name("greedy_reference.json")
MAX_TOKENS = 32
# name → (weight dtype, environment): "quantized" is MLX's own quantized matmul, "kernel" the
# same weights through Anvyl's CPU kernel (anvyl_kernels; MLX's path when it is not installed).
VARIANTS = {
    "float32": ("float32", {}),
    "quantized": ("quantized", {"ANVYL_KERNEL": "0"}),
    "kernel": ("quantized", {"ANVYL_KERNEL": "1"}),
}
CHAT_PROMPTS = {
    "paris": "What is the capital of France?",
    "planets": "List the planets of the solar system.",
    "python": "Write a Python function that reverses a string.",
    "story": "Tell me a short story about a robot who learns to paint.",
}
TEXT_PROMPTS = {
    "count": "1, 2, 3, 4, 5,",
    "fox": "The quick brown fox",
}


def prompt_ids(tokenizer: Any) -> dict[str, list[int]]:
    """Token ids of every prompt (chat prompts through the model's chat template)."""
    out: dict[str, list[int]] = {}
    for name, text in CHAT_PROMPTS.items():
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
        )
        out[name] = [int(t) for t in ids]
    for name, text in TEXT_PROMPTS.items():
        out[name] = [int(t) for t in tokenizer.encode(text)]
    return out


class _RecordingDetokenizer:
    """Passes every call to mlx-lm's detokenizer and keeps the token ids it is given."""

    def __init__(self, inner: Any, ids: list[int]) -> None:
        self._inner = inner
        self.ids = ids

    def add_token(self, token: int) -> None:
        """Record `token`, then detokenize it."""
        self.ids.append(int(token))
        self._inner.add_token(token)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _RecordingTokenizer:
    """The model's tokenizer, but each detokenizer it hands out records into `journal`."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.journal: list[list[int]] = []

    @property
    def detokenizer(self) -> _RecordingDetokenizer:
        """A recording detokenizer; its ids list is appended to `journal` (admission order)."""
        ids: list[int] = []
        self.journal.append(ids)
        return _RecordingDetokenizer(self._inner.detokenizer, ids)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def run_engine(model_dir: Path, variant: str) -> dict[str, dict[str, list[int]]]:
    """`{"solo": {name: ids}, "batch": {name: ids}}` for one variant (end token excluded)."""
    from anvyl.modelserver.engine import Engine, Event, FinishEvent, GenerationRequest
    from anvyl.modelserver.loader import LoadedModel, load_model_dir
    from anvyl.modelserver.sampling import SamplingParams

    dtype, env = VARIANTS[variant]
    os.environ.pop("ANVYL_KERNEL", None)
    os.environ.update(env)

    def loader() -> LoadedModel:
        loaded = load_model_dir(model_dir, dtype)
        loaded.tokenizer = _RecordingTokenizer(loaded.tokenizer)
        return loaded

    engine = Engine(loader, max_batch=16)
    engine.start()
    if not engine.wait_ready(600):
        raise RuntimeError(f"the engine did not load: {engine.error}")
    assert engine.loaded is not None
    tokenizer = engine.loaded.tokenizer
    prompts = prompt_ids(tokenizer)

    def generate(names: list[str]) -> dict[str, list[int]]:
        done = threading.Semaphore(0)

        def sink(event: Event) -> None:
            if isinstance(event, FinishEvent):
                done.release()

        requests = {
            name: GenerationRequest(
                prompt=prompts[name],
                max_tokens=MAX_TOKENS,
                sink=sink,
                sampling=SamplingParams(temperature=0.0),
            )
            for name in names
        }
        first = len(tokenizer.journal)
        for request in requests.values():
            engine.submit(request)
        for _ in names:
            if not done.acquire(timeout=600):
                raise RuntimeError("generation timed out")
        # Requests are admitted in submission order, one detokenizer each.
        return dict(zip(names, tokenizer.journal[first:], strict=True))

    try:
        solo: dict[str, list[int]] = {}
        for name in prompts:
            solo.update(generate([name]))
        batch = generate(list(prompts))
    finally:
        engine.shutdown()
    return {"solo": solo, "batch": batch}


def openblas_reexec() -> None:
    """Re-execute with OpenBLAS preloaded, as the model server's entry point does."""
    from anvyl.modelserver.__main__ import openblas_env

    env = openblas_env(os.environ)
    if env is not None:
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def main() -> int:
    """Print (or record) the greedy ids of every prompt in every dtype."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, help="MLX model directory (default: the bundled one)")
    ap.add_argument("--variant", action="append", choices=VARIANTS, help="default: all")
    ap.add_argument("--record", action="store_true", help=f"write {FIXTURE.name}")
    args = ap.parse_args()
    openblas_reexec()
    if args.model is None:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from helpers import test_cache_dir

        from anvyl.catalog.bundled import ensure_bundled_model

        args.model = ensure_bundled_model(test_cache_dir() / "home")
    out = {name: run_engine(args.model, name) for name in args.variant or VARIANTS}
    text = json.dumps({"max_tokens": MAX_TOKENS, "ids": out}, indent=1)
    if args.record:
        FIXTURE.write_text(text + "\n")
        print(f"wrote {FIXTURE}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    # Skip interpreter teardown: under heavy load a daemon thread still inside MLX at exit has
    # aborted it ("terminate called without an active exception") after the ids were printed.
    os._exit(code)
