"""Where `anvyl model start` → first token goes, step by step, for each runtime.

Starts its own `anvyl serve` (temporary ANVYL_HOME linking the bundled model; containers
labelled `anvyl.bench=<run>`, the image already built) and, `--repeats` times per runtime,
runs `anvyl model start` while reading its progress lines as they come:

- `cli→rpc`: the CLI process starts and the server's first progress line arrives;
- `rpc→spawned`: resolving, checks, the container or process created (the `loading` line);
- `spawned→ready`: the model server starts, loads and warms up, and the control plane notices
  its `/health` (the CLI exits when told);
- `ready→token`: the first streamed token of a chat request to the model's own port;

and the model server's own timeline from its ready line (`anvyl model logs`): `imports`,
`libraries`, `load`, `warm-up` and its total, so `spawned→ready` minus that total is the process
or container start plus the health poll. Usage: `python bench/first_token.py
[--runtimes process,container] [--repeats 3]`. Prints medians and saves the samples as JSON.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _results import save
from _serve import ANVYL, free_port, start_server
from lifecycle import bench_home, cli, first_token_s

READY = re.compile(r" ready on .* in (?P<total>[\d.]+) s(?: \((?P<steps>[^)]*)\))?")
STEPS = ("cli→rpc", "rpc→spawned", "spawned→ready", "ready→token", "total")


def timed_start(address: str, model_id: str, name: str, port: int, runtime: str) -> dict:
    """One `model start`, its progress lines timed as they arrive, then the first token."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [ANVYL, "model", "start", model_id, "-n", name, "-p", str(port), "--runtime", runtime],
        env={**os.environ, "ANVYL_ADDR": address, "COLUMNS": "200"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    first = spawned = None
    for line in proc.stderr:
        now = time.perf_counter() - t0
        first = first if first is not None else now
        if spawned is None and "loading weights" in line.lower():
            spawned = now
    if proc.wait() != 0:
        sys.exit(f"`anvyl model start` failed for {runtime}")
    ready = time.perf_counter() - t0
    token = ready + first_token_s(port, model_id)
    first = first or 0.0
    spawned = spawned or first
    sample = {
        "cli→rpc": first,
        "rpc→spawned": spawned - first,
        "spawned→ready": ready - spawned,
        "ready→token": token - ready,
        "total": token,
    }
    logs = cli(address, "model", "logs", name, "--tail", "50").stdout
    found = READY.search(logs)
    if found:
        sample["server total"] = float(found["total"])
        for part in (found["steps"] or "").split(", "):
            step, _, seconds = part.rpartition(" ")
            if step:
                sample[f"server {step}"] = float(seconds)
    return sample


def main() -> int:
    """Run the starts, print the medians, save the samples."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtimes", default="process,container")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    run_id = uuid.uuid4().hex[:8]
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="anvyl-bench-ft-") as tmp:
        home, model_id = bench_home(Path(tmp))
        proc, address = start_server(home, {"ANVYL_LABELS": f"anvyl.bench={run_id}"})
        try:
            for i in range(args.repeats):
                for runtime in args.runtimes.split(","):
                    name = f"ft-{run_id}-{runtime}-{i}"
                    sample = timed_start(address, model_id, name, free_port(), runtime)
                    results.setdefault(runtime, []).append(sample)
                    cli(address, "model", "stop", name)
                    print(runtime, {k: round(v, 2) for k, v in sample.items()}, flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    for runtime, samples in results.items():
        keys = [k for k in samples[0] if all(k in s for s in samples)]
        print(f"\n{runtime} runtime, medians of {len(samples)} (loaded machine: read ratios)")
        for key in keys:
            print(f"  {key:22} {statistics.median(s[key] for s in samples):6.2f} s")
    save("first_token", {"runs": results, "meta": {"repeats": args.repeats}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
