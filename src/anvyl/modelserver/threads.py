"""Thread counts for the CPU backend, from the CPUs this process may really use.

A container sees every core of its host in `os.cpu_count()`, but its cgroup CPU quota (cgroup
v2 `cpu.max`, v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`) and its affinity mask bound what it
gets. OpenBLAS starts one thread per visible core and its idle threads spin, so a quota of two
CPUs on a 64-core host would thrash. And MLX's own stream thread (every non-BLAS op: attention,
norms, rope, sampling) and the HTTP thread need a core too: measured on a 2-core machine, one
BLAS thread decodes faster than two, while a prompt prefilled alone (nothing else decoding) is
compute-bound and gains from every core (alternating step by step in one process, 2 cores under
load: decode at batch 1/8/16 took 125/237/201 ms with one thread and 135/287/207 ms with two; a
512-token prefill 2967 ms with one and 2382 ms with two). So OpenBLAS decodes with the usable
CPUs minus one (at least one, at most `MAX_BLAS_THREADS`) and prefills a lone prompt with all
of them. `ANVYL_BLAS_THREADS` fixes the count for both.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("anvyl.modelserver")

MAX_BLAS_THREADS = 8
CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """The cgroup CPU quota in CPUs (v2 or v1), or None when there is none."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    for v1 in (root / "cpu", root / "cpu,cpuacct", root):
        try:
            quota_us = int((v1 / "cpu.cfs_quota_us").read_text())
            period_us = int((v1 / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    return None


def usable_cpus(root: Path = CGROUP_ROOT) -> int:
    """CPUs this process can run on: its affinity mask, bounded by the cgroup quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        cpus = min(cpus, max(1, math.ceil(limit)))
    return max(1, cpus)


def _override(name: str, env: Mapping[str, str] | None) -> int | None:
    """A positive thread count set in `env` (default: the process's) under `name`, or None."""
    value = (os.environ if env is None else env).get(name, "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def blas_threads(cpus: int, env: Mapping[str, str] | None = None) -> int:
    """OpenBLAS threads for `cpus` usable CPUs (one left for MLX's own thread)."""
    override = _override("ANVYL_BLAS_THREADS", env)
    if override:
        return override
    return max(1, min(cpus - 1, MAX_BLAS_THREADS))


def prefill_threads(cpus: int, env: Mapping[str, str] | None = None) -> int:
    """OpenBLAS threads for a prefill with nothing decoding beside it (every usable CPU)."""
    override = _override("ANVYL_BLAS_THREADS", env)
    if override:
        return override
    return max(1, min(cpus, MAX_BLAS_THREADS))


class BlasThreads:
    """Switches OpenBLAS between its decode and prefill thread counts (a no-op without it)."""

    def __init__(self) -> None:
        try:
            setter = ctypes.CDLL(None).openblas_set_num_threads
            setter.argtypes = [ctypes.c_int]
        except (OSError, AttributeError):
            setter = None  # MLX's bundled reference BLAS: nothing to set
        self._setter = setter
        cpus = usable_cpus()
        self.decode = blas_threads(cpus)
        self.prefill = prefill_threads(cpus)
        self.current = 0
        if setter is not None:
            log.info(
                "OpenBLAS threads: %d decoding, %d prefilling alone (usable CPUs: %d)",
                self.decode,
                self.prefill,
                cpus,
            )
        self.use(prefill_only=False)

    @property
    def available(self) -> bool:
        """Whether OpenBLAS is loaded in this process."""
        return self._setter is not None

    def use(self, *, prefill_only: bool) -> None:
        """Set the count for the next step: prefill alone, or anything with decoding."""
        wanted = self.prefill if prefill_only else self.decode
        if self._setter is not None and wanted != self.current:
            self._setter(wanted)
            self.current = wanted


_blas: BlasThreads | None = None


def blas() -> BlasThreads:
    """The process's OpenBLAS thread switch (created on first use)."""
    global _blas
    if _blas is None:
        _blas = BlasThreads()
    return _blas


def kernel_threads(cpus: int, env: Mapping[str, str] | None = None) -> int:
    """Threads for Anvyl's quantized kernel (`ANVYL_KERNEL_THREADS` fixes it): every usable CPU.

    The count includes MLX's stream thread, which runs a share itself. While MLX's CPU fallbacks
    made each decode step thousands of graph nodes, the Python thread building the next step
    needed a core of its own and one kernel thread was fastest on 2 cores. With norms, rope and
    attention as single kernel nodes (`kernel_layers.py`) that changed: measured on a quiet 2-core
    machine in one `bench/engine.py` run, decode at 1/4/8/16 streams gave 35.0/85.4/108.0/121.4
    tokens/s with two kernel threads against 27.4/75.4/83.5/96.1 with one.
    """
    override = _override("ANVYL_KERNEL_THREADS", env)
    if override:
        return override
    return max(1, min(cpus, MAX_BLAS_THREADS))


def configure_threads(kernels: Any = None) -> int | None:
    """Set OpenBLAS to its decode thread count, and `kernels`' count; return OpenBLAS's or None."""
    switch = blas()
    if kernels is not None:
        count = kernel_threads(usable_cpus())
        kernels.set_num_threads(count)
        log.info("quantized kernel threads: %d", count)
    return switch.decode if switch.available else None
