"""Benchmark: Anvyl's model server against mlx_lm.server and llama.cpp's llama-server, in one run.

Same model, same machine, same run. For each server: decode tokens/s at 1, 4, 8 and 16
concurrent streams (aggregate and per stream), time to first token of a ~500-token prompt, the
stall that prompt causes in four streams already decoding (their longest gap between tokens), the
time to first token of a follow-up turn that resends that prompt as history (prefix reuse), and
peak RSS of the server's process tree. Prints a table and saves JSON under bench/results/.

    .venv/bin/python bench/engine.py [--model DIR] [--max-tokens 128] [--streams 1,4,8,16]
    .venv/bin/python bench/engine.py --random-1b --max-tokens 64 --streams 1,8 --skip-mlx-lm
    .venv/bin/python bench/engine.py --setup-llama      # build llama-server (~3-8 min, once)

Requests are greedy text completions of a counting prompt (it does not hit an end token, so
every stream generates exactly max_tokens); every request gets a prompt not sent before, so no
server can answer from a prompt cache. OpenBLAS is preloaded for every server (it does not change
the speed of quantized weights). llama.cpp runs as its own C++ `llama-server` (continuous
batching, `-np` slots for the largest stream count), built by `--setup-llama` from the sources
vendored in the llama-cpp-python 0.3.16 sdist into `~/.cache/anvyl-bench/llama-cpp` (outside the
repository, never a project dependency), on the GGUF the model was imported from, once per
`--llama-threads` count (1 and 2 by default: the best is the reference for the ratios).
`--random-1b` benchmarks a 1B-class Llama with random Q4_1 weights instead (`gguf_model.py`),
imported into Anvyl so both servers run identical weights. `--anvyl-variant
NAME:K=V,...` adds Anvyl runs with extra environment (levers switched off or on) to compare in
the same run; `--with-mlx-lm-fp32` adds mlx_lm.server on a float32 copy of the model.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import shutil
import signal
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
LLAMA_VENV = Path.home() / ".cache" / "anvyl-bench" / "llama-venv"  # bench/agreement.py's
LLAMA_CPP = Path.home() / ".cache" / "anvyl-bench" / "llama-cpp"
LLAMA_SDIST = (
    "llama-cpp-python==0.3.16"  # its vendored llama.cpp is what llama-server is built from
)
RANDOM_1B = Path.home() / ".cache" / "anvyl-bench" / "random-llama-1b"
# 0.3.36 built here segfaults in llama_decode on this CPU (AMX in a VM); 0.3.16 without AMX works.
LLAMA_PACKAGE = "llama-cpp-python[server]==0.3.16"
LLAMA_CMAKE_ARGS = "-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
LONG_PROMPT_NUMBERS = 62  # about 500 tokens with this tokenizer (the usage count is reported)
STALL_STREAMS = 4


@dataclass
class StreamResult:
    """One streamed request."""

    tokens: int
    ttft: float
    decode_time: float
    total_time: float
    prompt_tokens: int = 0
    arrivals: list[float] = field(default_factory=list, repr=False)
    text: str = ""


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
class PromptResult:
    """Long-prompt numbers: TTFT alone, stall of running streams, follow-up TTFT."""

    prompt_tokens: int = 0
    ttft_long: float = 0.0
    stall_max_gap: float = 0.0
    stall_median_gap: float = 0.0
    ttft_long_under_load: float = 0.0
    followup_prompt_tokens: int = 0
    ttft_followup: float = 0.0


@dataclass
class ServerResult:
    """Everything measured for one server."""

    name: str
    command: list[str]
    runs: list[RunResult] = field(default_factory=list)
    prompt: PromptResult | None = None
    peak_rss_mib: float = 0.0
    skipped: str | None = None
    # Aggregate tok/s of every round, by stream count (the spread behind each median).
    rounds: dict[int, list[float]] = field(default_factory=dict)


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


def long_prompt() -> str:
    """A ~500-token counting prompt never sent before in this run."""
    start = 100_000 + 1000 * next(_prompt_counter)
    return ", ".join(str(n) for n in range(start, start + LONG_PROMPT_NUMBERS)) + ","


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
    usage: dict[str, int] = {}
    arrivals: list[float] = []
    text = []
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
                usage = data["usage"]
            choices = data.get("choices") or []
            if choices and choices[0].get("text"):
                now = time.perf_counter()
                first = first or now
                last = now
                chunks += 1
                arrivals.append(now)
                text.append(choices[0]["text"])
    tokens = usage.get("completion_tokens") or chunks
    return StreamResult(
        tokens,
        first - t0,
        last - first,
        last - t0,
        usage.get("prompt_tokens", 0),
        arrivals,
        "".join(text),
    )


def run_streams(base: str, model: str, n: int, max_tokens: int) -> RunResult:
    """`n` concurrent streams; aggregate and per-stream numbers."""
    results: list[StreamResult | None] = [None] * n

    prompts = [next_prompt() for _ in range(n)]

    def worker(i: int) -> None:
        try:
            results[i] = stream_once(base, model, prompts[i], max_tokens)
        except httpx.HTTPError as exc:  # counted as a failed stream, reported below
            print(f"   stream {i} failed: {exc}", flush=True)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    done = [r for r in results if r is not None]
    if len(done) < n:
        raise RuntimeError(f"{n - len(done)} of {n} streams failed")
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


def measure_prompts(base: str, model: str, max_tokens: int) -> PromptResult:
    """TTFT of a long prompt alone, its stall on running streams, and a follow-up turn."""
    out = PromptResult()
    first = long_prompt()
    alone = stream_once(base, model, first, 16)
    out.prompt_tokens = alone.prompt_tokens
    out.ttft_long = round(alone.ttft, 3)
    # Multi-turn: the next request resends the first prompt and its answer as history.
    followup = first + alone.text + " and then,"
    again = stream_once(base, model, followup, 4)
    out.followup_prompt_tokens = again.prompt_tokens
    out.ttft_followup = round(again.ttft, 3)
    # Stall: streams already decoding, then a long prompt arrives.
    running: list[StreamResult | None] = [None] * STALL_STREAMS
    prompts = [next_prompt() for _ in range(STALL_STREAMS)]

    def worker(i: int) -> None:
        running[i] = stream_once(base, model, prompts[i], max_tokens)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(STALL_STREAMS)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    late = stream_once(base, model, long_prompt(), 4)
    for t in threads:
        t.join()
    out.ttft_long_under_load = round(late.ttft, 3)
    gaps = [b - a for r in running if r is not None for a, b in itertools.pairwise(r.arrivals)]
    if gaps:
        out.stall_max_gap = round(max(gaps), 3)
        out.stall_median_gap = round(statistics.median(gaps), 4)
    return out


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
    command = [part.replace("{port}", str(port)) for part in spec.command]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=spec.env)
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


def bench_servers(
    specs: list[ServerSpec],
    streams: list[int],
    max_tokens: int,
    workdir: Path,
    rounds: int,
    prompt_rounds: int,
) -> list[ServerResult]:
    """Start every server, then measure them in alternating rounds and keep the medians.

    The machine is shared: background load drifts over minutes, so measuring one server after
    the other would compare loads as much as servers. Interleaving rounds (order reversed every
    other round) spreads the drift over all of them; the median round is reported.
    """
    results = [ServerResult(spec.name, spec.command) for spec in specs]
    with contextlib.ExitStack() as stack:
        live: list[tuple[ServerSpec, str, RssSampler, ServerResult]] = []
        for spec, result in zip(specs, results, strict=True):
            print(f"== {spec.name}: starting", flush=True)
            port = free_port()
            log = workdir / f"{spec.name.replace(' ', '_').replace(':', '_')}.log"
            try:
                proc = stack.enter_context(running(spec, port, log))
            except RuntimeError as exc:
                result.skipped = f"failed: {exc}"[:500]
                print(f"   {result.skipped}", flush=True)
                continue
            rss = stack.enter_context(RssSampler(proc.pid))
            live.append((spec, f"http://127.0.0.1:{port}", rss, result))
        for spec, base, _, _ in live:
            run_streams(base, spec.model_name, max(streams), 16)  # warm every batch shape
        for n in streams:
            samples: dict[str, list[RunResult]] = {spec.name: [] for spec, *_ in live}
            for r in range(rounds):
                for spec, base, _, result in live if r % 2 == 0 else live[::-1]:
                    try:
                        run = run_streams(base, spec.model_name, n, max_tokens)
                    except RuntimeError as exc:
                        result.skipped = f"{n} streams: {exc}"
                        print(f"   {spec.name}: {result.skipped}", flush=True)
                        continue
                    print(f"   {spec.name}: {n} streams, round {r + 1}: {run}", flush=True)
                    samples[spec.name].append(run)
            for spec, _, _, result in live:
                runs = sorted(samples[spec.name], key=lambda x: x.aggregate_tps)
                if runs:
                    result.runs.append(runs[len(runs) // 2])
                    result.rounds[n] = [x.aggregate_tps for x in samples[spec.name]]
        for spec, base, _, result in live if prompt_rounds > 0 else []:
            measured = [measure_prompts(base, spec.model_name, max_tokens)]
            measured += [
                measure_prompts(base, spec.model_name, max_tokens) for _ in range(prompt_rounds - 1)
            ]
            result.prompt = _median_prompt(measured)
            print(f"   {spec.name}: {result.prompt}", flush=True)
        for _, _, rss, result in live:
            rss.__exit__()
            result.peak_rss_mib = round(rss.peak / 2**20, 1)
    return results


def _median_prompt(measured: list[PromptResult]) -> PromptResult:
    """The field-wise median of several prompt measurements."""
    out = PromptResult()
    for name in asdict(out):
        values = [getattr(m, name) for m in measured]
        setattr(out, name, type(values[0])(statistics.median(values)))
    return out


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


def llama_python(venv: Path) -> Path | None:
    """The venv's Python when llama.cpp's server is importable in it."""
    py = venv / "bin" / "python"
    if not py.is_file():
        return None
    probe = subprocess.run(
        [str(py), "-c", "import llama_cpp.server"], capture_output=True, check=False
    )
    return py if probe.returncode == 0 else None


def setup_llama(venv: Path) -> Path:
    """Build llama-cpp-python's server from source into `venv` (about 8 minutes, once)."""
    py = llama_python(venv)
    if py is not None:
        print(f"llama.cpp server already built in {venv}")
        return py
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    print(f"building {LLAMA_PACKAGE} from source into {venv} (about 8 minutes)", flush=True)
    env = os.environ | {
        "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 1),
        "CMAKE_ARGS": LLAMA_CMAKE_ARGS,
    }
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--no-binary", "llama-cpp-python", LLAMA_PACKAGE],
        check=True,
        env=env,
    )
    py = llama_python(venv)
    if py is None:
        raise RuntimeError(f"llama_cpp.server is not importable in {venv} after the build")
    return py


def llama_server_bin(root: Path) -> Path | None:
    """The directory holding a built `llama-server`, or None."""
    bin_dir = root / "bin"
    return bin_dir if (bin_dir / "llama-server").is_file() else None


def setup_llama_server(root: Path) -> Path:
    """Build llama.cpp's `llama-server` from the llama-cpp-python sdist's sources (once)."""
    built = llama_server_bin(root)
    if built is not None:
        print(f"llama-server already built in {built}")
        return built
    src = root / "src"
    src.mkdir(parents=True, exist_ok=True)
    if not list(src.glob("llama_cpp_python-*.tar.gz")):
        download = [sys.executable, "-m", "pip", "download", "-q", "--no-deps"]
        subprocess.run([*download, "--no-binary", ":all:", LLAMA_SDIST, "-d", str(src)], check=True)
    (sdist,) = src.glob("llama_cpp_python-*.tar.gz")
    subprocess.run(["tar", "xzf", str(sdist), "-C", str(src)], check=True)
    tree = next(src.glob("llama_cpp_python-*/vendor/llama.cpp"))
    print(f"building llama-server in {tree} (3-8 minutes on 2 cores)", flush=True)
    # AMX off: it crashes in these VMs (see LLAMA_CMAKE_ARGS).
    configure = ["cmake", "-B", "build", "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF"]
    configure += [*LLAMA_CMAKE_ARGS.split(), "-DLLAMA_BUILD_TESTS=OFF"]
    subprocess.run(configure, cwd=tree, check=True)
    jobs = str(os.cpu_count() or 1)
    subprocess.run(
        ["cmake", "--build", "build", "--target", "llama-server", "-j", jobs], cwd=tree, check=True
    )
    bin_dir = root / "bin"
    bin_dir.mkdir(exist_ok=True)
    for f in (tree / "build" / "bin").iterdir():
        shutil.copy2(f, bin_dir / f.name)
    return bin_dir


def llama_server_spec(
    bin_dir: Path, gguf: Path, threads: int, slots: int, ctx_per_slot: int
) -> ServerSpec:
    """llama-server on `gguf` with `slots` parallel slots of `ctx_per_slot` tokens each."""
    command = [str(bin_dir / "llama-server"), "-m", str(gguf), "--host", "127.0.0.1"]
    command += ["--port", "{port}", "-a", "bench", "-np", str(slots)]
    command += ["-c", str(slots * ctx_per_slot), "-t", str(threads), "-tb", str(threads)]
    env = base_env() | {"LD_LIBRARY_PATH": str(bin_dir)}
    return ServerSpec(f"llama-server t{threads}", command, env, "bench")


def random_1b_model(tokenizer_model: Path, workdir: Path) -> tuple[Path, Path]:
    """The 1B-class random GGUF and its Anvyl import (both cached under `RANDOM_1B`)."""
    from gguf_model import write_llama_gguf

    from anvyl.catalog.gguf_import import import_gguf

    RANDOM_1B.mkdir(parents=True, exist_ok=True)
    source = find_gguf(tokenizer_model, workdir)
    if source is None:
        raise RuntimeError(f"no GGUF beside {tokenizer_model} to take the tokenizer from")
    gguf = write_llama_gguf(RANDOM_1B / "random-llama-1b.Q4_1.gguf", source)
    mlx_dir = RANDOM_1B / "mlx"
    if not (mlx_dir / "config.json").is_file():
        import_gguf(gguf, mlx_dir, model_id="random-llama-1b")
    return gguf, mlx_dir


def weights_mib(model: Path, dtype: str = "auto") -> float:
    """Size of the weights as Anvyl loads them (the RSS target is this plus 300 MB)."""
    code = (
        "import sys; from pathlib import Path; from mlx.utils import tree_flatten;"
        "from anvyl.modelserver.loader import load_model_dir;"
        "m = load_model_dir(Path(sys.argv[1]), sys.argv[2]).model;"
        "print(sum(v.nbytes for _, v in tree_flatten(m.parameters())))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(model), dtype],
        capture_output=True,
        text=True,
        check=True,
        env=base_env(),
    )
    return round(int(out.stdout.strip().splitlines()[-1]) / 2**20, 1)


def anvyl_command(model: Path) -> list[str]:
    """Anvyl's model server on `model` as a benchmark server (port filled in per run)."""
    return [
        sys.executable,
        "-m",
        "anvyl.modelserver",
        "--model",
        str(model),
        "--model-id",
        "bench",
        "--port",
        "{port}",
        "--health-port",
        "0",
        "--max-queue",
        "256",
    ]


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


def profile(model: Path, dtype: str, batches: list[int]) -> int:
    """Profile a decode step in a child process that has OpenBLAS preloaded like the server."""
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]);"
        "from _engine_helpers import profile_step;"
        "profile_step(Path(sys.argv[2]), sys.argv[3], [int(b) for b in sys.argv[4].split(',')])"
    )
    env = base_env()
    env.update({k: v for k, v in os.environ.items() if k.startswith("ANVYL_")})
    argv = [str(Path(__file__).parent), str(model), dtype, ",".join(map(str, batches))]
    return subprocess.run([sys.executable, "-c", code, *argv], env=env, check=False).returncode


def parse_variant(text: str) -> tuple[str, dict[str, str], list[str]]:
    """`NAME:K=V,K=V[,--flag=value]` → name, extra environment, extra server flags."""
    name, _, rest = text.partition(":")
    env: dict[str, str] = {}
    flags: list[str] = []
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        if key.startswith("--"):
            flags += [key, value]
        else:
            env[key] = value
    return name, env, flags


def main() -> int:
    """Run the benchmark, print the table, save the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, help="MLX model directory (default: the bundled one)")
    ap.add_argument("--gguf", type=Path, help="GGUF for llama.cpp (default: the model's source)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--streams", default="1,4,8,16")
    ap.add_argument("--rounds", type=int, default=1, help="alternating rounds per concurrency")
    ap.add_argument("--prompt-rounds", type=int, default=1, help="rounds of the prompt tests")
    ap.add_argument(
        "--with-quantized",
        action="store_true",
        help="also run Anvyl with --dtype quantized (the weights as stored)",
    )
    ap.add_argument(
        "--anvyl-variant",
        action="append",
        default=[],
        metavar="NAME:K=V,...",
        help="also run Anvyl with this extra environment (and --flags), to compare levers",
    )
    ap.add_argument("--skip-anvyl", action="store_true", help="only the variants and the others")
    ap.add_argument("--skip-mlx-lm", action="store_true")
    ap.add_argument("--skip-llama", action="store_true")
    ap.add_argument(
        "--with-mlx-lm-fp32",
        action="store_true",
        help="also run mlx_lm.server on a float32 (dequantized) copy of the model",
    )
    ap.add_argument("--llama-venv", type=Path, default=LLAMA_VENV)
    ap.add_argument("--llama-cpp", type=Path, default=LLAMA_CPP, help="llama-server's build")
    ap.add_argument(
        "--llama-threads",
        default="1,2",
        help="llama-server thread counts, each run as its own server in the same run (on 2"
        " shared cores neither is always best: 1B decoded 8.7 tok/s with 1 thread, 15.1 with 2)",
    )
    ap.add_argument("--llama-ctx", type=int, default=1024, help="llama-server context per slot")
    ap.add_argument(
        "--random-1b",
        action="store_true",
        help="benchmark a 1B-class Llama with random Q4_1 weights (written once, cached)",
    )
    ap.add_argument(
        "--profile",
        metavar="BATCHES",
        help="profile one decode step in this process at these batch sizes (e.g. 1,8) and exit",
    )
    ap.add_argument("--dtype", default="auto", help="weight dtype for --profile")
    ap.add_argument(
        "--setup-llama",
        action="store_true",
        help="build llama.cpp's llama-server into --llama-cpp (once) and exit",
    )
    ap.add_argument(
        "--setup-llama-python",
        action="store_true",
        help=f"build {LLAMA_PACKAGE} into --llama-venv (for bench/agreement.py) and exit",
    )
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out
    if args.setup_llama:
        setup_llama_server(args.llama_cpp)
        return 0
    if args.setup_llama_python:
        setup_llama(args.llama_venv)
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="anvyl-bench-"))
    random_gguf = None
    if args.random_1b:
        random_gguf, model = random_1b_model(default_model(), workdir)
    model = (model if args.random_1b else args.model or default_model()).resolve()
    if args.profile:
        return profile(model, args.dtype, [int(b) for b in args.profile.split(",")])
    streams = [int(s) for s in args.streams.split(",")]
    py = sys.executable
    hf_cache = workdir / "hf-hub"
    hf_cache.mkdir()

    specs: list[ServerSpec] = []
    anvyl_cmd = anvyl_command(model)
    if not args.skip_anvyl:
        specs.append(ServerSpec("anvyl", anvyl_cmd, base_env(), "bench"))
    for variant in args.anvyl_variant:
        name, extra_env, flags = parse_variant(variant)
        specs.append(
            ServerSpec(f"anvyl:{name}", [*anvyl_cmd, *flags], base_env() | extra_env, "bench")
        )
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
                [py, "-m", "mlx_lm.server", "--model", str(model), "--port", "{port}"],
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
                    [py, "-m", "mlx_lm.server", "--model", str(fp32), "--port", "{port}"],
                    mlx_env,
                    "default_model",
                )
            )
    results: list[ServerResult] = []
    if not args.skip_llama:
        bin_dir = llama_server_bin(args.llama_cpp)
        gguf = args.gguf or random_gguf or find_gguf(model, workdir)
        if bin_dir is None or gguf is None:
            why = (
                f"llama-server is not built in {args.llama_cpp} (run --setup-llama)"
                if bin_dir is None
                else "no GGUF for this model (pass --gguf)"
            )
            results.append(ServerResult("llama-server", [], skipped=why))
            print(f"== llama-server: skipped ({why})", flush=True)
        else:
            for threads in (int(t) for t in args.llama_threads.split(",")):
                spec = llama_server_spec(bin_dir, gguf, threads, max(streams), args.llama_ctx)
                specs.append(spec)

    results += bench_servers(
        specs, streams, args.max_tokens, workdir, args.rounds, args.prompt_rounds
    )

    weights = weights_mib(model)
    print_table(results, streams, weights)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"engine-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                "model": str(model),
                "max_tokens": args.max_tokens,
                "anvyl_weights_mib": weights,
                "machine": {
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                    "load_average": os.getloadavg(),
                },
                "results": [asdict(r) for r in results],
            },
            indent=2,
        )
    )
    print(f"\nsaved {out}")
    return 0


def print_table(results: list[ServerResult], streams: list[int], weights: float) -> None:
    """The comparison tables, with ratios against llama.cpp and mlx_lm.server."""
    llama_runs = [x for r in results if r.name.startswith("llama-server") for x in r.runs]
    llama = ServerResult("llama-server (best)", [])
    for n in streams:  # the best thread count at each concurrency
        best = max(
            (x for x in llama_runs if x.streams == n), key=lambda x: x.aggregate_tps, default=None
        )
        if best is not None:
            llama.runs.append(best)
    mlx = next((r for r in results if r.name == "mlx_lm.server" and r.runs), None)

    def ratio(ref: ServerResult | None, run: RunResult) -> str:
        base = next((x for x in ref.runs if x.streams == run.streams), None) if ref else None
        if base is None or not base.aggregate_tps:
            return ""
        return f"{run.aggregate_tps / base.aggregate_tps:.2f}x"

    def spread(r: ServerResult, n: int) -> str:
        rounds = r.rounds.get(n, [])
        return f"{min(rounds):.1f}-{max(rounds):.1f}" if len(rounds) > 1 else ""

    print()
    head = f"{'server':<24}{'streams':>8}{'agg tok/s':>11}{'tok/s/stream':>14}{'TTFT s':>8}"
    head += f"{'vs llama best':>14}{'vs mlx_lm':>11}{'rounds':>18}"
    print(head)
    print("-" * len(head))
    for r in results:
        if r.skipped and not r.runs:
            print(f"{r.name:<24}  skipped: {r.skipped}")
            continue
        for run in r.runs:
            print(
                f"{r.name:<24}{run.streams:>8}{run.aggregate_tps:>11.1f}"
                f"{run.decode_tps_per_stream:>14.1f}{run.ttft_mean:>8.2f}"
                f"{ratio(llama, run):>14}{ratio(mlx, run):>11}{spread(r, run.streams):>18}"
            )
    print()
    head = f"{'server':<24}{'prompt tok':>11}{'TTFT long':>10}{'under load':>11}"
    head += f"{'stall max':>10}{'gap med':>9}{'follow-up':>10}{'peak RSS MiB':>13}"
    print(head)
    print("-" * len(head))
    for r in results:
        p = r.prompt
        if p is None:
            continue
        print(
            f"{r.name:<24}{p.prompt_tokens:>11}{p.ttft_long:>10.2f}{p.ttft_long_under_load:>11.2f}"
            f"{p.stall_max_gap:>10.2f}{p.stall_median_gap:>9.3f}{p.ttft_followup:>10.2f}"
            f"{r.peak_rss_mib:>13.0f}"
        )
    target = weights + 300e6 / 2**20
    print(f"\nAnvyl weights as loaded: {weights:.0f} MiB (RSS target: {target:.0f} MiB)")


if __name__ == "__main__":
    sys.exit(main())
