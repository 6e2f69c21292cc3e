"""Benchmark: Anvyl's model server on each fast-path architecture against plain Llama, in one run.

Random-weight models of each architecture at the bundled model's shapes (576 hidden, 30 layers,
9 heads, 3 KV heads, 1536 FFN, its tokenizer), quantized like it (4-bit layers, 8-bit embedding
and head), built with mlx-lm's own classes (`tests/random_models.py`). One Anvyl model server per
architecture, all started together and measured in alternating rounds (order reversed every
other round, so load drifting on a shared machine spreads over all); the median round and the
spread of the rounds are reported, and each architecture's median as a ratio of plain Llama's.
Greedy completions of counting prompts, `--max-tokens` each (random weights seldom end early;
rates count the tokens actually generated).

    .venv/bin/python bench/archs.py [--archs llama,llama3,qwen2,...] [--streams 1,8] [--rounds 3]
    .venv/bin/python bench/archs.py --anvyl-env ANVYL_KERNEL_LAYERS=0   # MLX's layer ops
    .venv/bin/python bench/archs.py --steps     # decode steps in one process, best of rounds

`--steps` loads every model in this process (Anvyl's loader) and times decode steps at batch 1
and 8, the architectures interleaved a few steps at a time over many rounds; the best round of
each is reported (load from other processes only ever adds time, so on a busy machine the best
round is the closest to the engine's own cost), with the median beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from engine import (
    RESULTS,
    ServerResult,
    ServerSpec,
    anvyl_command,
    base_env,
    bench_servers,
    default_model,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the random-model writer the correctness tests use

from random_models import write_random_model  # noqa: E402

BUNDLED_SHAPES = {
    "hidden": 576,
    "layers": 30,
    "heads": 9,
    "kv_heads": 3,
    "ffn": 1536,
    "vocab": 49152,
}
DEFAULT_ARCHS = "llama,llama3,mistral,qwen2,qwen3,gemma2,gemma3,phi3"
# Gemma 3's own window and pattern (the tests use a small window to exercise it).
OVERRIDES = {"gemma3": {"sliding_window": 512, "sliding_window_pattern": 6}}


def anvyl_spec(name: str, model: Path, env: dict[str, str]) -> ServerSpec:
    """Anvyl's model server on `model`."""
    command = anvyl_command(model)
    return ServerSpec(name, command, base_env() | env, "bench")


def print_table(results: list[ServerResult], streams: list[int]) -> None:
    """Median aggregate tok/s, the rounds' spread and the ratio to the first (plain Llama)."""
    head = f"{'architecture':<16}{'streams':>8}{'tok/s':>8}{'spread':>16}{'vs llama':>10}"
    print(f"\n{head}\n{'-' * len(head)}")
    base = results[0]
    for n in streams:
        ref = next((r.aggregate_tps for r in base.runs if r.streams == n), 0.0)
        for r in results:
            run = next((x for x in r.runs if x.streams == n), None)
            if run is None:
                print(f"{r.name:<16}{n:>8}  skipped: {r.skipped}")
                continue
            rounds = r.rounds.get(n, [run.aggregate_tps])
            spread = f"{min(rounds):.1f}-{max(rounds):.1f}"
            ratio = f"{run.aggregate_tps / ref:.2f}x" if ref else ""
            print(f"{r.name:<16}{n:>8}{run.aggregate_tps:>8.1f}{spread:>16}{ratio:>10}")


def step_rates(
    models: dict[str, Path], batches: list[int], rounds: int, steps: int = 8
) -> dict[str, dict[int, list[float]]]:
    """Tokens/s of `steps` decode steps per round, for each model and batch size."""
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    from anvyl.modelserver.loader import load_model_dir

    loaded = {name: load_model_dir(path).model for name, path in models.items()}
    states = {}
    for name, model in loaded.items():
        for b in batches:
            cache = make_prompt_cache(model)
            mx.eval(model(mx.array([[5] * 32] * b), cache=cache))
            states[name, b] = cache
    rates: dict[str, dict[int, list[float]]] = {name: {b: [] for b in batches} for name in loaded}
    order = list(loaded)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            for b in batches:
                token = mx.array([[7]] * b)
                t0 = time.perf_counter()
                for _ in range(steps):
                    mx.eval(loaded[name](token, cache=states[name, b]))
                rates[name][b].append(steps * b / (time.perf_counter() - t0))
    return rates


def print_steps(rates: dict[str, dict[int, list[float]]]) -> None:
    """Best and median tok/s per architecture and batch, and the best as a ratio of the first."""
    head = f"{'architecture':<16}{'batch':>6}{'best tok/s':>12}{'median':>9}{'vs llama':>10}"
    print(f"\n{head}\n{'-' * len(head)}")
    first = next(iter(rates.values()))
    for b in first:
        for name, by_batch in rates.items():
            v = by_batch[b]
            ratio = max(v) / max(first[b])
            print(f"{name:<16}{b:>6}{max(v):>12.1f}{statistics.median(v):>9.1f}{ratio:>9.2f}x")


def main() -> int:
    """Write the models, run the servers side by side, print and save the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--archs", default=DEFAULT_ARCHS, help="first one is the reference")
    ap.add_argument("--streams", default="1,8")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--anvyl-env", action="append", default=[], metavar="K=V", help="extra server environment"
    )
    ap.add_argument("--steps", action="store_true", help="time decode steps in this process")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out
    archs = args.archs.split(",")
    streams = [int(s) for s in args.streams.split(",")]
    env = dict(item.split("=", 1) for item in args.anvyl_env)
    workdir = Path(tempfile.mkdtemp(prefix="anvyl-bench-archs-"))
    tokenizer = default_model()
    specs = []
    for arch in archs:
        model = write_random_model(
            workdir / arch,
            arch,
            tokenizer_from=tokenizer,
            overrides=OVERRIDES.get(arch),
            **BUNDLED_SHAPES,
        )
        specs.append(anvyl_spec(arch, model, env))
    if args.steps:
        os.environ.update(env)
        rates = step_rates({a: workdir / a for a in archs}, streams, max(args.rounds, 10))
        print_steps(rates)
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / f"archs-steps-{time.strftime('%Y%m%d-%H%M%S')}.json"
        out.write_text(json.dumps({"shapes": BUNDLED_SHAPES, "env": env, "rates": rates}))
        print(f"\nsaved {out}")
        return 0
    results = bench_servers(specs, streams, args.max_tokens, workdir, args.rounds, 0)
    print_table(results, streams)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"archs-{time.strftime('%Y%m%d-%H%M%S')}.json"
    medians = {r.name: {n: statistics.median(v) for n, v in r.rounds.items()} for r in results}
    out.write_text(
        json.dumps(
            {
                "shapes": BUNDLED_SHAPES,
                "env": env,
                "max_tokens": args.max_tokens,
                "medians": medians,
                "results": [asdict(r) for r in results],
            },
            indent=2,
        )
    )
    print(f"\nsaved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
