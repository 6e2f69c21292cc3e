"""How Anvyl reaches each Swarm node's own engine (`anvyl host add NODE --engine URL`).

The manager's API places services but cannot put an image or a volume's files on a node; that
needs the node's engine. `NodeEngines` validates an engine URL, proves it by connecting and
comparing the engine's Swarm node id with the node's, and only then records it (with its TLS
files under `ANVYL_HOME/engines/<node id>/`). A failed `add` changes nothing.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlsplit

from anvyl.errors import AnvylError, FailedPrecondition, InvalidArgument, NotFound
from anvyl.runtime import swarm
from anvyl.runtime.swarm import NodeEngineDriver
from anvyl.store import Store
from anvyl.store import node_engines as table
from anvyl.store.node_engines import NodeEngineRecord

PROBE_TIMEOUT_S = 5.0
WORK_TIMEOUT_S = 600.0  # image loads and model copies stream for minutes
MAX_PEM_BYTES = 64 * 1024
SCHEMES = ("tcp", "ssh")


def validate_engine_url(url: str, *, tls: bool = False) -> str:
    """`tcp://HOST[:PORT]` or `ssh://[USER@]HOST[:PORT]`, normalised; InvalidArgument if not."""
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise InvalidArgument(f"invalid engine URL {url!r}: {exc}") from exc
    if parts.scheme not in SCHEMES:
        raise InvalidArgument(
            f"invalid engine URL {url!r}: use tcp://HOST:PORT (TLS options for a TLS engine) "
            "or ssh://USER@HOST"
        )
    if not parts.hostname:
        raise InvalidArgument(f"invalid engine URL {url!r}: no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidArgument(f"invalid engine URL {url!r}: no path, query or fragment allowed")
    if parts.scheme == "tcp":
        if parts.username or parts.password:
            raise InvalidArgument(f"invalid engine URL {url!r}: tcp:// takes no user")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return f"tcp://{host}:{port or (2376 if tls else 2375)}"
    if tls:
        raise InvalidArgument("TLS options are for tcp:// engines; ssh:// is encrypted by ssh")
    if parts.password:
        raise InvalidArgument(f"invalid engine URL {url!r}: no passwords in URLs (use ssh keys)")
    return text.rstrip("/")


class NodeEngines:
    """The recorded node engines, with one connected driver each (made on first use)."""

    def __init__(self, store: Store, home: Path) -> None:
        self.store = store
        self.home = Path(home)
        self._drivers: dict[str, NodeEngineDriver] = {}
        self._lock = threading.Lock()

    def records(self) -> list[NodeEngineRecord]:
        """Every recorded engine."""
        return table.list_node_engines(self.store)

    def get(self, node_id: str) -> NodeEngineRecord | None:
        """The engine recorded for a node, if any."""
        return table.get_node_engine(self.store, node_id)

    def driver(self, node_id: str) -> NodeEngineDriver | None:
        """A driver of the node's engine (for long transfers); None when none is recorded."""
        record = self.get(node_id)
        if record is None:
            return None
        with self._lock:
            driver = self._drivers.get(node_id)
            if driver is not None and driver.base_url == record.url:
                return driver
        driver = _driver(record, WORK_TIMEOUT_S)
        with self._lock:
            old, self._drivers[node_id] = self._drivers.get(node_id), driver
        if old is not None:
            old.close()
        return driver

    def probe(self, record: NodeEngineRecord) -> tuple[bool, str]:
        """Whether the engine answers as the right node now (a short-lived connection)."""
        driver = _driver(record, PROBE_TIMEOUT_S)
        try:
            found = swarm.local_node_id(driver)
        except AnvylError as exc:
            return False, exc.message
        finally:
            driver.close()
        if found != record.node_id:
            return False, f"the engine at {record.url} is Swarm node {found or 'none'} now"
        return True, ""

    def add(
        self,
        node: swarm.NodeInfo,
        url: str,
        *,
        tls_ca: bytes = b"",
        tls_cert: bytes = b"",
        tls_key: bytes = b"",
    ) -> NodeEngineRecord:
        """Check that `url` reaches `node`'s own engine, then record it (nothing on failure)."""
        if bool(tls_cert) != bool(tls_key):
            raise InvalidArgument("--tls-cert and --tls-key go together: give both or neither")
        for name, pem, marker in (
            ("--tls-ca", tls_ca, b"CERTIFICATE"),
            ("--tls-cert", tls_cert, b"CERTIFICATE"),
            ("--tls-key", tls_key, b"PRIVATE KEY"),
        ):
            if pem and (len(pem) > MAX_PEM_BYTES or marker not in pem):
                raise InvalidArgument(f"{name} must be a PEM file ({marker.decode()})")
        tls = bool(tls_ca or tls_cert)
        url = validate_engine_url(url, tls=tls)
        self.home.mkdir(parents=True, exist_ok=True)
        root = self.home / "engines"
        root.mkdir(mode=0o700, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".new-", dir=root))
        try:
            files = _write_pems(staging, tls_ca, tls_cert, tls_key)
            candidate = NodeEngineRecord(node.id, node.hostname, url, **files)
            driver = _driver(candidate, PROBE_TIMEOUT_S * 2)
            try:
                facts = swarm.engine_facts(driver)
            except AnvylError as exc:
                raise FailedPrecondition(
                    f"cannot use {url} for node {node.hostname}: {exc.message}"
                ) from exc
            finally:
                driver.close()
            if facts.node_id != node.id:
                which = f"Swarm node {facts.node_id[:12]}" if facts.node_id else "in no Swarm"
                raise FailedPrecondition(
                    f"the engine at {url} ({facts.name}) is {which}, not node {node.hostname} "
                    f"({node.id[:12]}): nothing was recorded"
                )
            final = root / node.id
            shutil.rmtree(final, ignore_errors=True)
            staging.rename(final)
            record = NodeEngineRecord(
                node.id,
                node.hostname,
                url,
                **{k: str(final / Path(v).name) if v else "" for k, v in files.items()},
            )
            stored = table.put_node_engine(self.store, record)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self._forget_driver(node.id)
        return stored

    def remove(self, node_id: str) -> NodeEngineRecord:
        """Forget how to reach a node's engine (the node stays in the Swarm)."""
        record = self.get(node_id)
        if record is None:
            raise NotFound(f"Anvyl records no engine for node {node_id[:12]}")
        table.delete_node_engine(self.store, node_id)
        shutil.rmtree(self.home / "engines" / node_id, ignore_errors=True)
        self._forget_driver(node_id)
        return record

    def find(self, ref: str) -> NodeEngineRecord | None:
        """A recorded engine by node id, hostname or unique node id prefix."""
        records = self.records()
        exact = [r for r in records if ref in (r.node_id, r.hostname)]
        matches = exact or [r for r in records if r.node_id.startswith(ref)]
        return matches[0] if len(matches) == 1 else None

    def close(self) -> None:
        """Close every driver."""
        with self._lock:
            drivers, self._drivers = list(self._drivers.values()), {}
        for driver in drivers:
            driver.close()

    def _forget_driver(self, node_id: str) -> None:
        with self._lock:
            driver = self._drivers.pop(node_id, None)
        if driver is not None:
            driver.close()


def _driver(record: NodeEngineRecord, timeout: float) -> NodeEngineDriver:
    return NodeEngineDriver(
        record.url,
        tls_ca=record.tls_ca,
        tls_cert=record.tls_cert,
        tls_key=record.tls_key,
        timeout=timeout,
    )


def _write_pems(directory: Path, ca: bytes, cert: bytes, key: bytes) -> dict[str, str]:
    """The PEMs as private files; their paths by record field ('' for those not given)."""
    paths = {}
    for field, name, pem in (
        ("tls_ca", "ca.pem", ca),
        ("tls_cert", "cert.pem", cert),
        ("tls_key", "key.pem", key),
    ):
        if pem:
            path = directory / name
            path.touch(mode=0o600)
            path.write_bytes(pem)
            paths[field] = str(path)
        else:
            paths[field] = ""
    return paths
