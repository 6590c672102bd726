"""Many machines: each prompt is a Ray task asking for one GPU (or CPUs when the cluster has none),
submitted to an existing cluster (``--ray auto`` or ``--ray HOST:PORT``). ray is imported here only.

Faults: a worker that dies (a system failure) is retried by Ray up to --max-retries times, and so is
an engine killed by a signal (EngineCrashed, Ray's retry_exceptions); the retry resumes from the
run's last checkpoint when --shared-out puts run folders where every worker sees them (or on the
same machine's scratch folder otherwise). An engine that reports a failure (bad input, model, ...)
returns a failed result instead of raising, so Ray never retries it.
"""

from __future__ import annotations

import socket
from pathlib import Path

from ..errors import ConfigError
from .task import EngineCrashed, run_job

POLL_S = 0.25


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--ray needs Ray, which is not installed in this Python: "
            "pip install -r requirements-cluster.txt (or leave out --ray to run on this machine alone)"
        ) from None
    return ray


def check_address(address: str) -> None:
    """Fail in seconds, not after Ray's long connection retries, when nothing listens at ADDRESS."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"--ray {address!r}: give auto or the head node's HOST:PORT (e.g. 10.0.0.5:6379), "
                          "as printed by `ray start --head`")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}); start one with "
                          "`ray start --head` on the head node and pass the address it prints") from None


def connect(ray, address: str, ship_engine: bool) -> None:
    runtime_env = None
    if ship_engine:
        import engine

        # Workers need the same Python packages (torch, diffusers, ...), but not our code: send it.
        runtime_env = {"py_modules": [str(Path(engine.__file__).resolve().parent)],
                       "excludes": ["__pycache__", "*.pyc"]}
    try:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False, logging_level="ERROR")
    except ConnectionError as exc:
        raise ConfigError(f"cannot connect to the Ray cluster at {address}: {exc}. Start one with "
                          "`ray start --head` and pass the address it prints") from None


class Inbox:
    """A Ray actor that collects the tasks' progress reports until the driver takes them. Tasks call
    it without waiting for an answer: a task blocked in ray.get would lend its CPU to another task."""

    def __init__(self):
        self.items: list = []

    def put(self, item) -> None:
        self.items.append(item)

    def take(self) -> list:
        items, self.items = self.items, []
        return items


def _ray_task(job_id: str, prompt: str, spec: dict, inbox) -> dict:
    import ray

    last = []

    def report(event: str, info: dict) -> None:
        try:
            last[:] = [inbox.put.remote((event, info))]
        except Exception:
            pass  # progress is best effort; the result still comes back

    try:
        return run_job(job_id, prompt, spec, report)
    finally:
        # The driver reads the inbox when this task's result arrives: let every report land first
        # (one caller's actor calls run in order, so waiting for the last one is enough).
        try:
            ray.get(last, timeout=10)
        except Exception:
            pass


def run_ray(todo, spec: dict, progress, finish, *, workers: int | None, gpus_per_task: float | None,
            cpus_per_task: float, max_retries: int) -> bool:
    ray = import_ray()  # connected by the driver (connect), which also shuts the connection down
    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    wants_gpu = cluster_gpus and spec.get("device") != "cpu"
    gpus = (1 if wants_gpu else 0) if gpus_per_task is None else gpus_per_task
    if gpus > cluster_gpus:
        raise ConfigError(f"--gpus-per-task {gpus:g}, but the cluster has {cluster_gpus:g} GPU(s); "
                          "add GPU nodes or use --gpus-per-task 0")
    inbox = ray.remote(Inbox).options(num_cpus=0).remote()
    task = ray.remote(_ray_task).options(num_gpus=gpus, num_cpus=cpus_per_task, max_retries=max_retries,
                                          retry_exceptions=[EngineCrashed])
    spec = dict(spec, threads=None if gpus else max(1, int(cpus_per_task)))
    pending, inflight = list(todo), {}
    cap = workers or len(todo)

    def drain() -> None:
        for event, info in ray.get(inbox.take.remote()):
            if event == "task_started":
                progress.started(info["job"], info)
            else:
                progress.forward(event, info)

    try:
        while pending or inflight:
            while pending and len(inflight) < cap:
                job = pending.pop(0)
                inflight[task.remote(job.id, job.prompt, spec, inbox)] = job
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=POLL_S)
            drain()
            for ref in ready:
                job = inflight.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as exc:  # retries used up: a crash (or a lost node) for this prompt only
                    result = dict(status="failed", kind="crash", exit_code=None, message=_first_line(exc))
                finish(job, result)
    except KeyboardInterrupt:
        for ref in inflight:
            ray.cancel(ref)  # the task stops its engine, which saves a checkpoint
        for ref, job in inflight.items():
            try:
                result = ray.get(ref, timeout=60)
            except Exception:
                result = dict(status="cancelled", kind="cancelled", exit_code=130,
                              message="cancelled; a re-run of the batch starts it again")
            finish(job, result)
        return False
    drain()
    return True


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    cause = getattr(exc, "cause", None)
    if isinstance(cause, EngineCrashed):
        text = str(cause)
    return f"{type(exc).__name__}: {text[:2000]}"
