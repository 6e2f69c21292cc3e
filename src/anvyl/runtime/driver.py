"""The Docker engine driver: the few verbs Anvyl needs, over the `docker` SDK only.

`docker.errors.*` and connection failures are turned into `anvyl.errors` here and nowhere else
(`engine_errors`). The client is made lazily and dropped when the engine stops answering, so the
next call reconnects instead of reusing a dead client.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from anvyl.errors import (
    AnvylError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    RuntimeUnavailable,
)
from anvyl.runtime.calls import record_engine_call
from anvyl.runtime.records import (
    ContainerInfo,
    EngineInfo,
    ExecResult,
    PortInfo,
    StatsSample,
)

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
STATS_THREADS = 16
T = TypeVar("T")


def docker_host_from_env() -> str:
    """The engine address the environment points at (`DOCKER_HOST`, else the local socket)."""
    return os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


class DockerDriver:
    """One Docker engine, reached through the `docker` SDK."""

    def __init__(self, base_url: str | None = None, *, timeout: float = 30.0) -> None:
        self.base_url = base_url or docker_host_from_env()
        self.timeout = timeout
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()

    # -- connection ------------------------------------------------------------------------

    @property
    def client(self) -> docker.DockerClient:
        """The SDK client, connected on first use; RuntimeUnavailable when the engine is down."""
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            return self._client

    def _connect(self) -> docker.DockerClient:
        import docker

        try:
            if self.base_url == os.environ.get("DOCKER_HOST", DEFAULT_DOCKER_HOST):
                # from_env also honours DOCKER_TLS_VERIFY and DOCKER_CERT_PATH.
                client = docker.DockerClient.from_env(timeout=int(self.timeout))
            else:
                client = docker.DockerClient(base_url=self.base_url, timeout=int(self.timeout))
        except Exception as exc:  # the SDK raises several types while negotiating the version
            raise self._unavailable(exc) from exc
        client.api.hooks["response"].append(_count_response)
        log.debug(
            "connected to the Docker engine at %s (API %s)", self.base_url, client.api.api_version
        )
        return client

    def reset(self) -> None:
        """Drop the client so the next call reconnects."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # closing a broken client must not hide the original error
                log.debug("closing the Docker client failed", exc_info=True)

    def close(self) -> None:
        """Release the connection pool."""
        self.reset()

    def _unavailable(self, exc: BaseException) -> RuntimeUnavailable:
        reason = _reason(exc)
        return RuntimeUnavailable(f"the Docker engine at {self.base_url} is unreachable: {reason}")

    @contextmanager
    def engine_errors(self) -> Iterator[None]:
        """Translate SDK and connection errors into Anvyl errors (the driver's only edge)."""
        import docker.errors
        import requests.exceptions

        try:
            yield
        except AnvylError:
            raise
        except docker.errors.NotFound as exc:
            raise NotFound(_explanation(exc)) from exc
        except docker.errors.APIError as exc:
            status = exc.status_code or 0
            if status == 400:
                raise InvalidArgument(_explanation(exc)) from exc
            if status >= 500 and _looks_unreachable(exc):
                self.reset()
                raise self._unavailable(exc) from exc
            raise FailedPrecondition(_explanation(exc)) from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            self.reset()
            raise self._unavailable(exc) from exc
        except docker.errors.DockerException as exc:
            self.reset()
            raise self._unavailable(exc) from exc
        except OSError as exc:
            self.reset()
            raise self._unavailable(exc) from exc

    def _call(self, fn: Callable[[docker.APIClient], T]) -> T:
        with self.engine_errors():
            return fn(self.client.api)

    # -- engine ----------------------------------------------------------------------------

    def ping(self) -> None:
        """Check that the engine answers; RuntimeUnavailable if not."""
        self._call(lambda api: api.ping())

    def engine_info(self) -> EngineInfo:
        """CPU, memory and version of the engine's machine."""
        info: dict[str, Any] = self._call(lambda api: api.info())
        return EngineInfo(
            engine_id=str(info.get("ID") or ""),
            name=str(info.get("Name") or ""),
            version=str(info.get("ServerVersion") or ""),
            api_version=self.client.api.api_version,
            cpus=int(info.get("NCPU") or 0),
            memory_bytes=int(info.get("MemTotal") or 0),
            os=str(info.get("OperatingSystem") or ""),
        )

    def image_size(self, ref: str) -> int:
        """Bytes of a local image (NotFound when absent)."""
        attrs: dict[str, Any] = self._call(lambda api: api.inspect_image(ref))
        return int(attrs.get("Size") or 0)

    def image_labels(self, ref: str) -> dict[str, str] | None:
        """The labels of the image `ref` names, or None when the engine has no such image."""
        from anvyl.runtime import images

        with self.engine_errors():
            return images.image_labels(self.client, ref)

    def build_image(self, **options: Any) -> str:
        """Build the model-server image here (options of `anvyl.runtime.images.build_image`)."""
        from anvyl.runtime import images

        with self.engine_errors():
            return images.build_image(self.client, **options)

    def ensure_image(self, **options: Any) -> str:
        """The model-server image, reused or built (`anvyl.runtime.images.ensure_image`)."""
        from anvyl.runtime import images

        with self.engine_errors():
            return images.ensure_image(self.client, **options)

    # -- containers ------------------------------------------------------------------------

    def list_containers(
        self, *, all: bool = False, labels: Sequence[str] = (), ids: Sequence[str] = ()
    ) -> list[ContainerInfo]:
        """Containers matching every label selector ("k=v" or "k"): one API call, no inspect."""
        filters: dict[str, list[str]] = {}
        if labels:
            filters["label"] = list(labels)
        if ids:
            filters["id"] = list(ids)
        rows: list[dict[str, Any]] = self._call(
            lambda api: api.containers(all=all, filters=filters or None)
        )
        return [container_from_list_row(row) for row in rows]

    def get_container(self, container_id: str) -> ContainerInfo:
        """One container by its full id (NotFound if it is gone)."""
        for info in self.list_containers(all=True, ids=[container_id]):
            if info.id == container_id:
                return info
        raise NotFound(f"no container {container_id[:12]} on {self.base_url}")

    def find_container(self, ref: str) -> ContainerInfo:
        """Resolve a full id, a name or a unique id prefix, as Docker does; any label."""
        ref = ref.strip()
        if not ref:
            raise InvalidArgument("a container id or name is required")
        return resolve_container(ref, self.list_containers(all=True))

    def stream_logs(self, container_id: str, *, follow: bool, tail: int | None) -> LogStream:
        """The container's output; `close()` ends a followed stream from another thread."""
        stream = self._call(
            lambda api: api.logs(
                container_id,
                stream=True,
                follow=follow,
                stdout=True,
                stderr=True,
                tail="all" if tail is None else tail,
            )
        )
        return LogStream(self, stream)

    def exec(self, container_id: str, command: Sequence[str]) -> ExecResult:
        """Run `command` inside a running container and wait for it."""
        if not command:
            raise InvalidArgument("a command to run is required")

        def run(api: docker.APIClient) -> ExecResult:
            created = api.exec_create(container_id, list(command), stdout=True, stderr=True)
            out, err = api.exec_start(created["Id"], demux=True)
            code = api.exec_inspect(created["Id"]).get("ExitCode")
            return ExecResult(exit_code=int(code or 0), stdout=out or b"", stderr=err or b"")

        return self._call(run)

    def stop(self, container_id: str, *, timeout: int | None = None) -> None:
        """Stop a container (SIGTERM, then SIGKILL after `timeout` seconds)."""
        if timeout is None:
            self._call(lambda api: api.stop(container_id))
        else:
            self._call(lambda api: api.stop(container_id, timeout=timeout))

    def sample_stats(self, container_ids: Sequence[str]) -> dict[str, StatsSample]:
        """One-shot stats of each container, fetched in parallel; containers gone are skipped."""

        def one(cid: str) -> StatsSample | None:
            try:
                raw = self._call(lambda api: api.stats(cid, stream=False, one_shot=True))
            except NotFound:
                return None
            return stats_from_raw(cid, raw)

        if not container_ids:
            return {}
        workers = min(STATS_THREADS, len(container_ids))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="anvyl-stats") as pool:
            futures = [
                pool.submit(contextvars.copy_context().run, one, cid) for cid in container_ids
            ]
            samples = [f.result() for f in futures]
        return {s.container_id: s for s in samples if s is not None}


class LogStream:
    """An iterator of raw log chunks whose `close()` unblocks a pending read."""

    def __init__(self, driver: DockerDriver, stream: Any) -> None:
        self._driver = driver
        self._stream = stream
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        with self._driver.engine_errors():
            try:
                for chunk in self._stream:
                    if chunk:
                        yield chunk
            except Exception:
                if self._closed.is_set():
                    return  # closed on purpose from another thread
                raise

    def close(self) -> None:
        """End the stream (safe to call twice and from another thread)."""
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            self._stream.close()
        except Exception:  # the socket may already be gone
            log.debug("closing a log stream failed", exc_info=True)


# -- pure helpers (unit-tested without an engine) ----------------------------------------------


def container_from_list_row(row: Mapping[str, Any]) -> ContainerInfo:
    """Build a ContainerInfo from one row of `GET /containers/json`."""
    names = row.get("Names") or []
    name = names[0].lstrip("/") if names else ""
    ports = tuple(
        PortInfo(
            container_port=int(p.get("PrivatePort") or 0),
            protocol=str(p.get("Type") or "tcp"),
            host_ip=str(p.get("IP") or ""),
            host_port=int(p.get("PublicPort") or 0),
        )
        for p in row.get("Ports") or []
    )
    return ContainerInfo(
        id=str(row["Id"]),
        name=name,
        image=str(row.get("Image") or ""),
        state=str(row.get("State") or ""),
        status=str(row.get("Status") or ""),
        created_at=float(row.get("Created") or 0),
        labels=dict(row.get("Labels") or {}),
        ports=ports,
    )


def resolve_container(ref: str, containers: Sequence[ContainerInfo]) -> ContainerInfo:
    """Pick the container `ref` names: exact id, exact name, then a unique id prefix."""
    for info in containers:
        if info.id == ref:
            return info
    name = ref.lstrip("/")
    for info in containers:
        if info.name == name:
            return info
    matches = [info for info in containers if info.id.startswith(ref.lower())]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        candidates = ", ".join(f"{m.short_id} ({m.name})" for m in matches[:10])
        more = f" and {len(matches) - 10} more" if len(matches) > 10 else ""
        raise InvalidArgument(
            f"container id prefix {ref!r} is ambiguous; it matches {candidates}{more}"
        )
    raise NotFound(f"no container with id or name {ref!r}")


def stats_from_raw(container_id: str, raw: Mapping[str, Any]) -> StatsSample:
    """Reduce a Docker stats document to the cumulative counters Anvyl uses."""
    cpu = raw.get("cpu_stats") or {}
    usage = cpu.get("cpu_usage") or {}
    mem = raw.get("memory_stats") or {}
    mem_stats = mem.get("stats") or {}
    # Like `docker stats`: page cache is not the container's working set (cgroup v1 / v2).
    cache = mem_stats.get("total_inactive_file", mem_stats.get("inactive_file", 0)) or 0
    used = max(int(mem.get("usage") or 0) - int(cache), 0)
    online = cpu.get("online_cpus") or len(usage.get("percpu_usage") or []) or 1
    return StatsSample(
        container_id=container_id,
        cpu_total_ns=int(usage.get("total_usage") or 0),
        system_cpu_ns=int(cpu.get("system_cpu_usage") or 0),
        online_cpus=int(online),
        memory_used_bytes=used,
        memory_limit_bytes=int(mem.get("limit") or 0),
    )


def _count_response(response: Any, *args: Any, **kwargs: Any) -> Any:
    record_engine_call()
    return response


def _explanation(exc: Any) -> str:
    explanation = getattr(exc, "explanation", None)
    if isinstance(explanation, bytes):
        explanation = explanation.decode(errors="replace")
    return str(explanation or exc)


def _looks_unreachable(exc: Any) -> bool:
    text = _explanation(exc).lower()
    return "connection refused" in text or "no such file" in text


def _reason(exc: BaseException) -> str:
    """A short human reason from a connection failure (the innermost cause is the clearest)."""
    inner: BaseException = exc
    seen = 0
    while seen < 10:
        nxt = inner.__cause__ or inner.__context__
        if nxt is None:
            break
        inner, seen = nxt, seen + 1
    text = str(inner) or type(inner).__name__
    for marker in ("FileNotFoundError", "No such file or directory"):
        if marker in str(exc) or marker in text:
            return "no such socket (No such file or directory)"
    if "Connection refused" in str(exc) or "Connection refused" in text:
        return "connection refused"
    return text if len(text) <= 200 else text[:197] + "..."
