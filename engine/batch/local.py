"""This machine alone: one worker per local GPU (or one on the CPU), nothing to install or start.

Each worker is a thread that runs its prompts' engines as child processes on its own device; an
engine killed by a signal is retried up to max_retries times, resuming from its checkpoint (the run
folder is in OUT, so it is always "shared" here).
"""

from __future__ import annotations

import os
import queue
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

from ..errors import ConfigError
from .task import EngineCrashed, run_job


def plan_devices(device: str | None, workers: int | None) -> list[str | None]:
    """One entry per worker: the --device its engines get. GPUs are shared round-robin."""
    from ..guidance import pick_device

    import torch

    requested = device or "auto"
    dev = pick_device(requested)  # a clear DeviceError for cuda without a GPU, before any work
    if dev.type == "cuda" and dev.index is None:
        gpus = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        n = workers or len(gpus)
        return [gpus[i % len(gpus)] for i in range(n)]
    return [str(dev)] * (workers or 1)


def cpu_threads(devices: list[str | None]) -> int | None:
    """CPU workers split the cores between them instead of each taking all of them."""
    cpu_workers = sum(1 for d in devices if d == "cpu")
    if not cpu_workers or os.environ.get("OMP_NUM_THREADS"):
        return None
    return max(1, (os.cpu_count() or 1) // cpu_workers)


def run_local(todo, spec: dict, progress, finish, devices: list[str | None], max_retries: int) -> bool:
    """Run every job; ``finish(job, result)`` is called as each ends. False if cancelled (Ctrl-C)."""
    if not devices:
        raise ConfigError("--workers must be at least 1")
    slots: queue.Queue = queue.Queue()
    for d in devices:
        slots.put(d)
    engines: dict[str, int] = {}  # job id -> engine pid, to stop them on Ctrl-C
    stop = threading.Event()
    threads = cpu_threads(devices)

    def report(event: str, info: dict) -> None:
        if event == "task_started":
            if info.get("engine_pid"):
                engines[info["job"]] = info["engine_pid"]
            progress.started(info["job"], info)
        else:
            progress.forward(event, info)

    def one(job) -> None:
        device = slots.get()
        try:
            for attempt in range(max_retries + 1):
                if stop.is_set():
                    return
                try:
                    result = run_job(job.id, job.prompt, dict(spec, device=device, threads=threads), report)
                    break
                except EngineCrashed as exc:
                    if stop.is_set():  # our own SIGTERM reached the engine before it could handle it
                        result = dict(status="cancelled", kind="cancelled", exit_code=130,
                                      message="cancelled before it started; a re-run of the batch starts it again")
                        break
                    if attempt == max_retries:
                        result = dict(status="failed", kind="crash", exit_code=None, message=str(exc))
                        break
                    progress.retry(job.id, str(exc))
                except Exception as exc:  # e.g. a full disk on this job's folder: this prompt fails, not the batch
                    result = dict(status="failed", kind="error", exit_code=None, message=f"{type(exc).__name__}: {exc}")
                    break
            engines.pop(job.id, None)
            finish(job, result)
        finally:
            slots.put(device)

    pool = ThreadPoolExecutor(max_workers=len(devices), thread_name_prefix="batch-worker")
    futures = [pool.submit(one, job) for job in todo]
    try:
        for f in futures:
            f.result()
    except KeyboardInterrupt:
        stop.set()
        for pid in list(engines.values()):
            try:
                os.kill(pid, signal.SIGTERM)  # the engine saves a checkpoint and exits 130
            except ProcessLookupError:
                pass
        pool.shutdown(wait=True, cancel_futures=True)
        return False
    pool.shutdown(wait=True)
    return True
