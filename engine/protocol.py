"""The engine's side of the worker protocol: JSON-lines events (see docs/ARCHITECTURE.md).

Every event goes to ``events.jsonl`` in the run folder; with ``--json-events`` also to stdout, one
object per line, flushed at once so the Blender add-on sees progress as it happens. Human-readable
output (progress bar, log) goes to stderr and ``log.txt`` so it never corrupts the stream.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path


def _jsonable(value):
    """Plain JSON values only: paths as strings, numpy scalars as numbers, NaN/inf as null (strict JSON
    has no NaN or Infinity; a reader such as JSON.parse would reject the whole line)."""
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def claim_stdout_fd():
    """For a worker process: keep the real stdout (fd 1) for events only and point fd 1 at stderr, so
    that anything else (a library's print, a C extension, a child process) lands on stderr and never
    corrupts the event stream. Returns a text stream on the original stdout."""
    sys.stdout.flush()
    events_fd = os.dup(1)
    os.dup2(2, 1)
    return os.fdopen(events_fd, "w", encoding="utf-8", buffering=1)


class EventStream:
    def __init__(self, to_stdout: bool = False, stream=None):
        self.to_stdout = to_stdout
        # Bound now: the CLI points sys.stdout at stderr while a command runs (only events on stdout).
        self._stdout = stream if stream is not None else sys.stdout
        self._file = None
        self.run_dir: Path | None = None
        self._pending: list[str] = []  # events emitted before the run folder exists

    def attach(self, path: Path) -> None:
        """Start mirroring events into ``path`` (appending: a resumed run keeps its history)."""
        self._file = open(path, "a", encoding="utf-8")
        self.run_dir = Path(path).parent
        for line in self._pending:
            self._file.write(line + "\n")
        self._pending.clear()
        self._file.flush()

    def emit(self, event: str, **fields) -> dict:
        record = {"event": event, "time": round(time.time(), 3), **_jsonable(fields)}
        line = json.dumps(record, allow_nan=False)
        if self.to_stdout:
            self._stdout.write(line + "\n")
            self._stdout.flush()
        if self._file is not None:
            try:
                self._file.write(line + "\n")
                self._file.flush()
            except OSError:
                pass  # a full disk must not hide the event from the add-on; stdout still has it
        else:
            self._pending.append(line)
        return record

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_events(path: Path) -> list[dict]:
    """Parse an events.jsonl file (used by tests and re-export)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            out.append(json.loads(line))
    return out
