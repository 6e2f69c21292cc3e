"""Model lifecycle benchmark: cold start to first token, and `model ps` at 0, 1 and 4 models.

Starts its own `anvyl serve` (temporary ANVYL_HOME holding a link to the bundled model, free
port, containers labelled `anvyl.bench=<run>`), with the model-server image already built, and
measures:

- cold start: `anvyl model start` (the whole CLI process, which waits for `/health`) and then the
  first streamed token of a chat request, for each runtime of `--runtimes` (container: the image
  cached; process: a supervised local process); the target is first token ≤ 3 s after the start;
- `model ps`: the whole `anvyl model ps -o json` CLI process and the ListDeployments RPC on a warm
  channel, with 0, 1 and 4 models running (median and p95; target median ≤ 250 ms).

Prints a table and saves JSON under bench/results/. Usage: `python bench/lifecycle.py
[--runtimes container,process] [--ps-runtime container]`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import docker
import grpc
import httpx
from _results import save
from _serve import ANVYL, free_port, start_server

from anvyl.api import anvyl_pb2 as pb
from anvyl.api import anvyl_pb2_grpc as rpc

COUNTS = (0, 1, 4)
FIRST_TOKEN_TARGET_S = 3.0
PS_TARGET_MS = 250.0


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def bench_home(root: Path) -> tuple[Path, str]:
    """An ANVYL_HOME linking the bundled model (converted once, cached); (home, model id)."""
    from anvyl.catalog.bundled import ensure_bundled_model

    cache = Path(os.environ.get("ANVYL_TEST_CACHE") or Path.home() / ".cache" / "anvyl-tests")
    model = ensure_bundled_model(cache / "home")
    (root / "models").mkdir(parents=True)
    (root / "models" / model.name).symlink_to(model.resolve(), target_is_directory=True)
    return root, model.name


def cli(address: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the `anvyl` CLI against the bench server; exit on failure."""
    result = subprocess.run(
        [ANVYL, *args],
        env={**os.environ, "ANVYL_ADDR": address},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        sys.exit(f"`anvyl {' '.join(args)}` failed: {result.stderr.strip()}")
    return result


def first_token_s(port: int, model_id: str) -> float:
    """Seconds from sending a streamed chat request to its first content token."""
    body = {
        "model": model_id,
        "messages": [{"role": "user", "content": "Hello!"}],
        "max_tokens": 8,
        "stream": True,
    }
    t0 = time.perf_counter()
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    with httpx.stream("POST", url, json=body, timeout=120) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or []
            if choices and choices[0].get("delta", {}).get("content"):
                return time.perf_counter() - t0
    raise RuntimeError("the stream ended without a token")


def bench_cold_start(
    address: str, model_id: str, runs: int, run_id: str, runtime: str
) -> list[dict]:
    """`model start --runtime R` → ready → first token, `runs` times (each stopped after)."""
    samples = []
    for i in range(runs):
        name, port = f"bench-{run_id}-{runtime}-{i}", free_port()
        t0 = time.perf_counter()
        cli(address, "model", "start", model_id, "-n", name, "-p", str(port), "--runtime", runtime)
        ready = time.perf_counter() - t0
        token = first_token_s(port, model_id)
        samples.append({"ready_s": ready, "first_token_s": ready + token})
        cli(address, "model", "stop", name)
    return samples


def bench_ps(address: str, rpc_iterations: int, cli_iterations: int) -> dict[str, list[float]]:
    """ListDeployments on a warm channel and the whole `model ps -o json` process, in ms."""
    with grpc.insecure_channel(address) as channel:
        stub = rpc.ModelServiceStub(channel)
        stub.ListDeployments(pb.ListDeploymentsRequest(), timeout=30)  # warm up
        rpc_ms = []
        for _ in range(rpc_iterations):
            t0 = time.perf_counter()
            stub.ListDeployments(pb.ListDeploymentsRequest(), timeout=30)
            rpc_ms.append((time.perf_counter() - t0) * 1000)
    cli_ms = []
    for _ in range(cli_iterations):
        t0 = time.perf_counter()
        cli(address, "model", "ps", "-o", "json")
        cli_ms.append((time.perf_counter() - t0) * 1000)
    return {"rpc": rpc_ms, "cli": cli_ms}


def scale_to(address: str, model_id: str, run_id: str, running: list[str], want: int) -> None:
    """Start (detached, then wait for every one to be ready) or stop models to have `want`."""
    while len(running) > want:
        cli(address, "model", "stop", running.pop())
    while len(running) < want:
        name = f"bench-{run_id}-ps-{len(running)}"
        cli(address, "model", "start", model_id, "--name", name, "--port", str(free_port()), "-d")
        running.append(name)
    deadline = time.monotonic() + 300
    while True:
        ps = json.loads(cli(address, "model", "ps", "-o", "json").stdout)["deployments"]
        if all(d["state"] == "ready" for d in ps) and len(ps) == want:
            return
        if time.monotonic() > deadline:
            sys.exit(f"models not ready: {[(d['name'], d['state']) for d in ps]}")
        time.sleep(0.2)


def main() -> int:
    """Run the benchmark, print the table, save the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold-runs", type=int, default=5)
    parser.add_argument("--rpc-iterations", type=int, default=100)
    parser.add_argument("--cli-iterations", type=int, default=20)
    parser.add_argument("--runtimes", default="container,process", help="cold starts of each")
    parser.add_argument("--ps-runtime", default="container", help="runtime of the ps models")
    args = parser.parse_args()
    runtimes = [r for r in args.runtimes.split(",") if r]

    client = docker.from_env(timeout=60)
    from anvyl.imaging import default_tag

    try:
        client.images.get(default_tag())
    except docker.errors.ImageNotFound:
        sys.exit(f"build the image first (`anvyl image build`): {default_tag()} is missing")
    run_id = uuid.uuid4().hex[:8]
    selector = f"anvyl.bench={run_id}"
    ps_rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="anvyl-bench-") as tmp:
        home, model_id = bench_home(Path(tmp))
        env = {"ANVYL_LABELS": selector, "ANVYL_RUNTIME": args.ps_runtime}
        proc, address = start_server(home, env)
        running: list[str] = []
        try:
            cold = {
                runtime: bench_cold_start(address, model_id, args.cold_runs, run_id, runtime)
                for runtime in runtimes
            }
            for count in COUNTS:
                scale_to(address, model_id, run_id, running, count)
                ms = bench_ps(address, args.rpc_iterations, args.cli_iterations)
                ps_rows.append(
                    {
                        "models": count,
                        "rpc_p50_ms": round(statistics.median(ms["rpc"]), 2),
                        "rpc_p95_ms": round(percentile(ms["rpc"], 95), 2),
                        "cli_p50_ms": round(statistics.median(ms["cli"]), 1),
                        "cli_p95_ms": round(percentile(ms["cli"], 95), 1),
                        "rpc_samples": len(ms["rpc"]),
                        "cli_samples": len(ms["cli"]),
                    }
                )
            scale_to(address, model_id, run_id, running, 0)
        finally:
            listed = subprocess.run(
                [ANVYL, "model", "ps", "-o", "json"],
                env={**os.environ, "ANVYL_ADDR": address},
                capture_output=True,
                text=True,
            )
            if listed.returncode == 0:  # process deployments outlive the server: stop them
                for d in json.loads(listed.stdout)["deployments"]:
                    subprocess.run(
                        [ANVYL, "model", "stop", d["id"]],
                        env={**os.environ, "ANVYL_ADDR": address},
                        capture_output=True,
                    )
            proc.terminate()
            proc.wait(timeout=60)
            for container in client.containers.list(all=True, filters={"label": selector}):
                container.remove(force=True)

    cold_rows = {}
    for runtime, samples in cold.items():
        ready = [s["ready_s"] for s in samples]
        token = [s["first_token_s"] for s in samples]
        row = {
            "runs": len(samples),
            "ready_p50_s": round(statistics.median(ready), 2),
            "first_token_p50_s": round(statistics.median(token), 2),
            "first_token_max_s": round(max(token), 2),
            "target_s": FIRST_TOKEN_TARGET_S,
            "samples": [{k: round(v, 3) for k, v in s.items()} for s in samples],
        }
        cold_rows[runtime] = row
        print(f"cold start, {runtime} runtime ({len(samples)} runs): `model start` → ready "
              f"{row['ready_p50_s']:.2f} s median; → first token "
              f"{row['first_token_p50_s']:.2f} s median, {row['first_token_max_s']:.2f} s "
              f"max (target ≤ {FIRST_TOKEN_TARGET_S:.0f} s)")  # fmt: skip
    print(f"{'models':>6} {'RPC p50':>9} {'RPC p95':>9} {'CLI p50':>9} {'CLI p95':>9}")
    for r in ps_rows:
        print(
            f"{r['models']:>6} {r['rpc_p50_ms']:>7.2f}ms {r['rpc_p95_ms']:>7.2f}ms "
            f"{r['cli_p50_ms']:>7.1f}ms {r['cli_p95_ms']:>7.1f}ms"
        )
    print(f"target: `model ps` median ≤ {PS_TARGET_MS:.0f} ms")
    meta = {"engine": client.version().get("Version")}
    meta["ps_runtime"] = args.ps_runtime
    save("lifecycle", {"meta": meta, "cold_start": cold_rows, "model_ps": ps_rows})
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
