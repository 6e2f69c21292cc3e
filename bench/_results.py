"""Where the benchmarks save their JSON, and the facts about the machine each result carries."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """Python, CPU and load at the time of saving (the machines are noisy: keep the load)."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg_at_end": os.getloadavg(),
    }


def save(name: str, report: dict[str, Any]) -> Path:
    """Write `report` (plus `machine` facts under `meta`) to bench/results/NAME-STAMP.json."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    meta = {**machine(), **report.get("meta", {})}
    out.write_text(json.dumps({**report, "meta": meta}, indent=2) + "\n")
    print(f"saved {out}")
    return out
