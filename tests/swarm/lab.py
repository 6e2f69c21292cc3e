"""A real Docker Swarm of N engines on this machine, each in its own network namespace.

Every node is a `dockerd` with its own data root, exec root, socket and hostname, run in its
own network namespace (`nsenter --net` plus `unshare --mount --uts`: `ip netns exec` would hide
the cgroup mounts). The namespaces hang off a bridge that lives in a namespace of its own (a
dockerd in the root namespace would drop forwarded traffic), and the root namespace gets an
address on that bridge so tests reach every node. Names, addresses and paths carry the lab's id,
so labs of parallel runs do not collide. `down()` removes everything, and is safe to call after a
failed `up()`.

    lab = SwarmLab(3, labels={"anvyl.test": run_id}); lab.up(); ...; lab.down()
    python tests/swarm/lab.py up|down ID    # by hand (prints the sockets)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import docker
import psutil

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
HEARTBEAT_S = 1
ENGINE_TCP_PORT = 2375


@dataclass
class Node:
    """One engine of the lab."""

    index: int
    netns: str
    address: str
    hostname: str
    socket: str
    data_root: Path
    exec_root: Path
    pidfile: Path
    log: Path
    node_id: str = ""

    @property
    def url(self) -> str:
        """The engine's `unix://` address."""
        return f"unix://{self.socket}"

    @property
    def tcp_url(self) -> str:
        """The engine's `tcp://` address on the lab's bridge (TLS on a lab made with `tls`)."""
        return f"tcp://{self.address}:{ENGINE_TCP_PORT}"

    @contextlib.contextmanager
    def client(self, timeout: int = 60) -> Iterator[docker.DockerClient]:
        """A docker SDK client of this node's engine, closed after the block."""
        client = docker.DockerClient(base_url=self.url, timeout=timeout)
        try:
            yield client
        finally:
            client.close()


@dataclass
class SwarmLab:
    """N dockerd nodes in network namespaces, forming one Swarm (node 1 is the manager)."""

    size: int = 3
    lab_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    labels: dict[str, str] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    # Engines listen on TCP with mutual TLS: a lab CA signs each engine's certificate (its
    # address as subject) and one client certificate, `tls_files` (ca, cert, key).
    tls: bool = False

    def __post_init__(self) -> None:
        third = int(self.lab_id[:2], 16) % 250 + 1  # 10.78.<third>.0/24, one per lab
        self.subnet = f"10.78.{third}"
        self.gateway_address = f"{self.subnet}.1"
        self.bridge_ns = f"anvl{self.lab_id}br"
        self.host_veth = f"al{self.lab_id}h"
        self.root = Path(tempfile.gettempdir()) / f"anvyl-lab-{self.lab_id}"
        self.run_dir = Path("/run") / f"anvl-{self.lab_id}"
        self.nodes = [
            Node(
                index=i,
                netns=f"anvl{self.lab_id}n{i}",
                address=f"{self.subnet}.{10 + i}",
                hostname=f"anvl{self.lab_id}-node{i}",
                socket=str(self.run_dir / f"n{i}.sock"),
                data_root=Path("/var/lib") / f"anvl-{self.lab_id}" / f"n{i}",
                exec_root=self.run_dir / f"x{i}",
                pidfile=self.run_dir / f"n{i}.pid",
                log=self.root / f"dockerd{i}.log",
            )
            for i in range(1, self.size + 1)
        ]

    @property
    def manager(self) -> Node:
        """Node 1, where the Swarm was initialised."""
        return self.nodes[0]

    # -- bring up --------------------------------------------------------------------------

    def up(self) -> SwarmLab:
        """Network, engines, Swarm; on any failure, tears down what was made and re-raises."""
        try:
            self._network()
            with ThreadPoolExecutor(max_workers=self.size) as pool:
                list(pool.map(self.start_node, self.nodes))
            self._swarm()
        except BaseException:
            self.down()
            raise
        return self

    @property
    def tls_files(self) -> tuple[Path, Path, Path]:
        """The client's CA, certificate and key (PEM) for the engines of a `tls` lab."""
        d = self.root / "tls"
        return d / "ca.pem", d / "client-cert.pem", d / "client-key.pem"

    def _certificates(self) -> None:
        d = self.root / "tls"
        d.mkdir(parents=True, exist_ok=True)
        key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        _openssl("req", "-x509", *key, "-keyout", d / "ca-key.pem", "-out", d / "ca.pem",
                 "-days", "2", "-subj", "/CN=anvyl-lab-ca")  # fmt: skip
        wanted = [(f"n{n.index}", f"IP:{n.address}", "serverAuth") for n in self.nodes]
        for name, san, usage in [*wanted, ("client", "DNS:client", "clientAuth")]:
            ext = d / f"{name}.ext"
            ext.write_text(f"subjectAltName={san}\nextendedKeyUsage={usage}\n")
            _openssl("req", *key, "-keyout", d / f"{name}-key.pem", "-out", d / f"{name}.csr",
                     "-subj", f"/CN={name}")  # fmt: skip
            _openssl("x509", "-req", "-in", d / f"{name}.csr", "-CA", d / "ca.pem",
                     "-CAkey", d / "ca-key.pem", "-CAcreateserial", "-days", "2",
                     "-extfile", ext, "-out", d / f"{name}-cert.pem")  # fmt: skip

    def _network(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.tls:
            self._certificates()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        br = self.bridge_ns
        _ip("netns", "add", br)
        _ip("-n", br, "link", "set", "lo", "up")
        _ip("-n", br, "link", "add", "br0", "type", "bridge")
        _ip("-n", br, "link", "set", "br0", "up")
        _ip("link", "add", self.host_veth, "type", "veth", "peer", "name", "uplink", "netns", br)
        _ip("-n", br, "link", "set", "uplink", "master", "br0", "up")
        _ip("addr", "add", f"{self.gateway_address}/24", "dev", self.host_veth)
        _ip("link", "set", self.host_veth, "up")
        for node in self.nodes:
            _ip("netns", "add", node.netns)
            _ip("-n", node.netns, "link", "set", "lo", "up")
            port = f"p{node.index}"
            _ip("-n", br, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", node.netns)  # fmt: skip
            _ip("-n", br, "link", "set", port, "master", "br0", "up")
            _ip("-n", node.netns, "addr", "add", f"{node.address}/24", "dev", "eth0")
            _ip("-n", node.netns, "link", "set", "eth0", "up")
            # Return traffic to the root namespace (the control plane and the tests).
            _ip("-n", node.netns, "route", "add", "default", "via", self.gateway_address)

    def start_node(self, node: Node) -> None:
        """Start the node's dockerd in its namespace and wait until it answers."""
        etc = self.root / f"etc{node.index}"
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "daemon.json").write_text("{}")
        cgroup = self.root / f"cg{node.index}"
        cgroup.mkdir(exist_ok=True)
        node.data_root.mkdir(parents=True, exist_ok=True)
        script = (
            f"set -e; hostname {node.hostname}; "
            f"mount --rbind /sys/fs/cgroup {cgroup}; mount -t sysfs sysfs /sys; "
            f"mount --move {cgroup} /sys/fs/cgroup; mount --bind {etc} /etc/docker; "
            f"exec dockerd --config-file {etc}/daemon.json --data-root {node.data_root} "
            f"--exec-root {node.exec_root} --pidfile {node.pidfile} -H unix://{node.socket} "
            f"-H tcp://{node.address}:{ENGINE_TCP_PORT} {self._tls_flags(node)} "
            f"--log-level warn" + "".join(f" --label {k}={v}" for k, v in self.labels.items())
        )
        env = {**os.environ, "DOCKER_SERVICE_PREFER_OFFLINE_IMAGE": "1"}
        env.pop("DOCKER_HOST", None)
        with open(node.log, "ab") as log:
            subprocess.Popen(
                [
                    "nsenter",
                    f"--net=/run/netns/{node.netns}",
                    "unshare",
                    "--mount",
                    "--propagation",
                    "slave",
                    "--uts",
                    "sh",
                    "-c",
                    script,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,
            )
        _wait(lambda: _answers(node), READY_TIMEOUT_S, f"dockerd of node {node.index}", node.log)

    def _tls_flags(self, node: Node) -> str:
        if not self.tls:
            return "--tls=false"
        d = self.root / "tls"
        return (
            f"--tlsverify --tlscacert {d}/ca.pem --tlscert {d}/n{node.index}-cert.pem "
            f"--tlskey {d}/n{node.index}-key.pem"
        )

    def _swarm(self) -> None:
        with self.manager.client() as manager:
            self._form(manager)

    def _form(self, manager: docker.DockerClient) -> None:
        manager.swarm.init(
            advertise_addr=self.manager.address,
            listen_addr=f"{self.manager.address}:2377",
            dispatcher_heartbeat_period=HEARTBEAT_S * 1_000_000_000,
        )
        token = manager.swarm.attrs["JoinTokens"]["Worker"]
        for node in self.nodes[1:]:
            with node.client() as client:
                client.swarm.join(
                    remote_addrs=[f"{self.manager.address}:2377"],
                    join_token=token,
                    advertise_addr=node.address,
                    listen_addr=f"{node.address}:2377",
                )
        _wait(
            lambda: (
                len([n for n in manager.nodes.list() if n.attrs["Status"]["State"] == "ready"])
                == self.size
            ),
            READY_TIMEOUT_S,
            "every node ready in the Swarm",
        )
        by_host = {n.attrs["Description"]["Hostname"]: n.id for n in manager.nodes.list()}
        for node in self.nodes:
            node.node_id = by_host[node.hostname]

    # -- images ----------------------------------------------------------------------------

    def load_image(
        self, source: docker.DockerClient, tag: str, nodes: Sequence[Node] | None = None
    ) -> None:
        """Put `tag` from `source` (the machine's engine) on the nodes (all by default)."""
        missing = [n for n in (self.nodes if nodes is None else nodes) if not _has_image(n, tag)]
        if not missing:
            return
        archive = self.root / "image.tar"
        with open(archive, "wb") as f:
            for chunk in source.api.get_image(tag, chunk_size=1 << 20):
                f.write(chunk)

        def load(node: Node) -> None:
            with node.client(timeout=600) as client, open(archive, "rb") as f:
                client.api.load_image(f, quiet=True)

        try:
            with ThreadPoolExecutor(max_workers=len(missing)) as pool:
                list(pool.map(load, missing))
        finally:
            archive.unlink(missing_ok=True)

    # -- failures --------------------------------------------------------------------------

    def kill_node(self, node: Node) -> None:
        """SIGKILL every process of the node (dockerd, containerd, shims, models)."""
        _kill(_node_pids(node))
        _wait(lambda: not _netns_pids(node.netns), STOP_TIMEOUT_S, f"node {node.index} dead")

    # -- tear down -------------------------------------------------------------------------

    def down(self) -> None:
        """Stop every engine, remove namespaces, links and files (idempotent, never raises)."""
        # Containers run in namespaces of their own: remember them (the shims' children)
        # before the engines go, or a killed shim leaves its model server running.
        left = set().union(*(_node_pids(n) for n in self.nodes))
        pids = [p for p in (_read_pid(n.pidfile) for n in self.nodes) if p and _alive(p)]
        for pid in pids:  # all at once: each engine's shutdown waits on its containers
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        _kill(left.union(*(_node_pids(n) for n in self.nodes)))  # shims and containers left
        for node in self.nodes:
            _ip("netns", "del", node.netns, check=False)
            shutil.rmtree(node.data_root, ignore_errors=True)
        _ip("link", "del", self.host_veth, check=False)
        _ip("netns", "del", self.bridge_ns, check=False)
        shutil.rmtree(Path("/var/lib") / f"anvl-{self.lab_id}", ignore_errors=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def swarm_lab(size: int = 3, **kwargs: object) -> Iterator[SwarmLab]:
    """A lab that is up inside the block and torn down after it, even on failure."""
    lab = SwarmLab(size, **kwargs)  # type: ignore[arg-type]
    lab.up()
    try:
        yield lab
    finally:
        lab.down()


def _ip(*args: str, check: bool = True) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def _openssl(*args: object) -> None:
    result = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]}: {result.stderr.strip()}")


def _node_pids(node: Node) -> set[psutil.Process]:
    """The processes in the node's namespace and all their descendants (containers)."""
    procs: set[psutil.Process] = set()
    for pid in _netns_pids(node.netns):
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            procs.add(proc)
            procs.update(proc.children(recursive=True))
    return procs


def _kill(procs: set[psutil.Process]) -> None:
    """SIGKILL each one still running (psutil checks a reused pid is not signalled)."""
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()


def _netns_pids(netns: str) -> list[int]:
    result = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
    return [int(p) for p in result.stdout.split()] if result.returncode == 0 else []


def _answers(node: Node) -> bool:
    try:
        with node.client(timeout=2) as client:
            return bool(client.ping())
    except Exception:
        return False


def _has_image(node: Node, tag: str) -> bool:
    with node.client() as client:
        try:
            client.images.get(tag)
            return True
        except docker.errors.ImageNotFound:
            return False


def _read_pid(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait(
    condition: Callable[[], bool], timeout: float, what: str, log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    tail = ""
    if log is not None and log.exists():
        tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}{tail}")


def main(argv: Sequence[str]) -> int:
    """`up [ID]` or `down ID`, for trying the lab by hand."""
    if len(argv) >= 1 and argv[0] == "up":
        lab = SwarmLab(3, *(argv[1:2])) if len(argv) > 1 else SwarmLab(3)
        lab.up()
        print(f"lab {lab.lab_id} up:")
        for node in lab.nodes:
            print(f"  node {node.index} {node.hostname} {node.tcp_url} DOCKER_HOST={node.url}")
        return 0
    if len(argv) == 2 and argv[0] == "down":
        SwarmLab(3, argv[1]).down()
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
