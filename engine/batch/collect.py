"""Bring one finished job home: its run folder under OUT/runs/<job>/ and its .glb as OUT/<job>.glb.

With a shared --out (or on this machine alone) the engine wrote the run folder in place; otherwise it
arrives as an archive through Ray's object store and is unpacked here. Nothing in OUT is overwritten:
a .glb name that is taken gets -2, -3, ...
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .manifest import DONE, FAILED
from .task import unpack_run


def free_name(out: Path, stem: str, suffix: str) -> Path:
    n = 1
    while True:
        path = out / (f"{stem}{suffix}" if n == 1 else f"{stem}-{n}{suffix}")
        if not path.exists():
            return path
        n += 1


def copy_atomic(src: Path, dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.partial")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def _rel(path: Path, out: Path) -> str:
    try:
        return str(path.resolve().relative_to(out.resolve()))
    except ValueError:
        return str(path)


def collect(out: Path, job_id: str, result: dict) -> tuple[str, dict]:
    """(status, manifest fields) for a worker's result dict (see task.run_job)."""
    status = result["status"]
    fields = {k: result[k] for k in ("exit_code", "kind", "message", "seconds", "node", "resumed_from") if result.get(k) is not None}
    worker_run = Path(result["run_dir"]) if result.get("run_dir") else None
    local_run = worker_run
    if result.get("archive"):
        local_run = unpack_run(result["archive"], out / "runs" / job_id)
    if local_run is not None:
        fields["run_dir"] = _rel(local_run, out)
    if status != DONE:
        return status, fields
    src = local_run / Path(result["glb"]).relative_to(worker_run)
    if not src.is_file():
        return FAILED, dict(fields, kind="transfer", message=(
            f"the worker on {result.get('node')} wrote {result['glb']}, which this machine does not see; "
            "--shared-out needs --out at the same path on every machine (or leave it off to send results back)"))
    dest = free_name(out, job_id, ".glb")
    copy_atomic(src, dest)
    fields["glb"] = _rel(dest, out)
    return DONE, fields
