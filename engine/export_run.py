"""Export a run's trained field (from its checkpoint) to a textured mesh with engine.mesh.

The export runs in a child process (multiprocessing, spawn) that the engine can stop at any moment:
one exporter stage is a single long library call (xatlas can take a minute) that no Python-level
check can interrupt, and cancel must hold there too. The child writes into a uniquely named temporary
folder next to the destination; the parent renames it into place when the child is done and deletes
only that folder on failure or cancel. Nothing the user made is ever deleted or overwritten.
"""

from __future__ import annotations

import datetime as _dt
import json
import multiprocessing
import os
import shutil
import signal
import tempfile
import traceback
from pathlib import Path

import torch

from . import errors, runfolder
from .cancel import CancelFlag
from .config import JobConfig
from .errors import Cancelled, ConfigError, EngineError, ExportError
from .process import die_with_parent
from .protocol import EventStream
from .train import build_field, set_coarse_to_fine

POLL_S = 0.1  # how often the parent looks at the child's messages and at cancel


def load_field(run_dir: Path, cfg: JobConfig, device: torch.device, state: dict | None = None):
    field, _ = build_field(cfg)
    state = state if state is not None else runfolder.load_checkpoint(run_dir)
    field.load_state_dict(state["field"])
    # The hash levels and bands live at the checkpoint's last step: later ones never trained (coarse to fine).
    set_coarse_to_fine(field, cfg, max(int(state["step"]) - 1, 0))
    return field.to(device).eval()


def check_out_dir(out_dir: Path) -> Path:
    """An explicit ``--out`` must be new or an empty folder, in a place we can write: checked before any work."""
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file; give a new folder for the export")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise ConfigError(f"--out {out_dir} is not empty; give a new or empty folder (the export never overwrites files)")
    runfolder.check_writable_parent(out_dir, "--out")
    return out_dir


def default_out_dir(run_dir: Path) -> Path:
    """``asset/`` for the first export, then ``export-<time>[-n]/``: an earlier export is never touched."""
    out_dir = run_dir / "asset"
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    n = 0
    while out_dir.exists():
        n += 1
        out_dir = run_dir / (f"export-{stamp}" if n == 1 else f"export-{stamp}-{n}")
    return out_dir


def _settings(cfg: JobConfig, device: str, progress: bool):
    from .mesh import ExportSettings

    return ExportSettings(
        resolution=cfg.mesh_resolution, iso=cfg.iso, silhouette_carve=cfg.silhouette_carve, texture_size=cfg.texture_size, target_faces=cfg.target_faces,
        formats=("glb", "obj") if cfg.export_obj else ("glb",), bound=cfg.bound, device=device, progress=progress,
        name="asset",
    )


def _child(conn, run_dir: str, cfg_json: dict, device: str, tmp_dir: str, progress: bool, parent: int) -> None:
    """The export process: load the checkpoint's field, export into ``tmp_dir``, report over ``conn``."""
    # The parent decides about cancel (a terminal's Ctrl-C reaches the whole process group), and an
    # engine killed outright must not leave its export running.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)
    try:
        from .mesh import export_field

        cfg = JobConfig.from_json(cfg_json)
        field = load_field(Path(run_dir), cfg, torch.device(device))
        with torch.no_grad():
            result = export_field(field.density, field.albedo, tmp_dir, _settings(cfg, device, progress),
                                  progress_callback=lambda stage, fraction: conn.send(("progress", stage, fraction)))
        # How the asset was made (surface level and how it was chosen, faces, seconds per stage).
        (Path(tmp_dir) / "asset.json").write_text(json.dumps(result.metadata(), indent=2))
        conn.send(("done", {k: str(v) for k, v in result.paths.items()}, result.metadata()))
    except EngineError as exc:
        conn.send(("engine_error", type(exc).__name__, str(exc)))
    except BaseException as exc:  # noqa: BLE001 - everything must reach the parent as a message
        from .train import OOM_ADVICE, is_oom

        if is_oom(exc):
            conn.send(("engine_error", "OutOfMemory", OOM_ADVICE))
        else:
            conn.send(("crash", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
    finally:
        conn.close()


class _Progress:
    """One overall percentage across the exporter's stages, weighted by their usual share of the time,
    so a progress bar never jumps back to 0 or shows 100% before the asset exists."""

    def __init__(self, events: EventStream):
        from .mesh import STAGE_COST, STAGES

        self.events, self.cost, self.done_before, acc = events, STAGE_COST, {}, 0.0
        for stage in STAGES:
            self.done_before[stage] = acc
            acc += STAGE_COST[stage]
        self.total, self.last = acc, -100

    def __call__(self, stage: str, fraction: float) -> None:
        pct = min(99, int(100 * (self.done_before.get(stage, 0.0) + fraction * self.cost.get(stage, 0.0)) / self.total))
        if pct - self.last >= 2:  # a few dozen events per export, not hundreds
            self.last = pct
            self.events.emit("progress", stage="export", substage=stage, step=pct, total=100)


def _run_child(run_dir: Path, cfg: JobConfig, events: EventStream, device: torch.device, tmp: Path, progress: bool,
               cancel: CancelFlag) -> dict:
    ctx = multiprocessing.get_context("spawn")  # fork is unsafe with threads and CUDA
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, str(run_dir), cfg.to_json(), str(device), str(tmp), progress, os.getpid()),
                       name="dreamfusion-export", daemon=True)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # hand the training's cached GPU memory to the export process
    proc.start()
    send.close()
    on_progress = _Progress(events)
    try:
        while True:
            if cancel.requested(run_dir):
                raise _CancelExport()
            if recv.poll(POLL_S):
                try:
                    msg = recv.recv()
                except EOFError:
                    proc.join(5)
                    msg = ("crash", f"the export process ended without a result (exit code {proc.exitcode})", "")
                if msg[0] == "progress":
                    on_progress(msg[1], msg[2])
                    continue
                if msg[0] == "done":
                    events.emit("export", **msg[2])
                    return msg[1]
                if msg[0] == "engine_error":
                    raise getattr(errors, msg[1], ExportError)(msg[2])
                raise ExportError(f"the export failed unexpectedly ({msg[1]}); the checkpoint is kept, retry with "
                                  f"`python -m engine export {run_dir}`.\n{msg[2]}")
            if not proc.is_alive() and not recv.poll(0):
                raise ExportError(f"the export process died (exit code {proc.exitcode}, e.g. out of memory); the checkpoint "
                                  f"is kept, retry with `python -m engine export {run_dir}` and a lower --mesh-resolution")
    finally:
        if proc.is_alive():
            proc.terminate()
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        proc.join(10)
        recv.close()


class _CancelExport(Exception):
    pass


def export_run(run_dir: Path, cfg: JobConfig, events: EventStream, device: torch.device, out_dir: Path | None = None,
               progress: bool = True, cancel: CancelFlag | None = None) -> dict:
    """Write the asset from the run's checkpoint; the final export goes to ``asset/``, re-exports to
    ``export-<time>/`` unless ``out_dir`` is given (new or empty). On cancel: emits ``cancelled`` and
    raises Cancelled, leaving no partial folder."""
    run_dir = Path(run_dir)
    out_dir = default_out_dir(run_dir) if out_dir is None else check_out_dir(out_dir)
    cancel = cancel or CancelFlag()
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    except OSError as exc:
        raise ConfigError(f"cannot write the export next to {out_dir}: {exc.strerror or exc}; choose a writable --out") from exc
    keep_tmp = False
    try:
        try:
            paths = _run_child(run_dir, cfg, events, device, tmp, progress, cancel)
        except _CancelExport:
            step = runfolder.checkpoint_step(run_dir)
            checkpoint = run_dir / runfolder.CHECKPOINT
            events.emit("cancelled", run_dir=run_dir, step=step, checkpoint=checkpoint if checkpoint.is_file() else None)
            raise Cancelled(f"export cancelled; the checkpoint is kept: export again with `python -m engine export {run_dir}`"
                            ) from None
        if out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()  # an empty --out folder: replaced by the finished export
        try:
            os.rename(tmp, out_dir)
        except OSError as exc:
            keep_tmp = True  # the finished export is the user's: never throw it away
            raise ExportError(f"the export finished but could not be moved to {out_dir} ({exc.strerror or exc}); "
                              f"it is kept in {tmp}") from exc
    finally:
        if not keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)  # only the folder this call created
    return {k: str(out_dir / Path(v).name) for k, v in paths.items()}
