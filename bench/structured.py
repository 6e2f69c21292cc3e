"""Benchmark: structured output (constrained decoding) against free decoding, in one run.

One real model server (the bundled model unless `--model`), greedy text completions:

- decode tokens/s, constrained vs free, at 1 and 8 concurrent streams (target: >= 0.9x free);
- schema compile time, cold and cached, for the test schemas (targets: <= 50 ms, <= 1 ms),
  measured in-process on the model's own tokenizer;
- time to first token with and without a schema;
- the share of constrained outputs that parse and validate (must be 100%).

    .venv/bin/python bench/structured.py [--model DIR] [--max-tokens 200] [--repeats 3]

Prints a table and saves JSON under bench/results/. The machines are shared: compare the ratios
of one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
from _results import save  # noqa: E402
from _serve import free_port  # noqa: E402

OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3"
MODEL_ID = "bench"
# A document long enough to time decoding: forty bounded integers.
LONG_SCHEMA = {
    "type": "object",
    "properties": {
        "values": {
            "type": "array",
            "items": {"type": "integer", "minimum": 0, "maximum": 999},
            "minItems": 40,
            "maxItems": 40,
        }
    },
    "required": ["values"],
}


def default_model() -> Path:
    """The bundled model as the tests import it."""
    from anvyl.catalog.bundled import ensure_bundled_model

    return ensure_bundled_model(Path.home() / ".cache" / "anvyl-tests" / "home")


def start(model: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A model server on free ports; returns it and its URL once healthy."""
    port, health = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANVYL_")}
    if Path(OPENBLAS).exists():
        env["LD_PRELOAD"] = OPENBLAS
    cmd = [sys.executable, "-m", "anvyl.modelserver", "--model", str(model), "--model-id",
           MODEL_ID, "--port", str(port), "--health-port", str(health), "--max-batch", "8",
           "--ctx", "2048"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{health}/health", timeout=2).status_code == 200:
                return proc, f"http://127.0.0.1:{port}"
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    sys.exit("the model server did not start")


def stream_one(url: str, body: dict[str, Any]) -> dict[str, Any]:
    """One streamed text completion: text, token arrivals, finish reason."""
    arrivals: list[float] = []
    text = ""
    reason = None
    start_at = time.perf_counter()
    with httpx.stream("POST", f"{url}/v1/completions", json=body | {"stream": True},
                      timeout=600) as r:  # fmt: skip
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choice = json.loads(line[6:])["choices"][0]
            piece = choice.get("text")
            if piece:
                arrivals.append(time.perf_counter())
                text += piece
            reason = choice.get("finish_reason") or reason
    return {"text": text, "arrivals": arrivals, "start": start_at, "reason": reason}


def request(i: int, max_tokens: int, constrained: bool) -> dict[str, Any]:
    """The i-th request body (a fresh prompt each time: no prefix cache hits).

    Free requests continue a count, which does not reach an end token, so both kinds generate
    about the same number of tokens (a constrained one ends with its forty numbers).
    """
    body: dict[str, Any] = {"model": MODEL_ID, "temperature": 0, "max_tokens": max_tokens}
    if constrained:
        body["prompt"] = f"Forty numbers from {i} as JSON: "
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "v", "schema": LONG_SCHEMA}}  # fmt: skip
    else:
        body["prompt"] = ", ".join(str(i + k) for k in range(8)) + ","
    return body


def run(url: str, streams: int, constrained: bool, max_tokens: int, seq: list[int]) -> dict:
    """`streams` concurrent requests: aggregate decode tokens/s, TTFT, validity."""
    bodies = []
    for _ in range(streams):
        seq[0] += 1
        bodies.append(request(seq[0], max_tokens, constrained))
    with concurrent.futures.ThreadPoolExecutor(streams) as pool:
        results = list(pool.map(lambda b: stream_one(url, b), bodies))
    tokens = sum(len(r["arrivals"]) for r in results)
    first = min(r["arrivals"][0] for r in results if r["arrivals"])
    last = max(r["arrivals"][-1] for r in results if r["arrivals"])
    valid = 0
    for r in results:
        if not constrained:
            continue
        try:
            jsonschema.validate(json.loads(r["text"]), LONG_SCHEMA)
            valid += r["reason"] == "stop"
        except (json.JSONDecodeError, jsonschema.ValidationError):
            pass
    return {
        "tokens": tokens,
        "decode_tps": (tokens - len(results)) / (last - first) if last > first else 0.0,
        "ttft": statistics.mean(r["arrivals"][0] - r["start"] for r in results if r["arrivals"]),
        "valid": valid,
        "outputs": len(results),
    }


def compile_times(model: Path) -> dict[str, float]:
    """Cold and cached compile times (ms) of the test schemas on the model's tokenizer."""
    from mlx_lm.tokenizer_utils import load as load_tokenizer
    from openai.lib._pydantic import to_strict_json_schema
    from structured_cases import MODELS

    from anvyl.modelserver.grammar import Grammars, json_schema_grammar

    tokenizer = load_tokenizer(model)
    grammars = Grammars(tokenizer, len(tokenizer.vocab))
    started = time.perf_counter()
    grammars.build()
    bridge = time.perf_counter() - started
    cold, cached = [], []
    for m in MODELS:
        schema = to_strict_json_schema(m)
        t0 = time.perf_counter()
        grammars.compile(json_schema_grammar(schema), "bench")
        t1 = time.perf_counter()
        grammars.compile(json_schema_grammar(schema), "bench")
        t2 = time.perf_counter()
        cold.append((t1 - t0) * 1000)
        cached.append((t2 - t1) * 1000)
    return {
        "schemas": len(MODELS),
        "tokenizer_bridge_ms": bridge * 1000,
        "cold_ms_median": statistics.median(cold),
        "cold_ms_max": max(cold),
        "cached_ms_median": statistics.median(cached),
        "cached_ms_max": max(cached),
    }


def main() -> None:
    """Run everything, print the table, save JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = args.model or default_model()
    compile_report = compile_times(model)
    proc, url = start(model)
    seq = [0]
    rows: dict[str, Any] = {}
    try:
        run(url, 1, True, 16, seq)  # warm both paths
        run(url, 1, False, 16, seq)
        for streams in (1, 8):
            for constrained in (False, True):
                key = f"{'constrained' if constrained else 'free'}@{streams}"
                runs = [run(url, streams, constrained, args.max_tokens, seq)
                        for _ in range(args.repeats)]  # fmt: skip
                rows[key] = {
                    "decode_tps": statistics.median(r["decode_tps"] for r in runs),
                    "ttft_s": statistics.median(r["ttft"] for r in runs),
                    "tokens": sum(r["tokens"] for r in runs),
                    "valid": sum(r["valid"] for r in runs),
                    "outputs": sum(r["outputs"] for r in runs),
                }
    finally:
        proc.terminate()
        proc.wait(30)
    print(f"\nstructured output, {model.name}, greedy, max_tokens {args.max_tokens}")
    head = ("run", "decode tok/s", "ratio", "TTFT s", "tokens", "valid")
    print("{:16s} {:>12s} {:>6s} {:>7s} {:>7s} {:>8s}".format(*head))
    for key, row in rows.items():
        free = rows[key.replace("constrained", "free")]["decode_tps"]
        ratio = row["decode_tps"] / free if free else 0.0
        valid = f"{row['valid']}/{row['outputs']}" if key.startswith("constrained") else "-"
        print(f"{key:16s} {row['decode_tps']:12.1f} {ratio:6.2f} {row['ttft_s']:7.3f}"
              f" {row['tokens']:7d} {valid:>8s}")  # fmt: skip
    c = compile_report
    print(
        f"schema compile ({c['schemas']} test schemas): cold median {c['cold_ms_median']:.1f} ms,"
        f" max {c['cold_ms_max']:.1f} ms; cached median {c['cached_ms_median']:.3f} ms, max"
        f" {c['cached_ms_max']:.3f} ms; tokenizer bridge {c['tokenizer_bridge_ms']:.0f} ms"
    )
    save("structured", {"runs": rows, "compile": compile_report,
                        "meta": {"model": str(model), "max_tokens": args.max_tokens}})  # fmt: skip


if __name__ == "__main__":
    main()
