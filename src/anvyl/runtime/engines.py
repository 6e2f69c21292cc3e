"""The engines the server holds, one driver per host id; model operations share them."""

from __future__ import annotations

import threading

from anvyl.errors import NotFound
from anvyl.runtime.driver import DockerDriver


class Engines:
    """A registry of drivers by host id (the server builds one and passes it down)."""

    def __init__(self) -> None:
        self._drivers: dict[str, DockerDriver] = {}
        self._lock = threading.Lock()

    def register(self, host_id: str, driver: DockerDriver) -> None:
        """Hold `driver` for `host_id` (replacing and closing any previous one)."""
        with self._lock:
            old = self._drivers.get(host_id)
            self._drivers[host_id] = driver
        if old is not None and old is not driver:
            old.close()

    def driver(self, host_id: str) -> DockerDriver:
        """The driver of `host_id`; NotFound when no engine is registered for it."""
        with self._lock:
            driver = self._drivers.get(host_id)
        if driver is None:
            raise NotFound(f"no engine is registered for host {host_id!r}")
        return driver

    def host_ids(self) -> list[str]:
        """Host ids with a driver."""
        with self._lock:
            return list(self._drivers)

    def close(self) -> None:
        """Close every driver."""
        with self._lock:
            drivers, self._drivers = list(self._drivers.values()), {}
        for driver in drivers:
            driver.close()
