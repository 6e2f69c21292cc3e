"""Container operations on Anvyl-managed containers (label `anvyl.managed=true`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from anvyl import config
from anvyl.errors import AnvylError, FailedPrecondition, InvalidArgument, NotFound
from anvyl.runtime import ContainerInfo, DockerDriver, ExecResult, LogStream
from anvyl.services.hosts import MANAGED_SELECTOR, Hosts

_LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
MAX_TAIL = 1_000_000


def parse_label_selector(selector: str) -> str:
    """Validate a "key=value" or "key" selector and return it normalised (key stripped)."""
    key, sep, value = selector.partition("=")
    key = key.strip()
    if not key:
        raise InvalidArgument(f"bad label filter {selector!r}: expected key=value or key")
    if not _LABEL_KEY.match(key):
        raise InvalidArgument(
            f"bad label filter {selector!r}: a label key is letters, digits and . _ / -"
        )
    if "\n" in value or "\r" in value:
        raise InvalidArgument(f"bad label filter {selector!r}: the value has a line break")
    return f"{key}{sep}{value}"


def is_managed(info: ContainerInfo) -> bool:
    """True when Anvyl owns the container."""
    return info.labels.get(config.LABEL_MANAGED) == "true"


class Containers:
    """List, inspect, follow, exec into and stop Anvyl's containers on any host."""

    def __init__(self, hosts: Hosts) -> None:
        self.hosts = hosts

    def list(
        self, *, all: bool = False, host_id: str = "", labels: Sequence[str] = ()
    ) -> list[ContainerInfo]:
        """Anvyl-managed containers (running only unless `all`), newest first."""
        selectors = [MANAGED_SELECTOR, *(parse_label_selector(s) for s in labels)]
        result: list[ContainerInfo] = []
        for host in self.hosts.targets(host_id):
            driver = self.hosts.driver(host.id)
            found = driver.list_containers(all=all, labels=selectors)
            result.extend(replace(c, host_id=host.id) for c in found)
        result.sort(key=lambda c: (-c.created_at, c.name))
        return result

    def get(self, ref: str, *, host_id: str = "") -> ContainerInfo:
        """One Anvyl-managed container by id, unique id prefix or name."""
        return self._find(ref, host_id)[1]

    def logs(
        self, ref: str, *, host_id: str = "", follow: bool = False, tail: int | None = None
    ) -> LogStream:
        """The container's log stream; close it to stop following."""
        if tail is not None and not 0 <= tail <= MAX_TAIL:
            raise InvalidArgument(f"tail must be between 0 and {MAX_TAIL}, not {tail}")
        driver, info = self._find(ref, host_id)
        return driver.stream_logs(info.id, follow=follow, tail=tail)

    def exec(self, ref: str, command: Sequence[str], *, host_id: str = "") -> ExecResult:
        """Run a command to completion inside a running container."""
        if not command or not command[0].strip():
            raise InvalidArgument("a command to run is required")
        driver, info = self._find(ref, host_id)
        if info.state != "running":
            raise FailedPrecondition(
                f"container {info.name} ({info.short_id}) is not running (state: {info.state})"
            )
        return driver.exec(info.id, list(command))

    def stop(self, ref: str, *, host_id: str = "", timeout: int | None = None) -> ContainerInfo:
        """Stop a container (idempotent) and return its new state."""
        if timeout is not None and not 0 <= timeout <= 3600:
            raise InvalidArgument(f"timeout must be between 0 and 3600 seconds, not {timeout}")
        driver, info = self._find(ref, host_id)
        driver.stop(info.id, timeout=timeout)
        return replace(driver.get_container(info.id), host_id=info.host_id)

    def _find(self, ref: str, host_id: str) -> tuple[DockerDriver, ContainerInfo]:
        """Resolve `ref` on the targeted hosts; refuse containers Anvyl does not manage."""
        if not ref.strip():
            raise InvalidArgument("a container id or name is required")
        found: list[tuple[DockerDriver, ContainerInfo]] = []
        errors: list[AnvylError] = []
        for host in self.hosts.targets(host_id):
            driver = self.hosts.driver(host.id)
            try:
                info = driver.find_container(ref)
            except NotFound:
                continue
            except AnvylError as exc:  # ambiguous here, or the engine is down
                errors.append(exc)
                continue
            found.append((driver, replace(info, host_id=host.id)))
        if len(found) > 1:
            where = ", ".join(f"{i.short_id} on {i.host_id}" for _, i in found)
            raise InvalidArgument(f"{ref!r} matches containers on several hosts: {where}")
        if not found:
            if errors:
                raise errors[0]
            raise NotFound(f"no container with id or name {ref!r}")
        driver, info = found[0]
        if not is_managed(info):
            raise FailedPrecondition(
                f"container {info.name} ({info.short_id}) is not managed by Anvyl "
                f"(it lacks the label {MANAGED_SELECTOR}); Anvyl only operates on its own "
                "containers"
            )
        return driver, info
