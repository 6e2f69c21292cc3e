"""Models on demand: how long a first request waits, how long a swap takes, what the gateway adds.

Starts a real `anvyl serve` (gateway on a free port, `--max-loaded 1`) on a temporary home
holding the bundled model under two ids, and measures, side by side in one run:

- `model start` → first token: the explicit way (CLI start, then a streamed chat);
- first request → first token: a streamed chat to the gateway for a stopped model (it loads);
- swap: alternating streamed requests for the two ids (each unloads one and loads the other);
- gateway overhead for a running model: the same small request (refused by validation, no
  generation) sent to the model's own port and through the gateway, interleaved.

Usage: python bench/ondemand.py [--runtime process|container] [--repeats 3] [--requests 300]
Prints a table and saves bench/results/ondemand-*.json. The machine is noisy: read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _results import save
from _serve import ANVYL, free_port

MODEL = "smollm2-135m-instruct-mlx"
OTHER = "smollm2-second-copy"


class Server:
    """`anvyl serve` with its gateway on `home`."""

    def __init__(self, home: Path, runtime: str) -> None:
        self.home = home
        self.port = free_port()
        self.gateway = f"http://127.0.0.1:{free_port()}"
        self.env = {**os.environ, "ANVYL_HOME": str(home), "ANVYL_ADDR": f"127.0.0.1:{self.port}"}
        self.proc = subprocess.Popen(
            [
                ANVYL,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--runtime",
                runtime,
                "--gateway-port",
                self.gateway.rsplit(":", 1)[1],
                "--ollama-port",
                "0",
                "--dashboard-port",
                "0",
                "--max-loaded",
                "1",
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.gateway}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                sys.exit("anvyl serve did not start")
            time.sleep(0.1)

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [ANVYL, *args], env=self.env, capture_output=True, text=True, timeout=600
        )
        if done.returncode != 0:
            sys.exit(f"anvyl {' '.join(args)} failed: {done.stderr}")
        return done.stdout

    def deployments(self) -> list[dict[str, Any]]:
        return json.loads(self.cli("model", "ps", "-o", "json"))["deployments"]

    def stop_all(self) -> None:
        for d in self.deployments():
            self.cli("model", "stop", d["id"], "--timeout", "5")

    def close(self) -> None:
        self.stop_all()
        self.proc.terminate()
        self.proc.wait(timeout=30)


def first_token(base: str, model: str) -> float:
    """Seconds from sending a streamed chat to its first content chunk."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 8,
        "stream": True,
    }
    start = time.perf_counter()
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=600) as r:
        if r.status_code != 200:
            sys.exit(f"{model}: {r.status_code} {r.read()!r}")
        for line in r.iter_lines():
            if line.startswith("data: ") and '"content"' in line:
                return time.perf_counter() - start
    sys.exit(f"{model}: no token streamed")


def explicit_start(server: Server) -> float:
    """`anvyl model start` (CLI) → first token, seconds."""
    start = time.perf_counter()
    server.cli("model", "start", MODEL, "--port", str(free_port()))
    (d,) = server.deployments()
    first_token(d["url"], MODEL)
    return time.perf_counter() - start


def overhead(server: Server, n: int) -> dict[str, float]:
    """Direct vs gateway latency of a request the model server answers without generating."""
    first_token(server.gateway, MODEL)  # loaded on demand
    (d,) = server.deployments()
    body = {"model": MODEL}  # no messages: refused by validation
    direct: list[float] = []
    via: list[float] = []
    with httpx.Client(timeout=30) as http:
        for _ in range(30):
            http.post(f"{d['url']}/v1/chat/completions", json=body)
            http.post(f"{server.gateway}/v1/chat/completions", json=body)
        for _ in range(n):
            t = time.perf_counter()
            http.post(f"{d['url']}/v1/chat/completions", json=body)
            direct.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            http.post(f"{server.gateway}/v1/chat/completions", json=body)
            via.append((time.perf_counter() - t) * 1000)
    return {
        "direct_median_ms": statistics.median(direct),
        "gateway_median_ms": statistics.median(via),
        "overhead_median_ms": statistics.median(via) - statistics.median(direct),
        "requests": n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime", default="process", choices=("process", "container"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers import test_cache_dir

    from anvyl.catalog.bundled import ensure_bundled_model

    bundled = ensure_bundled_model(test_cache_dir() / "home")
    home = Path(tempfile.mkdtemp(prefix="anvyl-bench-ondemand-"))
    (home / "models").mkdir()
    (home / "models" / MODEL).symlink_to(bundled.resolve(), target_is_directory=True)
    (home / "models" / OTHER).mkdir()
    for item in bundled.resolve().iterdir():  # hard links: a container sees no host symlink
        try:
            os.link(item.resolve(), home / "models" / OTHER / item.name)
        except OSError:  # another file system
            shutil.copy2(item.resolve(), home / "models" / OTHER / item.name)
    server = Server(home, args.runtime)
    try:
        explicit, demand, swaps = [], [], []
        for _ in range(args.repeats):
            explicit.append(explicit_start(server))
            server.stop_all()
            demand.append(first_token(server.gateway, MODEL))
            server.stop_all()
        first_token(server.gateway, MODEL)
        for i in range(2 * args.repeats):
            swaps.append(first_token(server.gateway, OTHER if i % 2 == 0 else MODEL))
        server.stop_all()
        gateway = overhead(server, args.requests)
    finally:
        server.close()
        shutil.rmtree(home, ignore_errors=True)
    report = {
        "runtime": args.runtime,
        "explicit_start_to_first_token_s": explicit,
        "first_request_to_first_token_s": demand,
        "swap_to_first_token_s": swaps,
        "gateway": gateway,
        "meta": {"repeats": args.repeats},
    }
    med = statistics.median
    base = med(explicit)
    rows = [
        ("model start → first token (CLI)", f"{base:.2f} s", "1.00"),
        ("first request → first token", f"{med(demand):.2f} s", f"{med(demand) / base:.2f}"),
        ("swap (--max-loaded 1) → first token", f"{med(swaps):.2f} s", f"{med(swaps) / base:.2f}"),
        ("gateway overhead, running model", f"{gateway['overhead_median_ms']:.2f} ms", "-"),
    ]
    print(f"\nmodels on demand ({args.runtime} runtime, medians of {args.repeats})")
    print(f"{'measure':40} {'median':>10} {'ratio':>6}")
    for name, value, ratio in rows:
        print(f"{name:40} {value:>10} {ratio:>6}")
    save("ondemand", report)


if __name__ == "__main__":
    main()
