"""The batch manifest, ``OUT/batch.json``: what each prompt's job has become (done, failed, ...).

It is rewritten atomically (temporary file, fsync, rename) after every change, so a driver killed at
any moment leaves the previous complete manifest. A re-run reads it to skip jobs that are done and
whose .glb is still there; it refuses to continue a batch made with different engine settings,
because mixing them would give assets that do not belong together.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path

from ..errors import ConfigError

NAME = "batch.json"
FORMAT = 1
DONE, FAILED, PENDING, RUNNING, CANCELLED = "done", "failed", "pending", "running", "cancelled"


def write_json_atomic(path: Path, data: dict) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Manifest:
    """Thread-safe: local workers report from their own threads."""

    def __init__(self, out: Path, data: dict):
        self.path = Path(out) / NAME
        self.out = Path(out)
        self.data = data
        self._lock = threading.Lock()

    @classmethod
    def open(cls, out: Path, settings: dict) -> "Manifest":
        path = Path(out) / NAME
        if not path.exists():
            return cls(out, {"format": FORMAT, "batch_id": uuid.uuid4().hex[:12], "settings": settings, "jobs": {}})
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            jobs = data["jobs"]
            if not isinstance(jobs, dict):
                raise TypeError("jobs is not an object")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path} is not a readable batch manifest ({exc}); choose another --out") from None
        old = data.get("settings", {})
        if old != settings:
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise ConfigError(
                f"{Path(out)} holds a batch made with other engine settings ({', '.join(diff)} differ: "
                f"{ {k: old.get(k) for k in diff} } before, { {k: settings.get(k) for k in diff} } now); "
                "use the same settings to continue it, or another --out for a new batch"
            )
        return cls(out, data)

    @property
    def batch_id(self) -> str:
        return self.data["batch_id"]

    def is_done(self, job_id: str) -> bool:
        """Done and its .glb still exists (a deleted asset is made again)."""
        rec = self.data["jobs"].get(job_id)
        return bool(rec and rec.get("status") == DONE and rec.get("glb") and (self.out / rec["glb"]).is_file())

    def get(self, job_id: str) -> dict:
        return dict(self.data["jobs"].get(job_id, {}))

    def update(self, job_id: str, **fields) -> None:
        with self._lock:
            rec = self.data["jobs"].setdefault(job_id, {})
            rec.update(fields, updated=round(time.time(), 3))
            self.save_locked()

    def save(self) -> None:
        with self._lock:
            self.save_locked()

    def save_locked(self) -> None:
        write_json_atomic(self.path, self.data)
