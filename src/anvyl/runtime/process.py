"""The process runtime: the model server as a supervised local process, no container engine.

This is how a Mac reaches MLX's Metal GPU (Docker on macOS has none) and how Anvyl runs where
there is no Docker. Each deployment gets `ANVYL_HOME/processes/<id>/`: the supervisor and the
model server run there in their own process group (see `process_supervisor`), with output in a
size-rotated `server.log`, the supervisor's `status.json`, the restart policy once ready, and
`spec.json` (what adoption after a lost database needs).

Recognising our process after `anvyl serve` restarts: the handle holds the pid, the process's
start time and a random token also put in its environment; a pid the kernel has since given to
another process matches neither, so it is never adopted or signalled. Portable through psutil
and POSIX process groups; limits go through the guarded cgroup helper where Linux allows.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from anvyl.errors import AlreadyExists, InvalidArgument
from anvyl.modelserver.__main__ import openblas_env
from anvyl.runtime import model_spec as spec
from anvyl.runtime import process_supervisor as supervisor
from anvyl.runtime.base import (
    KIND_PROCESS,
    LOG_TAIL_LINES,
    STATUS_EXITED,
    STATUS_GONE,
    STATUS_RESTARTING,
    STATUS_RUNNING,
    Capabilities,
    DeploymentRuntime,
    Handle,
    LaunchSpec,
    LogStream,
    Observation,
    Orphan,
)
from anvyl.runtime.cgroup import Cgroups
from anvyl.runtime.ports import local_port_holder
from anvyl.runtime.process_logs import FileLogStream, rotate, tail_lines

log = logging.getLogger(__name__)

TOKEN_ENV = "ANVYL_PROCESS_TOKEN"
CONTROLLER_ENV = "ANVYL_CONTROLLER"
LOG_FILE = "server.log"
SPEC_FILE = "spec.json"
CREATE_TIME_TOLERANCE_S = 0.05
# The control plane's secrets never reach a model server's environment.
SECRET_ENV = ("ANVYL_TOKEN", "ANVYL_API_KEY", "ANVYL_MODEL_API_KEY", "ANVYL_TLS_KEY")
NOT_ENV = (
    "ANVYL_TEST_PAUSE_AT", "ANVYL_LABELS", "ANVYL_ADDR", "ANVYL_BIND", CONTROLLER_ENV,
    "ANVYL_ALLOW_ORIGINS", "ANVYL_PUBLISHED_BIND",  # `serve`'s own; a model has its own
)  # fmt: skip


class ProcessRuntime(DeploymentRuntime):
    """Model servers as local processes under `home/processes`."""

    kind = KIND_PROCESS

    def __init__(
        self, home: Path, *, python: str = sys.executable, cgroups: Cgroups | None = None
    ) -> None:
        self.home = Path(home)
        self.python = python
        self.cgroups = cgroups or Cgroups()
        self._support = self.cgroups.available()

    def capabilities(self) -> Capabilities:
        """No replicas, no remote hosts, no startup script; limits where cgroups allow."""
        note = "" if self._support.memory else f"not enforced: {self._support.reason}"
        return Capabilities(
            kind=self.kind,
            cpus=self._support.cpu,
            remote_hosts=False,
            startup_script=False,
            memory=self._support.memory,
            memory_note=note,
        )

    def prepare(self, say: Callable[[str], None]) -> str:
        """Nothing to build: the model server is this Python's `anvyl.modelserver`."""
        return ""

    def check_free(self, name: str, bind: str, port: int) -> None:
        """Refuse a port something on this machine holds."""
        holder = local_port_holder(bind, port)
        if holder is not None:
            raise AlreadyExists(
                f"port {port} is already in use on this machine{holder}; choose another with --port"
            )

    def start(self, launch: LaunchSpec) -> Handle:
        """Start the supervisor and the model server in a new process group."""
        run_dir = self._run_dir(launch.deployment_id)
        run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for stale in (supervisor.STATUS_FILE, supervisor.RESTART_FILE):
            (run_dir / stale).unlink(missing_ok=True)
        token = secrets.token_hex(16)
        env = self._environment(launch, token)
        procs = self._limits(launch)
        if procs:
            env[supervisor.CGROUP_ENV] = os.pathsep.join(procs)
        preload = openblas_env(env)  # what the model server would re-exec itself with
        if preload is not None:  # the supervisor hands it on: one Python start less
            env.update({k: v for k, v in preload.items() if k != "LD_PRELOAD"})
            env[supervisor.CHILD_PRELOAD_ENV] = preload["LD_PRELOAD"]
        command = [
            # By path (-P: its folder not on sys.path): `-m` would import the package
            # `anvyl.runtime` first, docker and grpc with it (0.3 s before every model start).
            self.python, "-P", supervisor.__file__, str(run_dir), "--",
            self.python, "-m", "anvyl.modelserver",
            "--model", str(Path(launch.model_path).resolve()),
            "--model-id", launch.model_id,
            "--host", launch.bind,
            "--port", str(launch.port),
            "--health-port", "0",
        ]  # fmt: skip
        log_path = run_dir / LOG_FILE
        rotate(log_path, max_bytes=0)  # each start begins a fresh file; the last one is kept
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=run_dir,
                start_new_session=True,  # its own process group: signals reach both at once
                close_fds=True,
            )
        finally:
            os.close(fd)
        # Reap it when it ends while this server runs (else it lingers as a zombie).
        threading.Thread(target=proc.wait, name="anvyl-reap", daemon=True).start()
        data = {
            "deployment": launch.deployment_id,
            "pid": proc.pid,
            "create_time": psutil.Process(proc.pid).create_time(),
            "token": token,
        }
        _write_json(
            run_dir / SPEC_FILE,
            {
                **data,
                "name": launch.name,
                "model_id": launch.model_id,
                "port": launch.port,
                "bind": launch.bind,
                "controller": launch.labels.get("anvyl.controller", ""),
            },
        )
        return Handle(ref=f"pid:{proc.pid}", data=data)

    def observe(self, handles: list[Handle]) -> list[Observation]:
        """Alive (ours, by start time and token) or why not, from the supervisor's status."""
        return [self._observe(h) for h in handles]

    def log_tail(self, handle: Handle, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of `server.log`."""
        path = self._run_dir(_deployment(handle)) / LOG_FILE
        return tail_lines(path, lines).decode("utf-8", "replace").strip()

    def logs(self, handle: Handle, *, follow: bool, tail: int | None) -> LogStream:
        """`server.log`, followed while the process lives."""
        path = self._run_dir(_deployment(handle)) / LOG_FILE
        return FileLogStream(path, follow=follow, tail=tail, alive=lambda: _alive(handle))

    def apply_restart(self, handle: Handle, restart: str) -> None:
        """Tell the supervisor to restart the server on failure from now on."""
        if spec.parse_restart_policy(restart) is not None:
            (self._run_dir(_deployment(handle)) / supervisor.RESTART_FILE).write_text(restart)

    def stop(self, handle: Handle, timeout: float) -> None:
        """SIGTERM to the process group, SIGKILL after `timeout`; then remove its files."""
        proc = _ours(handle)
        if proc is not None:
            _signal_group(proc, signal.SIGTERM)
            _, alive = psutil.wait_procs([proc], timeout=timeout)
            if alive:
                log.warning("deployment %s did not stop in %.0f s: killed", handle.ref, timeout)
                _signal_group(proc, signal.SIGKILL)
                psutil.wait_procs([proc], timeout=5)
        self._remove(_deployment(handle))

    def discard(self, deployment_id: str) -> None:
        """Kill whatever a failed start left running and remove its files."""
        data = _read_json(self._run_dir(deployment_id) / SPEC_FILE)
        if data.get("pid"):
            self.stop(Handle(ref=f"pid:{data['pid']}", data=data), timeout=5)
        self._remove(deployment_id)

    def orphans(self, controller_id: str) -> list[Orphan]:
        """Live model servers of this installation, from their `spec.json`."""
        found = []
        for path in sorted((self.home / "processes").glob(f"*/{SPEC_FILE}")):
            data = _read_json(path)
            handle = Handle(ref=f"pid:{data.get('pid', 0)}", data=data)
            if data.get("controller") != controller_id or _ours(handle) is None:
                continue
            found.append(
                Orphan(
                    deployment_id=str(data.get("deployment") or ""),
                    handle=Handle(ref=handle.ref, data=_handle_data(data)),
                    name=str(data.get("name") or ""),
                    model_id=str(data.get("model_id") or "unknown"),
                    port=int(data.get("port") or 0),
                    bind=str(data.get("bind") or "127.0.0.1"),
                )
            )
        return found

    def memory_used(self, handle: Handle) -> int:
        """Resident memory of the supervisor and the model server."""
        proc = _ours(handle)
        return _tree_rss(proc) if proc is not None else 0

    def maintain(self, handles: list[Handle]) -> None:
        """Rotate log files that grew past their limit."""
        for handle in handles:
            with contextlib.suppress(OSError):
                rotate(self._run_dir(_deployment(handle)) / LOG_FILE)

    # -- internals -------------------------------------------------------------------------

    def _observe(self, handle: Handle) -> Observation:
        run_dir = self._run_dir(_deployment(handle))
        status = _read_json(run_dir / supervisor.STATUS_FILE)
        restarts = int(status.get("restarts") or 0)
        note = f"restarted {restarts} time{'s' if restarts > 1 else ''} after failures"
        proc = _ours(handle)
        if proc is not None:
            if status.get("state") == "restarting":
                return Observation(
                    STATUS_RESTARTING, self._exit_reason(handle, status) + f"; {note}"
                )
            return Observation(STATUS_RUNNING, note if restarts else "")
        if not run_dir.is_dir():
            return Observation(STATUS_GONE, "its files under ANVYL_HOME/processes were removed")
        reason = self._exit_reason(handle, status)
        return Observation(STATUS_EXITED, reason + (f"; {note}" if restarts else ""))

    def _exit_reason(self, handle: Handle, status: dict[str, Any]) -> str:
        """Exit code or signal, out of memory when the cgroup says so."""
        code = status.get("code")
        if self.cgroups.oom_kills(_deployment(handle)):
            return "out of memory (killed by the kernel in its cgroup); raise --memory"
        if code is None:
            return "the process is gone (killed before it could record why)"
        if code < 0:
            name = _signal_name(-code)
            return f"killed by signal {name}" + (
                " (SIGKILL: killed, or out of memory)" if -code == signal.SIGKILL else ""
            )
        return f"exited with code {code}"

    def _environment(self, launch: LaunchSpec, token: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in SECRET_ENV and k not in NOT_ENV and not k.startswith("ANVYL_TLS")
        }
        env.update(
            {
                "MODEL_ID": launch.model_id,
                "MEMORY_LIMIT": launch.memory or "unlimited",
                "PYTHONUNBUFFERED": "1",
                TOKEN_ENV: token,
                CONTROLLER_ENV: launch.labels.get("anvyl.controller", ""),
            }
        )
        for name, value in (
            ("ANVYL_API_KEY_FILE", launch.api_key_file),
            ("ANVYL_CTX", str(launch.ctx) if launch.ctx else ""),
            ("ANVYL_MAX_QUEUE", str(launch.max_queue) if launch.max_queue else ""),
            ("ANVYL_DTYPE", launch.dtype),
            ("ANVYL_ALLOW_ORIGINS", ",".join(launch.allow_origins)),
        ):
            if value:
                env[name] = value
        return env

    def _limits(self, launch: LaunchSpec) -> list[str]:
        """The cgroups to join for --memory and --cpus (empty when not enforced here)."""
        caps = self.capabilities()
        if launch.cpus and not caps.cpus:
            raise InvalidArgument(f"--cpus cannot be enforced here ({self._support.reason})")
        memory = spec.parse_memory(launch.memory) if launch.memory and caps.memory else 0
        cpus = launch.cpus if caps.cpus else 0.0
        if not memory and not cpus:
            return []
        try:
            return self.cgroups.create(launch.deployment_id, memory_bytes=memory, cpus=cpus)
        except OSError as exc:
            raise InvalidArgument(f"cannot set the limits of {launch.name}: {exc}") from exc

    def _remove(self, deployment_id: str) -> None:
        self.cgroups.remove(deployment_id)
        shutil.rmtree(self._run_dir(deployment_id), ignore_errors=True)

    def _run_dir(self, deployment_id: str) -> Path:
        if not deployment_id or "/" in deployment_id or deployment_id.startswith("."):
            raise InvalidArgument(f"invalid deployment id {deployment_id!r}")
        return self.home / "processes" / deployment_id


def _deployment(handle: Handle) -> str:
    return str(handle.data.get("deployment") or "")


def _handle_data(data: dict[str, Any]) -> dict[str, Any]:
    return {k: data[k] for k in ("deployment", "pid", "create_time", "token") if k in data}


def _ours(handle: Handle) -> psutil.Process | None:
    """The handle's live process, or None when it is gone or the pid now names another one."""
    pid = int(handle.data.get("pid") or 0)
    if pid <= 0:
        return None
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - float(handle.data.get("create_time") or 0)) > (
            CREATE_TIME_TOLERANCE_S
        ):
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        try:
            if proc.environ().get(TOKEN_ENV) != handle.data.get("token"):
                return None
        except psutil.AccessDenied:  # start time matched: as sure as this machine lets us be
            pass
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def _alive(handle: Handle) -> bool:
    return _ours(handle) is not None


def _signal_group(proc: psutil.Process, sig: int) -> None:
    """Signal the process group the runtime made (the supervisor leads it)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)


def _tree_rss(proc: psutil.Process) -> int:
    """Resident memory of the supervisor and its model server."""
    total = 0
    with contextlib.suppress(psutil.Error):
        for p in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
    return total


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _write_json(path: Path, value: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(value, f)
    os.replace(tmp, path)
