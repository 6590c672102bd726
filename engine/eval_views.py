"""The renders a run is judged on (docs/EVALUATION.md): a fixed ring around the object, white background.

Dream Fields (whose protocol DreamFusion's Table 1 follows) renders its evaluation views at 30°
elevation on a ring, with a white background and no ray jitter, and feeds CLIP 224-pixel images.
We do the same: ``VIEWS`` azimuths at ``ELEVATION``, the run's mean training distance and focal
length, resolution 224. Two modes: ``textured`` (the albedo: Dream Fields' colour renders have no
shading) and ``textureless`` (white albedo, diffuse shading from a light at the camera: geometry alone).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import ConfigError, RunFolderError

MODES = {"textured": "albedo", "textureless": "textureless"}  # mode -> the renderer's shading
VIEWS = 8
ELEVATION = 30.0
RESOLUTION = 224
CHUNK = 2  # views rendered at a time: memory stays near a training step's


def parse_modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ConfigError(f"--modes {text!r}: unknown render mode(s) {', '.join(unknown) or '(none given)'}; "
                          f"choose from {', '.join(MODES)} (comma-separated)")
    return list(dict.fromkeys(modes))


def check_run(run_dir: Path):
    """A run that can be judged: its config and its trained field (the checkpoint). Returns the config."""
    from . import runfolder

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir} is not a folder; give run folders made by `python -m engine generate`")
    cfg = runfolder.load_run_config(run_dir)
    if not (run_dir / runfolder.CHECKPOINT).is_file():
        raise RunFolderError(f"{run_dir} has no trained field to render ({runfolder.CHECKPOINT} is missing): "
                             "finish or resume the run first (a batch without --keep-checkpoints on Ray drops it)")
    return cfg


@torch.no_grad()
def render_views(run_dir: Path, cfg, mode: str, device, views: int = VIEWS, resolution: int = RESOLUTION) -> torch.Tensor:
    """(views, 3, H, W) renders in [0, 1] of the run's checkpoint; reads the run folder, writes nothing."""
    from .export_run import load_field
    from .render import render

    field = load_field(Path(run_dir), cfg, device)
    white = lambda d: torch.ones_like(d)  # noqa: E731 - Dream Fields' evaluation background
    cams = ring_cameras(cfg, views, device)
    out = []
    for i in range(0, views, CHUNK):
        c = cams[i:i + CHUNK]
        img = render(field, white, c, resolution, cfg.samples_per_ray, shading=MODES[mode], light_positions=c.origins,
                     ambient=cfg.ambient, perturb=False, normals=cfg.normals).image
        out.append(img.clamp(0, 1).cpu())
    return torch.cat(out)


def ring_cameras(cfg, views: int = VIEWS, device=None):
    """``views`` azimuths from the front, at ELEVATION, the run's mean training distance and focal length."""
    from .cameras import make_cameras

    az = torch.arange(views, dtype=torch.float32) * (360.0 / views)
    return make_cameras(az, ELEVATION, 0.5 * (cfg.distance_min + cfg.distance_max), 0.5 * (cfg.focal_min + cfg.focal_max),
                        device=device)
