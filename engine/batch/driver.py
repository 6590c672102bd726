"""A batch from start to end: check everything, skip what the manifest says is done, run the rest on
this machine or a Ray cluster, bring results home, and report."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..protocol import EventStream
from .collect import collect
from .manifest import FAILED, PENDING, Manifest
from .progress import BatchProgress
from .prompts import read_jobs

EVENTS_FILE = "batch-events.jsonl"
EXIT_SOME_FAILED = 8  # the batch ran; at least one prompt failed (see the manifest). Not 7: the engine's "diverged"
EXIT_CANCELLED = 130


@dataclass
class BatchOptions:
    prompts_file: str
    out: str
    engine_args: list  # generate options passed to every prompt's engine
    settings: dict  # the same, as the manifest remembers them
    model: str | None = None
    device: str | None = None
    workers: int | None = None
    ray: str | None = None
    shared_out: bool = False
    gpus_per_task: float | None = None
    cpus_per_task: float = 1.0
    max_retries: int = 3
    keep_checkpoints: bool = False
    ship_engine: bool = True
    progress_bar: bool = True


def check_options(opts: BatchOptions) -> None:
    if opts.workers is not None and opts.workers < 1:
        raise ConfigError(f"--workers must be at least 1 (got {opts.workers})")
    if opts.max_retries < 0:
        raise ConfigError(f"--max-retries must be 0 or more (got {opts.max_retries})")
    if opts.cpus_per_task <= 0:
        raise ConfigError(f"--cpus-per-task must be positive (got {opts.cpus_per_task:g})")
    if opts.gpus_per_task is not None and opts.gpus_per_task < 0:
        raise ConfigError(f"--gpus-per-task must be 0 or more (got {opts.gpus_per_task:g})")
    if opts.ray is not None and opts.device not in (None, "auto", "cpu", "cuda"):
        raise ConfigError(f"--device {opts.device} with --ray: give auto, cpu or cuda (Ray picks each task's GPU)")
    if opts.ray is None:
        for flag, given in (("--shared-out", opts.shared_out), ("--gpus-per-task", opts.gpus_per_task is not None),
                            ("--keep-checkpoints", opts.keep_checkpoints)):
            if given:
                raise ConfigError(f"{flag} applies to --ray batches only; on this machine run folders stay in --out")


def prepare_out(out: str) -> Path:
    """Create --out (or check it) and prove it is writable, before anything runs."""
    path = Path(out).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {path} is a file; give a folder (it is created if needed)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise ConfigError(f"--out {path} is not a writable folder ({exc.strerror or exc}); choose another --out") from None
    return path


def run_batch(opts: BatchOptions, events: EventStream) -> int:
    check_options(opts)
    jobs, warnings = read_jobs(opts.prompts_file)
    if opts.ray is None:
        from .local import plan_devices

        devices = plan_devices(opts.device, opts.workers)  # DeviceError for cuda without a GPU
        _check_model(opts.model)
    else:
        from .ray_backend import check_address, connect, import_ray

        ray, devices = import_ray(), None
        check_address(opts.ray)
        if opts.model and opts.model.startswith("builtin:"):
            _check_model(opts.model)  # other models are looked for on the workers
        connect(ray, opts.ray, opts.ship_engine)  # before --out exists: no cluster, nothing written
    try:
        return _run(opts, events, jobs, warnings, devices)
    finally:
        if opts.ray is not None:
            ray.shutdown()


def _run(opts: BatchOptions, events: EventStream, jobs, warnings, devices) -> int:
    out = prepare_out(opts.out)
    manifest = Manifest.open(out, opts.settings)
    todo = [j for j in jobs if not manifest.is_done(j.id)]
    for job in todo:  # the manifest lists the whole batch from the start
        if not manifest.get(job.id):
            manifest.data["jobs"][job.id] = dict(prompt=job.prompt, status=PENDING, attempts=0)
    manifest.save()
    events.attach(out / EVENTS_FILE)
    for w in warnings:
        events.emit("warning", message=w)
    progress = BatchProgress(jobs, skipped=len(jobs) - len(todo), events=events, manifest=manifest, bar=opts.progress_bar)
    events.emit("batch_start", out=out, manifest=manifest.path, total=len(jobs), skipped=len(jobs) - len(todo),
                mode="ray" if opts.ray else "local", address=opts.ray, shared_out=opts.shared_out or opts.ray is None)

    def finish(job, result: dict) -> None:
        try:
            status, fields = collect(out, job.id, result)
        except Exception as exc:  # a broken archive or a full disk: this prompt fails, the batch goes on
            status, fields = FAILED, dict(kind="transfer", message=f"could not store the result: {type(exc).__name__}: {exc}")
        progress.finished(job.id, status, **fields)

    spec = dict(engine_args=list(opts.engine_args), batch_id=manifest.batch_id,
                root=str(out / "runs") if (opts.ray is None or opts.shared_out) else None,
                pack=opts.ray is not None and not opts.shared_out, keep_checkpoints=opts.keep_checkpoints)
    completed = True
    try:
        if todo and opts.ray is None:
            from .local import run_local

            completed = run_local(todo, spec, progress, finish, devices, opts.max_retries)
        elif todo:
            from .ray_backend import run_ray

            device = opts.device if opts.device not in (None, "auto") else None  # else Ray's GPU, or the CPU
            completed = run_ray(todo, dict(spec, device=device), progress, finish, workers=opts.workers,
                                gpus_per_task=opts.gpus_per_task, cpus_per_task=opts.cpus_per_task,
                                max_retries=opts.max_retries)
    finally:
        summary = progress.close()
    if not completed:
        return EXIT_CANCELLED
    return 0 if summary["failed"] == 0 and summary["cancelled"] == 0 else EXIT_SOME_FAILED


def _check_model(model: str | None) -> None:
    if model:
        from ..guidance import resolve_model

        resolve_model(model)  # ModelError (exit 3) for a missing folder, before any work
