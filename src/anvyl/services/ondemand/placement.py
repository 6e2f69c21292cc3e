"""Where and how an on-demand start runs: the model's remembered options, a free loopback
port, and room in the host's memory budget (idle on-demand models unload to make it).

When the start becomes a Swarm service (this machine's engine manages a Swarm), every usable
node has its own budget and the start goes to the node with the most free (`nodes.py`).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from anvyl.catalog import ModelInfo, resolve_model
from anvyl.errors import AnvylError, ResourceExhausted
from anvyl.runtime import model_spec as spec
from anvyl.runtime.base import KIND_SWARM
from anvyl.runtime.ports import free_local_port
from anvyl.runtime.swarm_capacity import swarm_capacity
from anvyl.services.deployments.options import StartOptions, memory_needed, validated
from anvyl.services.ondemand.budget import Holder, budget_of, host_memory, make_room
from anvyl.services.ondemand.loads import Load
from anvyl.services.ondemand.nodes import NodeRoom, choose_node, placed_by_node, rooms
from anvyl.services.ondemand.policy import DemandPolicy
from anvyl.store import deployments as table
from anvyl.store import profiles

if TYPE_CHECKING:
    from anvyl.runtime.driver import DockerDriver
    from anvyl.services.deployments.service import Deployments
    from anvyl.services.deployments.views import DeploymentView
    from anvyl.services.ondemand.budget import HostMemory
    from anvyl.store.deployments import DeploymentRecord

# (requests in flight by model, last use by model, models loading)
Snapshot = Callable[[], tuple[dict[str, int], dict[str, float], set[str]]]
Live = list[tuple["DeploymentRecord", Holder]]


class Unloader(Protocol):
    """What placement needs of `OnDemand` to make room."""

    def unload_now(self, record: DeploymentRecord, why: str) -> None: ...

    def wait_changed(self, timeout: float) -> None: ...


class Placement:
    """Decides, one start at a time, whether a model fits and what unloads to make room."""

    def __init__(
        self,
        deployments: Deployments,
        policy: DemandPolicy,
        *,
        generate_keys: bool = False,
        memory: Callable[[], HostMemory] = host_memory,
    ) -> None:
        self.deployments = deployments
        self.policy = policy
        self.generate_keys = generate_keys
        self.memory = memory
        self.unloader: Unloader | None = None
        self._lock = threading.Lock()
        # model id → (Swarm node id or "", bytes), for starts placed, not ready yet
        self._reserved: dict[str, tuple[str, int]] = {}

    def start(self, load: Load, snapshot: Snapshot, keep_alive: float | None) -> DeploymentView:
        """Make room for `load`'s model, start it, wait until it is ready."""
        model = resolve_model(self.deployments.home, load.model_id)
        opts = self.options(model, keep_alive)
        need = self.need(model, opts)
        load.say("placing", f"{model.id} needs about {spec.format_bytes(need)}")
        node = self._place(load, model.id, need, snapshot, self._swarm_manager(opts))
        if node is not None:
            load.say("placing", f"on Swarm node {node.name} ({spec.format_bytes(node.free)} free)")
            opts = replace(opts, host_id=node.node_id)
        try:
            return self.deployments.start(opts, load.say, load.check)
        finally:
            with self._lock:
                self._reserved.pop(model.id, None)

    def options(self, model: ModelInfo, keep_alive: float | None) -> StartOptions:
        """The start options of an on-demand start: the model's last explicit ones, on a free
        loopback port, with an API key only Anvyl knows when the gateway requires one."""
        kept = profiles.get_profile(self.deployments.store, model.id).start_options
        used = {r.name for r in table.list_deployments(self.deployments.store)}
        name = spec.default_deployment_name(model.id)
        if name in used:
            name = f"{name[:120]}-{secrets.token_hex(3)}"
        return StartOptions(
            model_id=model.id,
            name=name,
            port=free_local_port(),
            memory=str(kept.get("memory") or ""),
            cpus=float(kept.get("cpus") or 0.0),
            ctx=int(kept.get("ctx") or 0),
            max_queue=int(kept.get("max_queue") or 0),
            dtype=str(kept.get("dtype") or ""),
            force=bool(kept.get("force")),
            runtime=str(kept.get("runtime") or ""),
            allow_origins=tuple(kept.get("allow_origins") or ()),
            api_key=secrets.token_urlsafe(24) if self.generate_keys else "",
            keep_alive=self.policy.keep_alive_s if keep_alive is None else keep_alive,
            on_demand=True,
            wait_timeout=max(self.policy.load_timeout_s, 1.0),
        )

    def need(self, model: ModelInfo, opts: StartOptions) -> int:
        """Bytes `model` needs: its measured peak when Anvyl has one, else the estimate."""
        peak = profiles.get_profile(self.deployments.store, model.id).peak_memory
        return peak or memory_needed(model, validated(opts, model))

    def _swarm_manager(self, opts: StartOptions) -> DockerDriver | None:
        """The engine of the Swarm the start will become a service of; None on a single host."""
        kind = opts.runtime or self.deployments.default_runtime
        try:
            host, runtime = self.deployments.placement(replace(opts, runtime=kind))
            if not runtime.capabilities().nodes:
                return None
            return self.deployments.hosts.driver(host.id)
        except AnvylError:  # the start itself will say why
            return None

    def _place(
        self,
        load: Load,
        model_id: str,
        need: int,
        snapshot: Snapshot,
        swarm: DockerDriver | None,
    ) -> NodeRoom | None:
        """Reserve room for `need` bytes, unloading idle on-demand models; wait while what
        blocks it is transient (loading, or serving a request) up to the load timeout.
        On a Swarm, the node chosen."""
        deadline = time.monotonic() + self.policy.load_timeout_s
        while True:
            load.check()
            with self._lock:
                live, transient = self._live(model_id, snapshot)
                transient = transient or bool(self._reserved)
                try:
                    node, evict = self._decide(model_id, need, live, swarm)
                except ResourceExhausted:
                    if not transient or time.monotonic() >= deadline:
                        raise
                    evict = None
                else:
                    self._reserved[model_id] = (node.node_id if node else "", need)
            if evict is None:  # a model in use or loading may free its place soon
                assert self.unloader is not None
                self.unloader.wait_changed(min(1.0, max(0.0, deadline - time.monotonic())))
                continue
            for holder in evict:
                record = table.get_deployment(self.deployments.store, holder.deployment_id)
                if record is not None and self.unloader is not None:
                    load.say("unloading", f"unloading {record.name} to make room")
                    self.unloader.unload_now(record, f"making room for {model_id}")
            return node

    def _decide(
        self, model_id: str, need: int, live: Live, swarm: DockerDriver | None
    ) -> tuple[NodeRoom | None, Sequence[Holder]]:
        """(the Swarm node or None on a single host, what to unload first)."""
        reserved = [
            (node_id, Holder("", other, size, False, time.time(), "loading"))
            for other, (node_id, size) in self._reserved.items()
        ]
        if swarm is None:
            memory = self.memory()
            evict = make_room(
                model=model_id,
                need=need,
                budget=budget_of(memory, self.policy.max_memory),
                memory=memory,
                holders=[h for _, h in live] + [h for _, h in reserved],
                max_loaded=self.policy.max_loaded,
            )
            return None, evict
        capacity = swarm_capacity(swarm)
        placed: list[tuple[Holder, Sequence[str]]] = []
        for record, holder in live:
            if record.options.get("runtime") == KIND_SWARM:
                where = placed_by_node(
                    capacity.tasks, record.container_id, str(record.options.get("node_id") or "")
                )
            else:  # a process or container of this machine's engine: on the manager's node
                where = (capacity.local_node_id,)
            placed.append((holder, where))
        placed += [(h, (node_id,)) for node_id, h in reserved]
        usable = {n.id for n in capacity.nodes}
        choice = choose_node(
            model=model_id,
            need=need,
            nodes=rooms(capacity.nodes, placed, self.policy.max_memory),
            max_loaded=self.policy.max_loaded,
            elsewhere=[h for h, where in placed if not usable.intersection(where)],
        )
        return choice.node, choice.evict

    def _live(self, model_id: str, snapshot: Snapshot) -> tuple[Live, bool]:
        """What holds memory on this machine (or its Swarm) now, and whether any of it is
        transient (in use or loading)."""
        in_flight, last_used, loading = snapshot()
        local = self.deployments.local_host().id
        live: Live = []
        transient = False
        for record in table.list_deployments(self.deployments.store):
            if (
                record.host_id != local
                or record.state not in table.LIVE_STATES
                or record.model_id in self._reserved
            ):
                continue
            on_demand = bool(record.options.get("on_demand"))
            busy = bool(in_flight.get(record.model_id)) or record.model_id in loading
            why = "started explicitly"
            if on_demand:
                why = "on demand, in use" if busy else "on demand, idle"
                transient = transient or busy
            holder = Holder(
                deployment_id=record.id,
                name=record.name,
                held=self._held(record),
                evictable=on_demand and not busy and record.model_id != model_id,
                last_used=last_used.get(record.model_id, record.ready_at),
                why=why,
            )
            live.append((record, holder))
        return live, transient

    def _held(self, record: DeploymentRecord) -> int:
        peak = profiles.get_profile(self.deployments.store, record.model_id).peak_memory
        if peak:
            return peak
        try:
            model = resolve_model(self.deployments.home, record.model_id)
        except Exception:  # removed since: count what its memory limit says, or nothing
            limit = record.options.get("memory")
            return spec.parse_memory(limit) if limit else 0
        return memory_needed(model, StartOptions(model.id, ctx=int(record.options.get("ctx") or 0)))
