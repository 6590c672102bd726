"""Export a run's trained field (from its checkpoint) to a textured mesh with engine.mesh."""

from __future__ import annotations

import datetime as _dt
import shutil
from pathlib import Path

import torch

from . import runfolder, schedule
from .config import JobConfig
from .protocol import EventStream
from .train import build_field


def load_field(run_dir: Path, cfg: JobConfig, device: torch.device, state: dict | None = None):
    field, _ = build_field(cfg)
    state = state if state is not None else runfolder.load_checkpoint(run_dir)
    field.load_state_dict(state["field"])
    # The hash levels live at the checkpoint's last step: later levels never trained (progressive grid).
    field.set_level_fraction(schedule.value_at(cfg.hash_level_fraction, max(int(state["step"]) - 1, 0), cfg.steps))
    return field.to(device).eval()


def export_run(run_dir: Path, cfg: JobConfig, events: EventStream, device: torch.device, out_dir: Path | None = None,
               field=None, progress: bool = True) -> dict:
    """Write the asset; the final export goes to ``asset/``, re-exports to ``export-<time>/``."""
    from .mesh import STAGE_COST, STAGES, ExportSettings, export_field

    run_dir = Path(run_dir)
    if out_dir is None:
        out_dir = run_dir / "asset"
        if out_dir.exists():  # never overwrite an earlier export
            out_dir = run_dir / f"export-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    if field is None:
        field = load_field(run_dir, cfg, device)
    settings = ExportSettings(
        resolution=cfg.mesh_resolution, iso=cfg.iso, texture_size=cfg.texture_size,
        formats=("glb", "obj") if cfg.export_obj else ("glb",), bound=cfg.bound, device=str(device), progress=progress,
        name="asset",
    )

    # One overall percentage across the exporter's stages, weighted by their usual share of the time,
    # so a progress bar never jumps back to 0 or shows 100% before the asset exists.
    done_before = {}
    acc = 0.0
    for stage in STAGES:
        done_before[stage] = acc
        acc += STAGE_COST[stage]
    last = {"pct": -100}

    def on_progress(stage: str, fraction: float) -> None:
        pct = min(99, int(100 * (done_before.get(stage, 0.0) + fraction * STAGE_COST.get(stage, 0.0)) / acc))
        if pct - last["pct"] >= 2:  # a few dozen events per export, not hundreds
            last["pct"] = pct
            events.emit("progress", stage="export", substage=stage, step=pct, total=100)

    # Write into a side folder and rename at the end: a failed export leaves no half-written asset.
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        with torch.no_grad():
            result = export_field(field.density, field.albedo, partial, settings, progress_callback=on_progress)
        partial.rename(out_dir)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return {k: str(out_dir / Path(v).name) for k, v in result.paths.items()}
