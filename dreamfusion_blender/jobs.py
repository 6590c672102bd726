"""One engine job at a time for the whole Blender session, and a queue of generations waiting their turn.

No bpy here. Two engines would fight over the GPU and interleave their events, so ``JobManager.start``
refuses a second job (``Busy``). Generations asked for while one runs wait in ``queue`` (the panel's
queue, first in first out); the runner starts the next one when the current job has been handled,
whatever its outcome, so one failed prompt never stops the rest. ``current`` keeps the last job after
it finishes so the panel can still show its outcome.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from .worker import Worker


class Busy(RuntimeError):
    pass


@dataclass
class Job:
    kind: str  # generate | resume | export | check
    worker: Worker
    label: str = ""  # e.g. the prompt, for messages
    info: dict = field(default_factory=dict)  # what the caller needs at the end (scene name, request, ...)
    handled: bool = False  # the end of the job has been acted on (import / report) exactly once

    @property
    def state(self):
        return self.worker.state

    @property
    def running(self) -> bool:
        return self.worker.running


_IDS = itertools.count(1)


@dataclass
class QueuedRun:
    """A generation waiting for its turn; the request is fixed when it is queued (the panel may change)."""

    label: str
    request: object  # engine_cli.GenerateRequest
    scene: str | None = None
    id: int = field(default_factory=lambda: next(_IDS))


class JobManager:
    def __init__(self):
        self.current: Job | None = None
        self.queue: list[QueuedRun] = []
        self.history: list[tuple[str, str]] = []  # (label, outcome) of queued runs, newest last

    @property
    def busy(self) -> bool:
        return self.current is not None and self.current.running

    def start(self, job: Job) -> Job:
        if self.busy:
            cur = self.current
            raise Busy(f"a {cur.kind} job is already running ({cur.label or cur.kind}); "
                       "cancel it or wait for it to finish")
        self.current = job
        job.worker.start()
        return job

    def cancel(self) -> bool:
        if not self.busy:
            return False
        self.current.worker.cancel()
        return True

    # -- the queue -------------------------------------------------------------------------------
    def enqueue(self, run: QueuedRun) -> QueuedRun:
        self.queue.append(run)
        return run

    def pop_next(self) -> QueuedRun | None:
        """The next run to start, if the engine is free (the previous job handled) and one waits."""
        if self.busy or (self.current is not None and not self.current.handled) or not self.queue:
            return None
        return self.queue.pop(0)

    def remove(self, run_id: int) -> bool:
        """Cancel one waiting run (it never starts)."""
        before = len(self.queue)
        self.queue = [r for r in self.queue if r.id != run_id]
        return len(self.queue) < before

    def cancel_all(self) -> int:
        """Empty the queue and cancel the running job; returns how many runs were stopped."""
        n = len(self.queue) + int(self.busy)
        self.queue.clear()
        self.cancel()
        return n

    def shutdown(self) -> None:
        """Add-on unregister: stop a running engine rather than orphan it."""
        self.queue.clear()
        if self.busy:
            self.current.worker.cancel()
            self.current.worker.wait(timeout=15)
            self.current.worker.kill()


MANAGER = JobManager()
