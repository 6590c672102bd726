"""At most one engine job at a time, for the whole Blender session.

No bpy here. Two generations would fight over the GPU and interleave their events in the panel, so a
second start is refused with a message (the user cancels or waits). ``JobManager.current`` keeps the
last job after it finishes so the panel can still show its outcome.
"""

from __future__ import annotations

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


class JobManager:
    def __init__(self):
        self.current: Job | None = None

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

    def shutdown(self) -> None:
        """Add-on unregister: stop a running engine rather than orphan it."""
        if self.busy:
            self.current.worker.cancel()
            self.current.worker.wait(timeout=15)
            self.current.worker.kill()


MANAGER = JobManager()
