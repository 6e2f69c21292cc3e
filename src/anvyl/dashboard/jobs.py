"""Model starts from the dashboard: `Models.start` in a thread, its progress kept for the page.

A start answers as soon as the options are validated (or refused): the page then follows the
job's progress (image, container, loading, ready) over server-sent events.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from anvyl.dashboard.protocol import anvyl_error_body, deployment_json, error_body
from anvyl.errors import AnvylError
from anvyl.services.models import PHASE_RESOLVING, DeploymentView, Models, StartOptions

MAX_JOBS = 50


@dataclass
class StartJob:
    """One start: its progress lines, then the deployment or the error."""

    id: str
    model_id: str
    events: list[dict[str, Any]] = field(default_factory=list)
    validated: bool = False
    done: bool = False
    deployment: dict[str, Any] | None = None
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

    def finish(self, deployment: dict[str, Any] | None, error: dict[str, Any] | None) -> None:
        """Record the outcome."""
        with self.changed:
            self.deployment, self.error, self.done = deployment, error, True
            self.changed.notify_all()

    def wait_validated(self, timeout: float) -> bool:
        """Block until the options are accepted or the start ended; True if accepted."""
        with self.changed:
            self.changed.wait_for(lambda: self.validated or self.done, timeout)
            return self.validated


class StartJobs:
    """The recent starts, newest last."""

    def __init__(self, models: Models, on_change: Callable[[], None]) -> None:
        self.models = models
        self.on_change = on_change
        self._jobs: OrderedDict[str, StartJob] = OrderedDict()
        self._lock = threading.Lock()

    def submit(self, options: StartOptions) -> StartJob:
        """Start `Models.start(options)` in a thread and return its job."""
        job = StartJob(id=uuid.uuid4().hex[:16], model_id=options.model_id)
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > MAX_JOBS:
                self._jobs.popitem(last=False)
        thread = threading.Thread(
            target=self._run, args=(job, options), name=f"anvyl-dashboard-start-{job.id}"
        )
        thread.daemon = True
        thread.start()
        return job

    def get(self, job_id: str) -> StartJob | None:
        """A job by id."""
        with self._lock:
            return self._jobs.get(job_id)

    def _run(self, job: StartJob, options: StartOptions) -> None:
        view: DeploymentView | None = None
        try:
            view = self.models.start(options, job.progress)
        except AnvylError as exc:
            job.finish(None, anvyl_error_body(exc))
        except Exception as exc:  # shown on the page; the service already cleaned up
            job.finish(None, error_body(f"internal error: {exc}", 500, "INTERNAL"))
        else:
            job.finish(deployment_json(view), None)
        finally:
            self.on_change()
