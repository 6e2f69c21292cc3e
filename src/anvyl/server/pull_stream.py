"""The PullModel RPC: a pull on a worker thread, its progress streamed, cancelled with the call.

Unlike an import, a pull stops when the client goes away (Ctrl-C in `anvyl model pull`): the
download keeps its partial files and the next pull resumes them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from anvyl.api import anvyl_pb2 as pb
from anvyl.catalog.hub_pull import Pulls

_PULLS: dict[Path, Pulls] = {}
_LOCK = threading.Lock()
_DONE = object()


def pulls_for(home: Path) -> Pulls:
    """The server's one `Pulls` per ANVYL_HOME (so concurrent pulls share downloads)."""
    with _LOCK:
        return _PULLS.setdefault(Path(home), Pulls(Path(home)))


def pull_model_events(
    home: Path, request: pb.PullModelRequest, context: grpc.ServicerContext
) -> Iterator[pb.ImportModelEvent]:
    """Run the pull, yielding an event per progress step and the model on the last one."""
    from anvyl.server.servicers import model_to_pb

    events: queue.Queue[tuple[Any, Any]] = queue.Queue()
    cancel = threading.Event()
    context.add_callback(cancel.set)  # called when the RPC ends, Ctrl-C included

    def work() -> None:
        try:
            info = pulls_for(home).pull(
                request.repo,
                file=request.file,
                name=request.name,
                progress=lambda step, f: events.put(("event", (step, f))),
                cancel=cancel,
            )
            events.put(("result", model_to_pb(info)))
        except BaseException as exc:  # re-raised in the RPC thread, where the interceptor maps it
            events.put(("error", exc))
        events.put((_DONE, None))

    threading.Thread(target=work, name="anvyl-pull", daemon=True).start()
    while True:
        kind, value = events.get()
        if kind is _DONE:
            return
        if kind == "error":
            raise value
        if not context.is_active():
            continue
        if kind == "result":
            yield pb.ImportModelEvent(step="pulled", fraction=1.0, model=value)
        else:
            yield pb.ImportModelEvent(step=value[0], fraction=float(value[1]))
