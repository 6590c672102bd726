"""Progress across a batch: one terminal bar (done / running / failed, ETA) and the batch's events.

Events go to stdout with --json-events and always to OUT/batch-events.jsonl (see docs/CLUSTER.md):
batch_start, task_started, task_run, task_progress, task_retry, task_done, task_failed, batch_progress,
batch_done. The manifest is updated on every state change, so a killed driver loses nothing.
"""

from __future__ import annotations

import sys
import threading
import time

from ..protocol import EventStream
from .manifest import CANCELLED, DONE, FAILED, RUNNING, Manifest


class BatchProgress:
    def __init__(self, jobs, skipped: int, events: EventStream, manifest: Manifest, bar: bool):
        """``jobs``: the whole batch; ``skipped`` of them were done before this run."""
        self.prompts = {j.id: j.prompt for j in jobs}
        self.total, self.skipped = len(jobs), skipped
        self.events, self.manifest = events, manifest
        self.running: set[str] = set()
        self.attempts: dict[str, int] = {}
        self.done = self.failed = self.cancelled = 0
        self.t0 = time.monotonic()
        self._lock = threading.Lock()
        self._emit_lock = threading.Lock()  # workers report from their own threads; one line at a time
        self.bar = None
        if bar:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=skipped, desc="batch", unit="prompt", file=sys.stderr,
                            dynamic_ncols=True)
            self._refresh_bar()

    def _emit(self, event: str, **fields) -> None:
        with self._emit_lock:
            self.events.emit(event, **fields)

    # --- what workers report -------------------------------------------------------------------
    def started(self, job_id: str, info: dict) -> None:
        with self._lock:
            self.running.add(job_id)
            attempt = self.attempts[job_id] = self.attempts.get(job_id, 0) + 1
        self.manifest.update(job_id, prompt=self.prompts[job_id], status=RUNNING, attempts=attempt)
        self._emit("task_started", **{**info, "job": job_id}, prompt=self.prompts[job_id], attempt=attempt)
        self._changed()

    def forward(self, event: str, info: dict) -> None:
        """task_run / task_progress: passed on as they are."""
        self._emit(event, **info)

    def retry(self, job_id: str, message: str) -> None:
        with self._lock:
            self.running.discard(job_id)
        self._emit("task_retry", job=job_id, prompt=self.prompts[job_id], message=message)

    def finished(self, job_id: str, status: str, **fields) -> None:
        with self._lock:
            self.running.discard(job_id)
            attempts = self.attempts.get(job_id, 0)
            if status == DONE:
                self.done += 1
            elif status == CANCELLED:
                self.cancelled += 1
            else:
                self.failed += 1
        self.manifest.update(job_id, prompt=self.prompts[job_id], status=status, attempts=attempts, **fields)
        name = {DONE: "task_done", FAILED: "task_failed", CANCELLED: "task_cancelled"}[status]
        self._emit(name, job=job_id, prompt=self.prompts[job_id], attempts=attempts, **fields)
        if self.bar is not None:
            if status != DONE:
                self.bar.write(f"{status}: {_short(self.prompts[job_id])!r}: {fields.get('message', '')}")
            self._refresh_bar()
            self.bar.update(1)
        self._changed()

    # --- summaries ----------------------------------------------------------------------------
    def eta_s(self) -> float | None:
        """Mean wall time per prompt finished in this run, times the prompts left (what tqdm shows too)."""
        finished = self.done + self.failed + self.cancelled
        left = self.total - self.skipped - finished
        if finished == 0:
            return None
        return round((time.monotonic() - self.t0) / finished * left, 1)

    def counts(self) -> dict:
        finished = self.done + self.failed + self.cancelled
        return dict(total=self.total, skipped=self.skipped, done=self.done, failed=self.failed, cancelled=self.cancelled,
                    running=len(self.running), pending=self.total - self.skipped - finished - len(self.running))

    def _changed(self) -> None:
        self._emit("batch_progress", **self.counts(), eta_s=self.eta_s())
        self._refresh_bar()

    def _refresh_bar(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"done {self.skipped + self.done} running {len(self.running)} failed {self.failed}",
                                     refresh=False)
            self.bar.refresh()

    def close(self) -> dict:
        if self.bar is not None:
            self.bar.close()
        summary = dict(self.counts(), seconds=round(time.monotonic() - self.t0, 2))
        self._emit("batch_done", **summary, manifest=self.manifest.path)
        return summary


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."
