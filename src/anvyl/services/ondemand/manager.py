"""Models on demand: a request names a model and it is served; idle ones unload.

`OnDemand` is shared by the gateway (a request for a model that is not running) and the gRPC
API (`anvyl run`, through `LoadModel`). Any number of concurrent first requests for one model
cause one start (`loads.Load`); starts are placed by memory (`placement.py`); deployments with
a keep-alive unload when idle (`idle.py`, on the server's timer).

Thread-safe: the gateway calls it from its event loop's worker threads, gRPC from its pool.
Bookkeeping (in-flight requests, last use, unloads under way) lives in memory: a restarted
server starts every idle clock afresh.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from anvyl.catalog import ModelInfo, discover_models, resolve_model
from anvyl.services.ondemand.loads import Listener, Load
from anvyl.services.ondemand.placement import Placement
from anvyl.services.ondemand.policy import FOREVER, DemandPolicy
from anvyl.store import deployments as table

if TYPE_CHECKING:
    from anvyl.services.deployments.service import Deployments
    from anvyl.services.deployments.views import DeploymentView
    from anvyl.store.deployments import DeploymentRecord

log = logging.getLogger(__name__)

CATALOG_TTL_S = 5.0


class OnDemand:
    """Loads models when asked for, counts their use, unloads the idle ones.

    Args:
        deployments: The deployment service that starts and stops servers.
        policy: `anvyl serve`'s settings (keep-alive, load timeout, budget, max loaded).
        generate_keys: Give each on-demand deployment an API key that only Anvyl holds (when
            the gateway itself requires a token).
    """

    def __init__(
        self, deployments: Deployments, policy: DemandPolicy, *, generate_keys: bool = False
    ) -> None:
        self.deployments = deployments
        self.policy = policy
        self.placement = Placement(deployments, policy, generate_keys=generate_keys)
        self.placement.unloader = self
        self._lock = threading.Lock()
        self.changed = threading.Condition(self._lock)  # a load ended, a request ended...
        self._loads: dict[str, Load] = {}
        self._unloading: dict[str, threading.Event] = {}  # model id → set once it is gone
        self._in_flight: dict[str, int] = {}
        self._last_used: dict[str, float] = {}  # model id → wall-clock time
        self._catalog: tuple[float, list[ModelInfo]] = (0.0, [])

    def startable(self) -> list[ModelInfo]:
        """Every model a request may name (imported, LM Studio's, the Hub cache): a cached
        look, refreshed every few seconds."""
        taken, models = self._catalog
        if time.monotonic() - taken > CATALOG_TTL_S:
            models = discover_models(self.deployments.home)
            self._catalog = (time.monotonic(), models)
        return models

    # -- loading ---------------------------------------------------------------------------

    def join(
        self, model_id: str, *, keep_alive: float | None = None, listener: Listener | None = None
    ) -> Load | None:
        """The start of `model_id` to wait for (begun now, or joined); None when a deployment
        of it already exists (route to it). NotFound when the model is not imported.

        Every `join` that returns a Load must be matched by one `leave`.
        """
        resolve_model(self.deployments.home, model_id)  # NotFound names the model
        with self._lock:
            load = self._loads.get(model_id)
            if load is None:
                if model_id not in self._unloading and self._deployed(model_id):
                    return None
                load = Load(model_id)
                self._loads[model_id] = load
                gone = self._unloading.get(model_id)
                threading.Thread(
                    target=self._run,
                    args=(load, keep_alive, gone),
                    name=f"anvyl-load-{model_id}"[:64],
                    daemon=True,
                ).start()
            load.waiters += 1
            load.cancel.clear()  # a request came back before the start saw it was cancelled
        if listener is not None:
            load.listen(listener)
        return load

    def leave(self, load: Load, listener: Listener | None = None) -> None:
        """A waiter of `load` stops waiting; the last one to leave cancels an unfinished start."""
        if listener is not None:
            load.unlisten(listener)
        with self._lock:
            load.waiters -= 1
            if load.waiters <= 0 and not load.future.done():
                log.info("no request waits for %s any more: cancelling its start", load.model_id)
                load.cancel.set()

    def loading(self, model_id: str) -> bool:
        """Whether a start of `model_id` is under way."""
        with self._lock:
            return model_id in self._loads

    def _run(self, load: Load, keep_alive: float | None, gone: threading.Event | None) -> None:
        try:
            if gone is not None:  # it is unloading: let it go first, then start it afresh
                load.say("unloading", f"waiting for {load.model_id} to unload first")
                while not gone.wait(0.2):
                    load.check()
            view = self.placement.start(load, self._holders_snapshot, keep_alive)
        except BaseException as exc:  # handed to every waiter
            log.info("on-demand start of %s failed: %s", load.model_id, exc)
            load.future.set_exception(exc)
        else:
            with self._lock:
                self._last_used[load.model_id] = time.time()
            load.future.set_result(view)
        finally:
            with self._lock:
                if self._loads.get(load.model_id) is load:
                    del self._loads[load.model_id]
                self.changed.notify_all()

    def starting(self, model_id: str) -> bool:
        """Whether a deployment of `model_id` is being created or is loading its model."""
        return any(
            r.model_id == model_id and r.state in (table.STATE_CREATING, table.STATE_STARTING)
            for r in table.list_deployments(self.deployments.store)
        )

    def _deployed(self, model_id: str) -> bool:
        return any(
            r.model_id == model_id and r.state in table.LIVE_STATES
            for r in table.list_deployments(self.deployments.store)
        )

    def _holders_snapshot(self) -> tuple[dict[str, int], dict[str, float], set[str]]:
        """(in-flight requests, last use, models loading) now, for placement decisions."""
        with self._lock:
            return dict(self._in_flight), dict(self._last_used), set(self._loads)

    # -- use -------------------------------------------------------------------------------

    def begin(self, model_id: str) -> bool:
        """Count a request to `model_id` as in flight; False (not counted) while it unloads."""
        with self._lock:
            if model_id in self._unloading:
                return False
            self._in_flight[model_id] = self._in_flight.get(model_id, 0) + 1
            self._last_used[model_id] = time.time()
            return True

    def end(self, model_id: str) -> None:
        """A request counted by `begin` is done."""
        with self._lock:
            left = self._in_flight.get(model_id, 0) - 1
            if left > 0:
                self._in_flight[model_id] = left
            else:
                self._in_flight.pop(model_id, None)
            self._last_used[model_id] = time.time()
            self.changed.notify_all()

    def touch(self, model_id: str) -> None:
        """`model_id` served a request Anvyl did not see (straight to its port)."""
        with self._lock:
            self._last_used[model_id] = time.time()

    def unloading(self, model_id: str) -> threading.Event | None:
        """Set once the unload of `model_id` under way is done; None when none is."""
        with self._lock:
            return self._unloading.get(model_id)

    def set_keep_alive(self, model_id: str, seconds: float) -> None:
        """A request's keep-alive (Ollama's `keep_alive`, LM Studio's `ttl`) for the model's
        deployments from now on; a start it causes gets it too."""
        for record in table.list_deployments(self.deployments.store):
            if record.model_id != model_id:
                continue
            if record.options.get("keep_alive") != seconds:
                options = {**record.options, "keep_alive": seconds}
                table.update_deployment(self.deployments.store, record.id, options=options)

    # -- unloading -------------------------------------------------------------------------

    def unload_all(self, model_id: str, why: str) -> list[str]:
        """Unload every live deployment of `model_id`, explicit ones too, and wait until they
        are gone (LM Studio's `unload`); their names."""
        records = [
            r
            for r in table.list_deployments(self.deployments.store)
            if r.model_id == model_id and r.state in table.LIVE_STATES
        ]
        for record in records:
            self.unload_now(record, why)
        return [r.name for r in records]

    def unload_model(self, model_id: str) -> None:
        """Begin unloading every idle deployment of `model_id` (Ollama's unload request)."""
        for record in table.list_deployments(self.deployments.store):
            if record.model_id == model_id:
                self.try_unload(record, "asked to unload (keep_alive 0)")

    def keep_alive_of(self, record: DeploymentRecord) -> float:
        """A deployment's keep-alive in seconds (`FOREVER` for explicit starts without one)."""
        value = record.options.get("keep_alive")
        return FOREVER if value is None else float(value)

    def unload_at(self, record: DeploymentRecord) -> float:
        """When an idle deployment will unload (Unix time); 0 when never or while in use."""
        keep = self.keep_alive_of(record)
        if keep < 0:
            return 0.0
        with self._lock:
            if self._in_flight.get(record.model_id):
                return 0.0
            last = self._last_used.get(record.model_id, 0.0)
        return max(last, record.ready_at or record.created_at) + keep

    def expiries(self) -> dict[str, float]:
        """When each idle model will unload (Unix time), for Ollama's `/api/ps`."""
        out: dict[str, float] = {}
        for record in table.list_deployments(self.deployments.store):
            at = self.unload_at(record) if record.state in table.LIVE_STATES else 0.0
            if at:
                out[record.model_id] = min(at, out.get(record.model_id, at))
        return out

    def try_unload(self, record: DeploymentRecord, why: str, *, now: float | None = None) -> bool:
        """Begin unloading `record` if it is idle now; False when a request holds it."""
        now = time.time() if now is None else now
        with self._lock:
            if self._in_flight.get(record.model_id) or record.model_id in self._loads:
                return False
            if record.model_id in self._unloading:
                return False
            gone = threading.Event()
            self._unloading[record.model_id] = gone
        log.info("unloading %s: %s", record.name, why)
        threading.Thread(
            target=self._unload,
            args=(record, gone),
            name=f"anvyl-unload-{record.name}"[:64],
            daemon=True,
        ).start()
        return True

    def unload_now(self, record: DeploymentRecord, why: str) -> None:
        """Unload `record` and wait until it is gone (to make room for another model)."""
        with self._lock:
            gone = threading.Event()
            self._unloading[record.model_id] = gone
        log.info("unloading %s: %s", record.name, why)
        self._unload(record, gone)

    def _unload(self, record: DeploymentRecord, gone: threading.Event) -> None:
        try:
            self.deployments.stop(record.id)
        except Exception as exc:  # already gone, or the engine failed: the row tells
            log.warning("could not unload %s: %s", record.name, exc)
        finally:
            with self._lock:
                if self._unloading.get(record.model_id) is gone:
                    del self._unloading[record.model_id]
                self._last_used.pop(record.model_id, None)
                self.changed.notify_all()
            gone.set()

    def wait_changed(self, timeout: float) -> None:
        """Block until a load, request or unload ends (or `timeout`)."""
        with self._lock:
            self.changed.wait(timeout)

    def status(self, view: DeploymentView) -> tuple[bool, float, float]:
        """(on demand, keep-alive seconds, unload at) of a deployment, for listings."""
        record = view.record
        return (
            bool(record.options.get("on_demand")),
            self.keep_alive_of(record),
            self.unload_at(record),
        )
