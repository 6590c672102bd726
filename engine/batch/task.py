"""One prompt on one worker: run the engine as a child process, resume what a dead attempt left,
and hand back the result. The same function runs in a local worker thread and inside a Ray task;
it never imports ray.

Outcomes: the engine's exit code is the contract (docs/ARCHITECTURE.md). 0 is done; a reported
failure (bad input, model, device, export, ...) is a failed prompt and is not retried, because the
same input fails the same way again; an engine killed by a signal (the OOM killer, a crash) raises
EngineCrashed, which the caller retries, and the retry resumes from the run's last checkpoint.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable

import engine

from .. import runfolder

EXIT_CANCELLED = 130
PROGRESS_EVERY_S = 1.0  # forwarded engine progress per job; the rest stays in the run's events.jsonl
ENGINE_ROOT = str(Path(engine.__file__).resolve().parent.parent)  # what a child needs on PYTHONPATH


class EngineCrashed(RuntimeError):
    """The engine died without reporting why (killed by a signal): worth another attempt."""


def scratch_root(batch_id: str) -> Path:
    """Where a worker without the shared --out keeps run folders until they are sent back. The same
    path on every attempt, so a retry on the same machine resumes too."""
    return Path(tempfile.gettempdir()) / "dreamfusion-batch" / batch_id


def _finished(run_dir: Path) -> Path | None:
    glb = run_dir / "asset" / "asset.glb"
    if not glb.is_file() or not (run_dir / runfolder.EVENTS).is_file():
        return None
    for line in reversed((run_dir / runfolder.EVENTS).read_text(encoding="utf-8", errors="replace").splitlines()):
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill
        return glb if event.get("event") == "done" else None
    return None


def _previous_run(job_root: Path) -> Path | None:
    """The newest run folder an earlier attempt left (the engine names them; never reused)."""
    runs = [p for p in job_root.iterdir() if p.is_dir() and (p / runfolder.CONFIG).is_file()]
    return max(runs, key=lambda p: p.stat().st_mtime) if runs else None


def pack_run(run_dir: Path, keep_checkpoints: bool) -> bytes:
    """The run folder as a .tar.gz, for the trip back through Ray's object store."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(run_dir, arcname=run_dir.name,
                filter=lambda ti: None if not keep_checkpoints and ti.name.split("/")[1:2] == ["checkpoints"] else ti)
    return buf.getvalue()


def unpack_run(archive: bytes, dest_root: Path) -> Path:
    """Inverse of pack_run on the driver; the "data" filter refuses links and paths that escape."""
    dest_root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        top = {m.name.split("/")[0] for m in tar.getmembers()}
        if len(top) != 1:
            raise ValueError(f"a run archive must hold one folder, not {sorted(top)}")
        tar.extractall(dest_root, filter="data")
    return dest_root / top.pop()


def run_job(job_id: str, prompt: str, spec: dict, report: Callable[[str, dict], None] = lambda e, f: None) -> dict:
    """Run (or resume, or recognise as finished) one job. ``spec``: engine_args (generate options),
    root (the shared runs folder, or None for this machine's scratch), batch_id, device, threads,
    pack (send the run folder back as bytes), keep_checkpoints."""
    t0 = time.monotonic()
    job_root = Path(spec["root"] or scratch_root(spec["batch_id"])) / job_id
    job_root.mkdir(parents=True, exist_ok=True)
    lock = open(job_root / ".lock", "w")
    try:
        # An earlier attempt's engine may still be saving its checkpoint after its worker died: wait.
        fcntl.flock(lock, fcntl.LOCK_EX)
    except OSError:
        pass  # a filesystem without locks (some network mounts): go on
    try:
        result = _run_locked(job_id, prompt, spec, report, job_root, lock)
    finally:
        lock.close()
    result.update(job=job_id, seconds=round(time.monotonic() - t0, 2), node=socket.gethostname())
    if spec.get("pack") and result.get("run_dir"):
        run_dir = Path(result["run_dir"])
        result["archive"] = pack_run(run_dir, spec.get("keep_checkpoints", False))
        if result["status"] != "cancelled":
            shutil.rmtree(job_root, ignore_errors=True)  # it has been sent back
    return result


def _run_locked(job_id, prompt, spec, report, job_root: Path, lock) -> dict:
    previous = _previous_run(job_root)
    if previous is not None and (glb := _finished(previous)) is not None:
        report("task_started", dict(job=job_id, pid=os.getpid(), engine_pid=None, resumed=True))
        return dict(status="done", exit_code=0, run_dir=str(previous), glb=str(glb), resumed_from="finished")
    device = [f"--device={spec['device']}"] if spec.get("device") else []
    quiet = ["--json-events", "--no-progress"]
    if previous is not None and (previous / runfolder.CHECKPOINT).is_file():
        argv = ["generate", f"--resume={previous}", *device, *quiet]
    else:
        # the prompt after "--": text that starts with "-" is still the prompt, never an option
        argv = ["generate", f"--out={job_root}", *spec["engine_args"], *device, *quiet, "--", prompt]
    env = dict(os.environ, DREAMFUSION_BATCH_PARENT=str(os.getpid()))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ENGINE_ROOT, env.get("PYTHONPATH")) if p)
    if spec.get("threads"):
        env["OMP_NUM_THREADS"] = str(spec["threads"])
    with open(job_root / "engine-stderr.log", "ab") as err:
        proc = subprocess.Popen([sys.executable, "-m", "engine.batch.child", *argv], stdout=subprocess.PIPE,
                                stderr=err, stdin=subprocess.DEVNULL, env=env, pass_fds=(lock.fileno(),))
        report("task_started", dict(job=job_id, pid=os.getpid(), engine_pid=proc.pid, resumed=previous is not None))
        try:
            last = _follow(proc, job_id, report)
        except BaseException:  # cancelled (Ray's KeyboardInterrupt) or the worker is going down
            proc.terminate()  # SIGTERM: the engine saves a checkpoint and exits 130
            proc.wait()
            raise
        rc = proc.wait()
    run_dir = (last["start"] or {}).get("run_dir") or (last["error"] or {}).get("run_dir")
    resumed_from = (last["start"] or {}).get("resumed_from")
    if rc == 0 and last["done"]:
        return dict(status="done", exit_code=0, run_dir=last["done"]["run_dir"], glb=last["done"]["asset"].get("glb"),
                    resumed_from=resumed_from)
    if rc < 0:  # killed by a signal: the OOM killer, a crash, a lost GPU; another attempt may well work
        raise EngineCrashed(f"the engine for {prompt!r} was killed (signal {-rc}); last output:\n{_stderr_tail(job_root)}")
    if rc == EXIT_CANCELLED:
        return dict(status="cancelled", exit_code=rc, kind="cancelled", run_dir=run_dir, resumed_from=resumed_from,
                    message="cancelled; the last checkpoint is kept and a re-run of the batch resumes it")
    error = last["error"] or {}  # none: e.g. a usage error, or an engine that could not even import
    return dict(status="failed", exit_code=rc, kind=error.get("kind", "error"), run_dir=run_dir, resumed_from=resumed_from,
                message=error.get("message") or f"the engine exited with code {rc}: {_stderr_tail(job_root)}")


def _stderr_tail(job_root: Path, n: int = 1500) -> str:
    try:
        return (job_root / "engine-stderr.log").read_text(encoding="utf-8", errors="replace")[-n:].strip()
    except OSError:
        return ""


def _follow(proc, job_id: str, report) -> dict:
    """Read the engine's JSON events; keep the last start/done/error, forward progress (throttled)."""
    last = {"start": None, "done": None, "error": None}
    sent = 0.0
    for line in proc.stdout:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        kind = event.get("event")
        if kind in last:
            last[kind] = event
        if kind == "start":
            report("task_run", dict(job=job_id, run_dir=event.get("run_dir"), resumed_from=event.get("resumed_from")))
        elif kind == "progress" and time.monotonic() - sent >= PROGRESS_EVERY_S:
            sent = time.monotonic()
            report("task_progress", dict(job=job_id, stage=event.get("stage"), step=event.get("step"),
                                         total=event.get("total"), eta_s=event.get("eta_s")))
    return last
