"""Memory and CPU limits for process deployments through Linux cgroups (v1 or v2), guarded.

The only Linux-specific code of the process runtime. Each deployment gets a cgroup nested under
the server's own (`<its cgroup>/anvyl/<deployment id>`), so a limit never escapes what the
server itself is allowed. Where there is no writable cgroup (macOS, an unprivileged user, a
read-only mount), `available()` says why and the runtime reports limits as not enforced.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path("/sys/fs/cgroup")
PARENT = "anvyl"
CPU_PERIOD_US = 100_000
REMOVE_WAIT_S = 3.0


@dataclass(frozen=True)
class Support:
    """Which limits this machine can enforce, and why not when it cannot."""

    memory: bool
    cpu: bool
    reason: str = ""


class Cgroups:
    """Creates, reads and removes the cgroups of process deployments."""

    def __init__(self, root: Path = ROOT, self_cgroup: Path = Path("/proc/self/cgroup")) -> None:
        self.root = root
        self._self_cgroup = self_cgroup

    def version(self) -> str:
        """ "v2", "v1" or "" (no cgroup filesystem)."""
        if sys.platform != "linux":
            return ""
        if (self.root / "cgroup.controllers").is_file():
            return "v2"
        if (self.root / "memory" / "cgroup.procs").is_file():
            return "v1"
        return ""

    def available(self) -> Support:
        """Whether memory and CPU limits can be set here (a parent cgroup is writable)."""
        version = self.version()
        if not version:
            return Support(False, False, "no cgroup filesystem on this machine")
        memory, cpu = self._parent("memory"), self._parent("cpu")
        memory_ok = memory is not None and self._writable(memory)
        cpu_ok = cpu is not None and self._writable(cpu)
        if version == "v2" and memory is not None:
            controllers = _read(memory.parent / "cgroup.subtree_control").split()
            memory_ok = memory_ok and "memory" in controllers
            cpu_ok = cpu_ok and "cpu" in controllers
        reason = "" if memory_ok else f"the cgroup {memory or self.root} is not writable"
        return Support(memory_ok, cpu_ok, reason)

    def create(self, name: str, *, memory_bytes: int = 0, cpus: float = 0.0) -> list[str]:
        """Make the deployment's cgroups with the limits; the `cgroup.procs` files to join."""
        procs = []
        if memory_bytes:
            group = self._group("memory", name)
            if self.version() == "v2":
                _write(group / "memory.max", str(memory_bytes))
                with contextlib.suppress(OSError):  # no swap: an OOM is an OOM, not a crawl
                    _write(group / "memory.swap.max", "0")
            else:
                _write(group / "memory.limit_in_bytes", str(memory_bytes))
                with contextlib.suppress(OSError):  # swap accounting may be off
                    _write(group / "memory.memsw.limit_in_bytes", str(memory_bytes))
            procs.append(str(group / "cgroup.procs"))
        if cpus:
            group = self._group("cpu", name)
            quota = max(1000, int(cpus * CPU_PERIOD_US))
            if self.version() == "v2":
                _write(group / "cpu.max", f"{quota} {CPU_PERIOD_US}")
            else:
                _write(group / "cpu.cfs_period_us", str(CPU_PERIOD_US))
                _write(group / "cpu.cfs_quota_us", str(quota))
            if str(group / "cgroup.procs") not in procs:
                procs.append(str(group / "cgroup.procs"))
        return procs

    def oom_kills(self, name: str) -> int:
        """How many times the kernel killed a process of the deployment for memory."""
        parent = self._parent("memory")
        if parent is None:
            return 0
        group = parent / name
        text = _read(group / ("memory.events" if self.version() == "v2" else "memory.oom_control"))
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
        return 0

    def remove(self, name: str, *, wait: float = REMOVE_WAIT_S) -> None:
        """Remove the deployment's cgroups once empty (a just-killed process may linger)."""
        for controller in ("memory", "cpu"):
            parent = self._parent(controller)
            if parent is None or not (parent / name).is_dir():
                continue
            deadline = time.monotonic() + wait
            while True:
                try:
                    (parent / name).rmdir()
                    break
                except OSError as exc:  # EBUSY until its last process is reaped
                    if time.monotonic() > deadline:
                        log.warning("cgroup %s/%s not removed: %s", parent, name, exc)
                        break
                    time.sleep(0.05)

    def _parent(self, controller: str) -> Path | None:
        """`<this process's cgroup>/anvyl` in the hierarchy holding `controller`."""
        version = self.version()
        for line in _read(self._self_cgroup).splitlines():
            _, controllers, path = line.split(":", 2)
            if version == "v2" and controllers == "":
                return self.root / path.lstrip("/") / PARENT
            if version == "v1" and controller in controllers.split(","):
                mount = self.root / (controller if controller == "memory" else "cpu")
                return mount / path.lstrip("/") / PARENT
        return None

    def _group(self, controller: str, name: str) -> Path:
        parent = self._parent(controller)
        if parent is None:
            raise OSError(f"no {controller} cgroup for this process")
        if self.version() == "v2" and not parent.is_dir():
            parent.mkdir(exist_ok=True)
            with contextlib.suppress(OSError):
                _write(parent / "cgroup.subtree_control", "+memory +cpu")
        group = parent / name
        group.mkdir(parents=True, exist_ok=True)
        return group

    def _writable(self, parent: Path) -> bool:
        existing = parent if parent.is_dir() else parent.parent
        return existing.is_dir() and os.access(existing, os.W_OK)


def join(procs_files: list[str]) -> None:
    """Move this process into each cgroup (its children inherit them)."""
    for path in procs_files:
        _write(Path(path), str(os.getpid()))


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)
