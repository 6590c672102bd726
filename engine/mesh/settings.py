"""Export settings (validated) and the result record of one export."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..config import SILHOUETTE_CARVES
from ..errors import ConfigError

#: The fixed level (NeRF density units, 1/length) that was the default before the automatic choice
#: (engine/mesh/iso.py); stable-dreamfusion's value. Kept for callers that want a fixed level.
DEFAULT_ISO = 10.0
FORMATS = ("glb", "obj")
SAMPLING = ("adaptive", "dense")
ATLAS = ("fast", "xatlas-default")
ALBEDO_SAMPLING = ("grid", "texel")
#: Default polygon budget (decimation target) per grid resolution: what the texture and a field's
#: detail at that resolution can carry (docs/BENCHMARKS-export.md measures Chamfer and colour error
#: against face count); more costs UV-atlas time (xatlas is superlinear in chart size).
DEFAULT_TARGET_FACES = 40_000


@dataclass
class ExportSettings:
    """How to turn a density/albedo field into an asset.

    resolution     grid points per axis over [-bound, bound]^3 (32-1024; 128-512 is typical;
                   memory ~ 4*resolution^3 bytes for the grid, 512 MiB at 512).
    iso            density level of the surface; None = automatic: the level whose silhouette
                   matches the field's rendered opacity (engine/mesh/iso.py), recorded in the result.
    silhouette_carve  with the automatic level: "auto" carves the surface to the rendered silhouettes
                   (their visual hull over the level's views, hull.py) when no single
                   level matches them (best IoU < 0.95) and carving matches better; "on" always,
                   "off" never. Ignored with a given ``iso``.
    texture_size   square albedo texture, pixels per side (64-8192).
    target_faces   decimate to about this many triangles (None = keep every marching-cubes triangle).
                   Default ``DEFAULT_TARGET_FACES``; a 256^3 grid gives ~150-500k faces, and quadric
                   decimation keeps small triangles only where the surface bends (the texture
                   carries the colour detail). The UV atlas's time grows with it.
    sampling       "adaptive": coarse grid, then the fine grid only near the surface (grid.py);
                   "dense": every fine grid point (the slow reference).
    smooth_iterations  Taubin smoothing passes on the marching-cubes mesh (0 = off; smooth.py).
    atlas          "fast": xatlas with charts capped at ~``uv.CHART_FACES`` faces (an order of
                   magnitude faster on 20k+ faces); "xatlas-default": xatlas's own chart options.
    albedo_sampling  "grid": the texture's colours come from ``albedo_fn`` on the corners of the grid
                   cells the surface lies in (trilinear), queried per texel only where a cell's
                   corners differ (colour edges, fine detail; bake.py); "texel": every texel queried
                   (the slow reference; ~0.6M field queries at 1024^2).
    keep_fraction  keep connected components with at least this fraction of the largest
                   component's faces (0 = keep all, 1 = only the largest); drops floaters.
    formats        subset of ("glb", "obj"); the texture PNG is always written too.
    bound          radius of the bounding sphere (the scene convention is 1); density outside is 0.
    device         torch device the field's callables expect their input on.
    progress       show tqdm bars on stderr.
    name           file stem: <name>.glb, <name>.png, <name>.obj/.mtl.
    chunk_size     points per density_fn / albedo_fn call (bounds peak memory on the device).
    texture_padding  pixels between UV charts in the atlas (seams are also dilated after baking).
    roughness, metallic  PBR factors of the material (albedo-only NeRF: a matte, dielectric look).
    """

    resolution: int = 256
    iso: float | None = None
    silhouette_carve: str = "auto"
    texture_size: int = 1024
    target_faces: int | None = DEFAULT_TARGET_FACES
    keep_fraction: float = 0.1
    formats: tuple[str, ...] = ("glb",)
    bound: float = 1.0
    device: str = "cpu"
    progress: bool = True
    name: str = "asset"
    chunk_size: int = 1 << 18
    texture_padding: int = 4
    roughness: float = 0.85
    metallic: float = 0.0
    sampling: str = "adaptive"
    smooth_iterations: int = 3
    atlas: str = "fast"
    albedo_sampling: str = "grid"

    def __post_init__(self) -> None:
        self.formats = tuple(self.formats) if not isinstance(self.formats, str) else (self.formats,)
        self.validate()


    def validate(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(msg)

        def is_int(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        need(is_int(self.resolution) and 32 <= self.resolution <= 1024,
             f"mesh resolution must be an integer between 32 and 1024 (128-512 is typical), got {self.resolution!r}")
        need(self.iso is None or (isinstance(self.iso, (int, float)) and math.isfinite(self.iso) and self.iso > 0),
             f"iso must be a positive density (e.g. 10) or None for the default, got {self.iso!r}")
        need(self.silhouette_carve in SILHOUETTE_CARVES,
             f"silhouette_carve must be one of {', '.join(SILHOUETTE_CARVES)}, got {self.silhouette_carve!r}")
        need(is_int(self.texture_size) and 64 <= self.texture_size <= 8192,
             f"texture size must be an integer between 64 and 8192 pixels, got {self.texture_size!r}")
        need(self.target_faces is None or (is_int(self.target_faces) and self.target_faces >= 100),
             f"target_faces must be None (no decimation) or an integer >= 100, got {self.target_faces!r}")
        need(isinstance(self.keep_fraction, (int, float)) and 0.0 <= self.keep_fraction <= 1.0,
             f"keep_fraction must be between 0 (keep every component) and 1 (largest only), got {self.keep_fraction!r}")
        need(len(self.formats) > 0 and all(f in FORMATS for f in self.formats),
             f"formats must be a non-empty subset of {FORMATS}, got {self.formats!r}")
        need(isinstance(self.bound, (int, float)) and math.isfinite(self.bound) and self.bound > 0,
             f"bound must be a positive radius, got {self.bound!r}")
        try:
            import torch
            torch.device(self.device)
        except (RuntimeError, TypeError, ValueError):
            need(False, f"device must be a torch device such as 'cpu', 'cuda' or 'cuda:0', got {self.device!r}")
        need(isinstance(self.name, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", self.name) is not None,
             f"name must be a plain file stem (letters, digits, '.', '_', '-'), got {self.name!r}")
        need(is_int(self.chunk_size) and self.chunk_size >= 1024,
             f"chunk_size must be an integer >= 1024, got {self.chunk_size!r}")
        need(is_int(self.texture_padding) and 0 <= self.texture_padding <= 64,
             f"texture_padding must be an integer between 0 and 64 pixels, got {self.texture_padding!r}")
        need(isinstance(self.roughness, (int, float)) and 0.0 <= self.roughness <= 1.0,
             f"roughness must be in [0, 1], got {self.roughness!r}")
        need(isinstance(self.metallic, (int, float)) and 0.0 <= self.metallic <= 1.0,
             f"metallic must be in [0, 1], got {self.metallic!r}")
        need(self.sampling in SAMPLING, f"sampling must be one of {SAMPLING}, got {self.sampling!r}")
        need(is_int(self.smooth_iterations) and 0 <= self.smooth_iterations <= 100,
             f"smooth_iterations must be an integer between 0 (off) and 100, got {self.smooth_iterations!r}")
        need(self.atlas in ATLAS, f"atlas must be one of {ATLAS}, got {self.atlas!r}")
        need(self.albedo_sampling in ALBEDO_SAMPLING,
             f"albedo_sampling must be one of {ALBEDO_SAMPLING}, got {self.albedo_sampling!r}")


@dataclass
class ExportResult:
    """What ``export_field`` wrote. ``watertight`` is about the cleaned surface before UV seams split
    vertices (the written files duplicate seam vertices, as every UV-mapped mesh must)."""

    paths: dict[str, Path]
    n_vertices: int
    n_faces: int
    iso: float
    watertight: bool
    timings: dict[str, float] = field(default_factory=dict)
    n_faces_extracted: int = 0  # marching-cubes faces, before the component filter and decimation
    n_components: int = 0
    n_components_kept: int = 0
    texture_coverage: float = 0.0  # fraction of texels inside a chart before dilation
    iso_method: str = "given"  # "auto" (chosen from the rendered opacity, iso.py) or "given"
    iso_silhouette_iou: float | None = None  # auto: IoU of the level set's and the opacity's silhouettes
    carved: bool = False  # the surface was carved to the rendered silhouettes (hull.py)
    iso_grid_resolution: int = 0  # points per axis of the grid the level was chosen on (coarse, or the dense grid)
    iso_uncarved_iou: float | None = None  # carved: the silhouette IoU of the best level without carving
    points_queried: int = 0  # density_fn evaluations (coarse + fine)
    albedo_queried: int = 0  # albedo_fn evaluations (texture bake)
    volume_change: float = 0.0  # relative volume change by smoothing
    cpu_timings: dict[str, float] = field(default_factory=dict)  # CPU seconds per stage (this process)

    def metadata(self) -> dict:
        """What the asset records about how it was made (asset.json next to the .glb)."""
        return {"iso": round(self.iso, 6), "iso_method": self.iso_method,
                "iso_silhouette_iou": None if self.iso_silhouette_iou is None else round(self.iso_silhouette_iou, 4),
                "silhouette_carved": self.carved,
                "iso_grid_resolution": self.iso_grid_resolution,
                "iso_uncarved_iou": None if self.iso_uncarved_iou is None else round(self.iso_uncarved_iou, 4),
                "n_faces": self.n_faces, "n_vertices": self.n_vertices, "n_faces_extracted": self.n_faces_extracted,
                "watertight": self.watertight, "points_queried": self.points_queried,
                "albedo_queried": self.albedo_queried,
                "volume_change": round(self.volume_change, 6),
                "timings": {k: round(v, 3) for k, v in self.timings.items()},
                "cpu_timings": {k: round(v, 3) for k, v in self.cpu_timings.items()}}
