"""Control-plane benchmark: ListContainers RPC and `anvyl container list` at 0, 10, 50 containers.

Starts its own `anvyl serve` (temporary ANVYL_HOME, free port), runs busybox `sleep` containers
labelled `anvyl.managed=true` and `anvyl.bench=<run>`, and measures:

- the ListContainers RPC on a warm channel (median, p95) and the Docker API calls it made
  (the server reports them in the `anvyl-engine-calls` trailing metadata);
- the whole `anvyl container list` CLI process (median, p95).

Prints a table and saves JSON under bench/results/. Usage: `python bench/control_plane.py`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import grpc
from _results import save
from _serve import ANVYL, start_server

from anvyl.api import anvyl_pb2 as pb
from anvyl.api import anvyl_pb2_grpc as rpc

IMAGE = "anvyl-bench/busybox:1"
COUNTS = (0, 10, 50)


def ensure_image(client: docker.DockerClient) -> str:
    """A static busybox image made with `docker import` (no registry needed)."""
    try:
        client.images.get(IMAGE)
        return IMAGE
    except docker.errors.ImageNotFound:
        pass
    busybox = shutil.which("busybox")
    if busybox is None:
        sys.exit("busybox is not installed (apt-get install busybox-static)")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        for applet in ("sh", "sleep"):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            tar.addfile(info)
    repo, tag = IMAGE.split(":")
    client.api.import_image_from_data(buf.getvalue(), repository=repo, tag=tag)
    return IMAGE


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def scale_to(client: docker.DockerClient, labels: dict[str, str], want: int) -> None:
    """Run exactly `want` bench containers."""
    selector = {"label": [f"{k}={v}" for k, v in labels.items()]}
    have = len(client.containers.list(filters=selector))

    def run(_: int) -> None:
        client.containers.run(IMAGE, ["sleep", "3600"], detach=True, labels=labels)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(run, range(want - have)))
    assert len(client.containers.list(filters=selector)) == want


def bench_rpc(address: str, selector: str, iterations: int) -> tuple[list[float], set[int]]:
    """Latencies (ms) of ListContainers on a warm channel, and the engine calls each made."""
    calls: set[int] = set()
    times: list[float] = []
    with grpc.insecure_channel(address) as channel:
        stub = rpc.ContainerServiceStub(channel)
        request = pb.ListContainersRequest(labels=[selector])
        for _ in range(5):  # warm-up: connection, engine client, code paths
            stub.ListContainers(request)
        for _ in range(iterations):
            start = time.perf_counter()
            _, call = stub.ListContainers.with_call(request)
            times.append((time.perf_counter() - start) * 1000)
            calls.add(int(dict(call.trailing_metadata())["anvyl-engine-calls"]))
    return times, calls


def bench_cli(address: str, selector: str, iterations: int, expect: int) -> list[float]:
    """Wall-clock (ms) of the whole `anvyl container list -o json` process."""
    env = {**os.environ, "ANVYL_ADDR": address}
    times: list[float] = []
    for i in range(iterations + 2):
        start = time.perf_counter()
        out = subprocess.run(
            [ANVYL, "container", "list", "--label", selector, "-o", "json"],
            env=env,
            capture_output=True,
            check=True,
        )
        elapsed = (time.perf_counter() - start) * 1000
        assert len(json.loads(out.stdout)["containers"]) == expect
        if i >= 2:  # the first runs warm the page cache
            times.append(elapsed)
    return times


def main() -> int:
    """Run the benchmark, print the table, save the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rpc-iterations", type=int, default=200)
    parser.add_argument("--cli-iterations", type=int, default=20)
    args = parser.parse_args()

    client = docker.from_env(timeout=60)
    ensure_image(client)
    run_id = uuid.uuid4().hex[:8]
    labels = {"anvyl.managed": "true", "anvyl.bench": run_id}
    selector = f"anvyl.bench={run_id}"
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="anvyl-bench-") as home:
        proc, address = start_server(Path(home))
        try:
            for count in COUNTS:
                scale_to(client, labels, count)
                rpc_ms, engine_calls = bench_rpc(address, selector, args.rpc_iterations)
                cli_ms = bench_cli(address, selector, args.cli_iterations, count)
                rows.append(
                    {
                        "containers": count,
                        "rpc_p50_ms": round(statistics.median(rpc_ms), 2),
                        "rpc_p95_ms": round(percentile(rpc_ms, 95), 2),
                        "docker_calls_per_request": sorted(engine_calls),
                        "cli_p50_ms": round(statistics.median(cli_ms), 1),
                        "cli_p95_ms": round(percentile(cli_ms, 95), 1),
                        "rpc_samples": len(rpc_ms),
                        "cli_samples": len(cli_ms),
                    }
                )
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            for container in client.containers.list(all=True, filters={"label": selector}):
                container.remove(force=True)

    header = f"{'containers':>10} {'RPC p50':>9} {'RPC p95':>9} {'docker calls':>12} "
    header += f"{'CLI p50':>9} {'CLI p95':>9}"
    print(header)
    for r in rows:
        calls = ",".join(str(c) for c in r["docker_calls_per_request"])  # type: ignore[attr-defined]
        print(
            f"{r['containers']:>10} {r['rpc_p50_ms']:>7.2f}ms {r['rpc_p95_ms']:>7.2f}ms "
            f"{calls:>12} {r['cli_p50_ms']:>7.1f}ms {r['cli_p95_ms']:>7.1f}ms"
        )
    meta = {"engine": client.version().get("Version")}
    save("control_plane", {"meta": meta, "results": rows})
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
