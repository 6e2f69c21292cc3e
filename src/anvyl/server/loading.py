"""`LoadModel` (get or load, as `anvyl run` uses it): stream a start's phases to the caller.

The start is `OnDemand`'s, shared with the gateway's requests; a caller that goes away stops
waiting, and the start is cancelled when nobody else waits for it.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator

import grpc

from anvyl.api import anvyl_pb2 as pb
from anvyl.errors import FailedPrecondition, InvalidArgument
from anvyl.services.deployments.probe import healthy
from anvyl.services.deployments.views import DeploymentView
from anvyl.services.ondemand import OnDemand
from anvyl.services.ondemand.policy import parse_keep_alive
from anvyl.store import deployments as table

POLL_S = 0.2

ToPb = Callable[..., pb.Deployment]


def load_events(
    demand: OnDemand, request: pb.LoadModelRequest, context: grpc.ServicerContext, to_pb: ToPb
) -> Iterator[pb.StartModelEvent]:
    """Phase events of getting or loading `request.model_id`, then one with the deployment."""
    model_id = request.model_id.strip()
    if not model_id:
        raise InvalidArgument("a model id is required (see `anvyl model list`)")
    keep = parse_keep_alive(request.keep_alive) if request.keep_alive.strip() else None
    if keep is not None:
        demand.set_keep_alive(model_id, keep)
    events: queue.Queue[pb.StartModelEvent] = queue.Queue()

    def listener(phase: str, message: str) -> None:
        events.put(pb.StartModelEvent(phase=phase, message=message))

    load = demand.join(model_id, keep_alive=keep, listener=listener)
    if load is None:  # one runs already: wait until it answers
        view = _running(demand, model_id)
        demand.touch(model_id)
        yield pb.StartModelEvent(phase="ready", message=view.url, deployment=to_pb(view, demand))
        return
    left = [False]

    def leave() -> None:
        if not left[0]:
            left[0] = True
            demand.leave(load, listener)

    context.add_callback(leave)
    try:
        while not load.future.done() or not events.empty():
            try:
                event = events.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if context.is_active():
                yield event
        view = load.future.result()  # its error, if any, is the call's
    finally:
        leave()
    demand.touch(model_id)
    yield pb.StartModelEvent(phase="ready", message=view.url, deployment=to_pb(view, demand))


def _running(demand: OnDemand, model_id: str) -> DeploymentView:
    """The ready deployment of `model_id`, waiting (up to the load timeout) for one starting."""
    service = demand.deployments
    deadline = time.monotonic() + demand.policy.load_timeout_s
    while True:
        records = [
            r
            for r in table.list_deployments(service.store)
            if r.model_id == model_id and r.state in table.LIVE_STATES
        ]
        for record in sorted(records, key=lambda r: r.state != table.STATE_READY):
            if record.container_id and healthy(service.probe_base(record)):
                return service.view(record)
        if not records:
            raise FailedPrecondition(f"the deployment of {model_id} is gone; try again")
        if time.monotonic() > deadline:
            names = ", ".join(r.name for r in records)
            raise FailedPrecondition(
                f"{model_id} runs ({names}) but does not answer its health check within "
                f"{demand.policy.load_timeout_s:.0f} s; see `anvyl model logs {records[0].name}`"
            )
        time.sleep(POLL_S)
