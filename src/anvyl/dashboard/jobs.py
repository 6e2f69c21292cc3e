"""Model starts and pulls from the dashboard: `Models.start` / `Models.pull` in a thread.

A start answers as soon as the options are validated (or refused): the page then follows the
job's progress (image, container, loading, ready) over server-sent events. A pull is the same
`Models.pull` the `PullModel` RPC runs; it answers once the repository is listed and its
download begins (or refused), then the page follows the download the same way.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from anvyl.dashboard.protocol import anvyl_error_body, deployment_json, error_body, model_json
from anvyl.errors import AnvylError
from anvyl.services.models import PHASE_RESOLVING, Models, StartOptions

MAX_JOBS = 50
KIND_START, KIND_PULL = "start", "pull"
PHASE_PULLING = "pulling"
# A pull's steps once the repository is listed, its files chosen and its name free.
_PULL_ACCEPTED = ("downloading", "joining", "done")


@dataclass
class StartJob:
    """One start (or pull): its progress lines, then the deployment (the model) or the error."""

    id: str
    model_id: str
    kind: str = KIND_START
    events: list[dict[str, Any]] = field(default_factory=list)
    validated: bool = False
    done: bool = False
    deployment: dict[str, Any] | None = None
    model: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    created_at: float = field(default_factory=time.time)
    changed: threading.Condition = field(default_factory=threading.Condition, repr=False)

    def progress(self, phase: str, message: str) -> None:
        """Record one progress line (the service's `Progress` callback)."""
        with self.changed:
            self.events.append({"phase": phase, "message": message, "t": time.time()})
            if phase != PHASE_RESOLVING:  # past resolving means the options were accepted
                self.validated = True
            self.changed.notify_all()

    def pull_progress(self, fraction: str, step: str) -> None:
        """Record one step of a pull (the catalog's `Progress`: overall fraction, step)."""
        with self.changed:
            event = {"phase": PHASE_PULLING, "message": step, "t": time.time()}
            event["fraction"] = float(fraction)
            self.events.append(event)
            if step.startswith(_PULL_ACCEPTED):
                self.validated = True
            self.changed.notify_all()

    def finish(self, result: dict[str, Any] | None, error: dict[str, Any] | None) -> None:
        """Record the outcome: the deployment of a start, the model of a pull, or the error."""
        with self.changed:
            if self.kind == KIND_PULL:
                self.model = result
            else:
                self.deployment = result
            self.error, self.done = error, True
            self.changed.notify_all()

    @property
    def result(self) -> dict[str, Any] | None:
        """The deployment of a start, the model of a pull."""
        return self.model if self.kind == KIND_PULL else self.deployment

    def wait_validated(self, timeout: float) -> bool:
        """Block until the options are accepted or the start ended; True if accepted."""
        with self.changed:
            self.changed.wait_for(lambda: self.validated or self.done, timeout)
            return self.validated


class StartJobs:
    """The recent starts, newest last."""

    def __init__(
        self,
        models: Models,
        on_change: Callable[[], None],
        closing: threading.Event | None = None,
    ) -> None:
        self.models = models
        self.on_change = on_change
        self._jobs: OrderedDict[str, StartJob] = OrderedDict()
        self._lock = threading.Lock()
        self._closing = closing or threading.Event()  # set: pulls stop, their partials stay

    def submit(self, options: StartOptions) -> StartJob:
        """Start `Models.start(options)` in a thread and return its job."""
        job = self._add(StartJob(id=uuid.uuid4().hex[:16], model_id=options.model_id))
        self._spawn(job, lambda: deployment_json(self.models.start(options, job.progress)))
        return job

    def submit_pull(self, repo: str, *, file: str = "", name: str = "") -> StartJob:
        """Run `Models.pull` (what the `PullModel` RPC runs) in a thread and return its job."""
        job = self._add(StartJob(id=uuid.uuid4().hex[:16], model_id=name or repo, kind=KIND_PULL))
        cancel = self._closing

        def pull() -> dict[str, Any]:
            info = self.models.pull(
                repo, file=file, name=name, progress=job.pull_progress, cancel=cancel
            )
            return model_json(info)

        self._spawn(job, pull)
        return job

    def _add(self, job: StartJob) -> StartJob:
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > MAX_JOBS:
                self._jobs.popitem(last=False)
        return job

    def _spawn(self, job: StartJob, work: Callable[[], dict[str, Any]]) -> None:
        thread = threading.Thread(
            target=self._run, args=(job, work), name=f"anvyl-dashboard-{job.kind}-{job.id}"
        )
        thread.daemon = True
        thread.start()

    def get(self, job_id: str) -> StartJob | None:
        """A job by id."""
        with self._lock:
            return self._jobs.get(job_id)

    def _run(self, job: StartJob, work: Callable[[], dict[str, Any]]) -> None:
        try:
            result = work()
        except AnvylError as exc:
            job.finish(None, anvyl_error_body(exc))
        except Exception as exc:  # shown on the page; the service already cleaned up
            job.finish(None, error_body(f"internal error: {exc}", 500, "INTERNAL"))
        else:
            job.finish(result, None)
        finally:
            self.on_change()
