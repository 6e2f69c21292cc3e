"""A second, private Docker engine for tests that stop and restart it (NOTES.md).

Its own `--data-root`, `--exec-root`, `--pidfile`, unix socket, config file and bridge, no
iptables rules (the shared engine's chains stay untouched; published ports go through the
userland proxy) and address pools away from the shared engine's, so the other tests' containers
live on while this one goes down. Live restore is on: the engine's containers outlive it.
Everything it made is removed on exit, even on failure.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
from helpers import wait_for

DOCKERD = shutil.which("dockerd") or "/usr/sbin/dockerd"


@dataclass
class PrivateEngine:
    """A private `dockerd` and how to stop and start it again."""

    root: Path
    tag: str
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None
    clients: list[docker.DockerClient] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Its socket, as DOCKER_HOST."""
        return f"unix://{self.root / 'docker.sock'}"

    def client(self) -> docker.DockerClient:
        """A client of this engine (closed on exit)."""
        client = docker.DockerClient(base_url=self.url, timeout=60)
        self.clients.append(client)
        return client

    def start(self) -> None:
        """Start the daemon and wait until it answers."""
        log = (self.root / "dockerd.log").open("ab")
        self.proc = subprocess.Popen(
            self.args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

        def answers() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                tail = (self.root / "dockerd.log").read_text(errors="replace")[-2000:]
                raise AssertionError(f"the private dockerd exited:\n{tail}")
            probe = docker.DockerClient(base_url=self.url, timeout=5)
            try:
                return bool(probe.ping())
            finally:
                probe.close()

        wait_for(answers, timeout=60, interval=0.2, what="the private dockerd to answer")

    def stop(self) -> None:
        """SIGTERM the daemon (it stops its containers) and wait for it to exit."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def private_engine(root: Path) -> Iterator[PrivateEngine]:
    """A running private engine under `root` (a short path: it holds a unix socket)."""
    tag = uuid.uuid4().hex[:6]
    bridge = f"anvt{tag}"
    octet = random.randint(200, 250)
    root.mkdir(parents=True, exist_ok=True)
    (root / "daemon.json").write_text("{}\n")
    exec_root = Path(f"/run/anvt-{tag}")
    args = [
        DOCKERD,
        "--config-file", str(root / "daemon.json"),
        "--data-root", str(root / "data"),
        "--exec-root", str(exec_root),
        "--pidfile", str(root / "dockerd.pid"),
        "-H", f"unix://{root / 'docker.sock'}",
        "--bridge", bridge,
        "--iptables=false",
        "--ip-masq=false",
        "--default-address-pool", f"base=10.{octet}.0.0/16,size=24",
        # Without live-restore, a restart with address pools deletes the interface named
        # docker0 (moby's removeDefaultBridgeInterface): the *shared* engine's bridge.
        "--live-restore",
        "--containerd-namespace", f"anvt-{tag}",
        "--containerd-plugins-namespace", f"anvt-{tag}-plugins",
    ]  # fmt: skip
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    engine = PrivateEngine(root=root, tag=tag, args=args)
    try:
        subprocess.run(["ip", "addr", "add", f"10.{octet}.255.1/24", "dev", bridge], check=True)
        subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
        engine.start()
        yield engine
    finally:
        with contextlib.suppress(Exception):
            if engine.proc is not None and engine.proc.poll() is None:
                cleanup = docker.DockerClient(base_url=engine.url, timeout=30)
                for container in cleanup.containers.list(all=True):
                    container.remove(force=True, v=True)
                # Its networks' bridges live in this namespace: remove them with the engine.
                for network in cleanup.networks.list():
                    if network.name not in ("bridge", "host", "none"):
                        network.remove()
                cleanup.close()
        for client in engine.clients:
            client.close()
        engine.stop()
        subprocess.run(["ip", "link", "del", bridge], check=False)
        for leftover in _bridges_in(f"10.{octet}."):  # networks the engine could not remove
            subprocess.run(["ip", "link", "del", leftover], check=False)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(exec_root, ignore_errors=True)


def _bridges_in(prefix: str) -> list[str]:
    """Docker network bridges (`br-*`) with an IPv4 address starting with `prefix`."""
    out = subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True, check=False)
    links = json.loads(out.stdout or "[]")
    return [
        link["ifname"]
        for link in links
        if link.get("ifname", "").startswith("br-")
        and any(a.get("local", "").startswith(prefix) for a in link.get("addr_info", []))
    ]


def copy_image(source: docker.DockerClient, target: docker.DockerClient, tag: str) -> None:
    """`docker save | docker load` between two engines, streamed."""
    target.images.load(source.images.get(tag).save(named=True))
