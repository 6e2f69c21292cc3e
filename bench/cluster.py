"""Cluster benchmark on a 3-node Swarm lab: replicas start, gateway overhead, failover gap.

Brings up the test-suite's lab (`tests/swarm/lab.py`: three engines in network namespaces),
starts its own `anvyl serve` on the manager's engine (temporary ANVYL_HOME linking the bundled
model, gateway on a free port), and measures:

- start: `anvyl model start --replicas 2` until both replicas answer `/health` (the CLI waits),
  first with the image on the manager only and the model on no node (Anvyl loads the image on
  the workers and copies the model into a volume on every node, through the engines `host add`
  recorded), then again (image and model already there);
- gateway overhead: the same small request (answered by the model server without generating)
  sent directly to a replica and through the gateway, interleaved (median and p99);
- failover gap: requests sent back to back through the gateway while a worker holding a replica
  is killed (its whole process tree); the longest time without a successful answer, the
  failures, and the time until Swarm has both replicas ready again.

Needs root and the model-server image on the local engine. Prints a table and saves JSON under
bench/results/. Usage: `python bench/cluster.py [--requests N]`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "swarm"))
sys.path.insert(0, str(ROOT / "tests"))
from lab import SwarmLab  # noqa: E402

RESULTS = ROOT / "bench" / "results"
ANVYL = str(Path(sys.executable).parent / "anvyl")
OVERHEAD_TARGET_MS = 2.0
FAILOVER_TARGET_S = 15.0
START_TIMEOUT_S = 600


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


class Server:
    """`anvyl serve` on the lab's manager, and the CLI against it."""

    def __init__(self, home: Path, manager_url: str, labels: str) -> None:
        self.port = free_port()
        self.gateway_port = free_port()
        self.env = {
            **os.environ,
            "ANVYL_HOME": str(home),
            "ANVYL_ADDR": f"127.0.0.1:{self.port}",
            "DOCKER_HOST": manager_url,
            "ANVYL_LABELS": labels,
        }
        self.proc = subprocess.Popen(
            [
                ANVYL,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--gateway-port",
                str(self.gateway_port),
                "--dashboard-port",
                "0",
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.cli("host", "list", check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError("anvyl serve did not start")

    @property
    def gateway(self) -> str:
        """The gateway's base URL."""
        return f"http://127.0.0.1:{self.gateway_port}"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the CLI; raise on failure when `check`."""
        result = subprocess.run(
            [ANVYL, *args], env=self.env, capture_output=True, text=True, timeout=START_TIMEOUT_S
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"anvyl {' '.join(args)}: {result.stderr}")
        return result

    def deployment(self, name: str) -> dict[str, Any]:
        """One deployment from `model ps -o json`."""
        rows = json.loads(self.cli("model", "ps", "-o", "json").stdout)["deployments"]
        return next(d for d in rows if d["name"] == name)

    def stop(self) -> None:
        """Stop the server."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def time_start(server: Server, model: str, name: str) -> dict[str, Any]:
    """`model start --replicas 2` until it returns (both replicas ready), with its phases.

    The phases come from the CLI's progress lines, timed as they arrive: putting the image and
    the model on the nodes (from hashing the model to "the model is on N node(s)"), and loading
    the weights (from then to ready). A rebuild of the image on the manager is flagged: it
    happens when Anvyl's sources changed since the image was made, and is not node copying.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(
        [ANVYL, "model", "start", model, "--name", name, "--replicas", "2", "--port",
         str(free_port()), "--memory", "1g"],
        env=server.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    lines = [(time.perf_counter() - started, line.rstrip()) for line in proc.stderr]
    proc.wait(timeout=START_TIMEOUT_S)
    total = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError("model start failed:\n" + "\n".join(line for _, line in lines))

    def first(text: str) -> float | None:
        return next((t for t, line in lines if text in line), None)

    prepare_from, prepare_to = first("hashing the files"), first("the model is on")
    loading = first("Loading weights")
    return {
        "total_s": total,
        "nodes_prepare_s": (prepare_to - prepare_from) if prepare_from and prepare_to else None,
        "loading_s": (total - loading) if loading else None,
        "manager_image_rebuilt": any("building it" in x or "updating it" in x for _, x in lines),
        "images_loaded": sum("image loaded" in line for _, line in lines),
        "models_copied": sum("model files copied" in line for _, line in lines),
    }


def overhead(server: Server, model: str, name: str, home: Path, n: int) -> dict[str, float]:
    """Direct vs gateway latency of a request the model server answers without generating."""
    d = server.deployment(name)
    replica = next(r for r in d["replicas"] if r["ready"])
    key = (home / "secrets" / d["id"] / "api-key").read_text().strip()
    direct_url = f"http://{replica['address']}:{d['port']}/v1/chat/completions"
    gateway_url = f"{server.gateway}/v1/chat/completions"
    body = {"model": model}  # no messages: refused by validation, no generation
    direct: list[float] = []
    via: list[float] = []
    with httpx.Client(timeout=30) as http:
        headers = {"Authorization": f"Bearer {key}"}
        for _ in range(30):  # warm both paths and their pools
            http.post(direct_url, json=body, headers=headers)
            http.post(gateway_url, json=body)
        for _ in range(n):
            t = time.perf_counter()
            http.post(direct_url, json=body, headers=headers)
            direct.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            response = http.post(gateway_url, json=body)
            via.append((time.perf_counter() - t) * 1000)
        assert response.status_code in (400, 422), response.text
    return {
        "direct_median_ms": statistics.median(direct),
        "direct_p99_ms": percentile(direct, 99),
        "gateway_median_ms": statistics.median(via),
        "gateway_p99_ms": percentile(via, 99),
        "overhead_median_ms": statistics.median(via) - statistics.median(direct),
        "overhead_p99_ms": percentile(via, 99) - percentile(direct, 99),
        "requests": n,
    }


def failover(server: Server, lab: SwarmLab, model: str, name: str) -> dict[str, Any]:
    """Kill a worker holding a replica under back-to-back traffic; the gap and the failures."""
    d = server.deployment(name)
    nodes = {r["node"] for r in d["replicas"] if r["ready"]}
    victim = next(n for n in lab.nodes[1:] if n.hostname in nodes)
    successes: list[float] = []
    failures: list[str] = []
    stop = threading.Event()

    def send() -> None:
        body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
        with httpx.Client(timeout=120) as http:
            while not stop.is_set():
                try:
                    r = http.post(f"{server.gateway}/v1/chat/completions", json=body)
                    if r.status_code == 200:
                        successes.append(time.monotonic())
                    else:
                        failures.append(f"{r.status_code} {r.text[:80]}")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    sender = threading.Thread(target=send)
    sender.start()
    while len(successes) < 3:
        time.sleep(0.05)
    killed = time.monotonic()
    lab.kill_node(victim)
    while True:
        ready = [r for r in server.deployment(name)["replicas"] if r["ready"]]
        if len(ready) == 2 and all(r["node"] != victim.hostname for r in ready):
            break
        time.sleep(0.5)
    rescheduled = time.monotonic() - killed
    after = len(successes)
    while len(successes) < after + 3:
        time.sleep(0.05)
    stop.set()
    sender.join()
    around = [t for t in successes if t >= killed - 30]
    gaps = [b - a for a, b in itertools.pairwise(around)]
    first_after = next((t for t in successes if t > killed), killed)
    return {
        "victim": victim.hostname,
        "gap_s": max(gaps) if gaps else 0.0,
        "first_success_after_kill_s": first_after - killed,
        "failures": len(failures),
        "failure_samples": failures[:3],
        "successes": len(successes),
        "rescheduled_ready_s": rescheduled,
    }


def main() -> int:
    """Run the benchmark, print the table, save JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500, help="requests per overhead path")
    args = parser.parse_args()

    from helpers import imaging_cache_dir

    from anvyl.catalog.bundled import ensure_bundled_model
    from anvyl.imaging import DEBIAN_BOOTSTRAP
    from anvyl.runtime.images import ensure_image

    local = docker.from_env(timeout=120)
    image = ensure_image(local, cache_dir=imaging_cache_dir(), base_image=DEBIAN_BOOTSTRAP)
    model_dir = ensure_bundled_model(Path.home() / ".cache" / "anvyl-tests" / "home")
    run = uuid.uuid4().hex[:8]
    lab = SwarmLab(3, labels={"anvyl.bench": run})
    server: Server | None = None
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="anvyl-bench-") as tmp:
        home = Path(tmp)
        (home / "models").mkdir()
        (home / "models" / model_dir.name).symlink_to(model_dir)
        model = model_dir.name
        try:
            lab.up()
            t = time.perf_counter()
            lab.load_image(local, image, nodes=[lab.manager])
            results["image_load_manager_s"] = time.perf_counter() - t
            server = Server(home, lab.manager.url, f"anvyl.bench={run}")
            for node in lab.nodes[1:]:
                server.cli("host", "add", node.hostname, "--engine", node.tcp_url)
            results["image_bytes"] = local.images.get(image).attrs["Size"]
            results["model_bytes"] = sum(
                p.stat().st_size for p in model_dir.resolve().rglob("*") if p.is_file()
            )
            results["start_2_replicas_cold"] = time_start(server, model, "bench-a")
            server.cli("model", "stop", "bench-a")
            results["start_2_replicas_warm"] = time_start(server, model, "bench-b")
            results["overhead"] = overhead(server, model, "bench-b", home, args.requests)
            results["failover"] = failover(server, lab, model, "bench-b")
        finally:
            if server is not None:
                server.cli("model", "stop", "bench-b", check=False)
                server.stop()
            lab.down()
    results["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count()}
    print_table(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"cluster-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"\nsaved {path}")
    return 0


def print_table(r: dict[str, Any]) -> None:
    """The results as a Markdown table."""
    o, f = r["overhead"], r["failover"]
    cold, warm = r["start_2_replicas_cold"], r["start_2_replicas_warm"]
    ms = "{:.2f} / {:.2f} ms".format

    def start(x: dict[str, Any]) -> str:
        parts = [f"{x['total_s']:.1f} s"]
        if x["nodes_prepare_s"] is not None:
            parts.append(f"nodes {x['nodes_prepare_s']:.1f} s")
        if x["loading_s"] is not None:
            parts.append(f"weights {x['loading_s']:.1f} s")
        note = " (image rebuilt on the manager first)" if x["manager_image_rebuilt"] else ""
        return f"{parts[0]} ({', '.join(parts[1:])}){note}"

    rows = [
        ("start --replicas 2 → both ready, image and model NOT on the nodes", start(cold),
         f"{cold['images_loaded']} image loads ({r['image_bytes'] / 2**20:.0f} MiB), "
         f"{cold['models_copied']} model copies ({r['model_bytes'] / 2**20:.0f} MiB)"),
        ("start --replicas 2 → both ready, image and model already there", start(warm),
         f"{warm['images_loaded']} image loads, {warm['models_copied']} model copies"),
        ("direct call median / p99", ms(o["direct_median_ms"], o["direct_p99_ms"]), ""),
        ("gateway call median / p99", ms(o["gateway_median_ms"], o["gateway_p99_ms"]), ""),
        ("gateway overhead median / p99", ms(o["overhead_median_ms"], o["overhead_p99_ms"]),
         f"≤ {OVERHEAD_TARGET_MS} ms median"),
        ("failover gap (no success)", f"{f['gap_s']:.2f} s", f"≤ {FAILOVER_TARGET_S} s"),
        ("failed requests during failover", str(f["failures"]), "0"),
        ("killed node → 2 replicas ready again", f"{f['rescheduled_ready_s']:.1f} s", ""),
    ]  # fmt: skip
    print("| measure | value | target |\n| --- | --- | --- |")
    for name, value, target in rows:
        print(f"| {name} | {value} | {target} |")


if __name__ == "__main__":
    sys.exit(main())
