"""Automatic surface level: the iso value whose level set has the silhouette the NeRF renders.

A NeRF's density scale depends on the model, the prompt and the training length (the builtin prior's
short runs peak at 10-17; Stable Diffusion runs reach hundreds), so no constant iso fits every run:
too high gives an empty or shrunken mesh, too low a bloated one. The rendered opacity, though, is
what the user saw in the previews. So the exporter renders the sampled density grid from a ring of
views (volume rendering, as the NeRF's renderer does, on the grid with trilinear interpolation, so
no extra field queries) and records for every ray

* its opacity o = 1 - exp(-integral of density), and
* the largest density m along it: the ray sees the level set {density = t} exactly when m > t.

The mesh's silhouette for level t is then {rays with m > t}; we pick the t whose silhouette has the
best IoU with the NeRF's {o > 0.5} (among near-ties, the one whose area matches: sub-pixel
accurate, because the boundary rays sample the edge at every offset), and report that IoU. A field
too faint to be 50 % opaque anywhere is matched to {o > half its largest opacity} instead, and the
level is always below the grid's maximum, so a non-empty field never gives an empty mesh.

A soft field can have no single level whose silhouette matches every view (hull.py). When the best
level's IoU stays below ``CARVE_BELOW``, the level is chosen again for the surface carved to the
views' silhouettes, and the carved surface is kept when it matches better (``carve="auto"``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import binary_dilation

from ..cameras import make_cameras
from ..render import camera_rays, sphere_near_far
from ..config import SILHOUETTE_CARVES
from .hull import HULL_OPACITY, SilhouetteHull

# A ring at the preview elevation, one higher up and one from nearly overhead (and below), so tops
# and bottoms count too. Distance and focal as the previews (cameras.orbit_cameras).
VIEW_ELEVATIONS = ((15.0, 8), (50.0, 4), (-40.0, 3), (85.0, 1))
VIEW_RESOLUTION = 64
#: carve="auto" tries the silhouette hull when the best single level matches the views worse than this,
CARVE_BELOW = 0.95
#: and keeps it when it matches them better by at least this much.
CARVE_GAIN = 0.005
#: The carved surface's level stays at or above this share of the uncarved one: the hull trims a
#: fringe, the density keeps the shape. (Near 0 the level set would be the bare visual hull of the
#: 16 views, which fills every concavity no silhouette shows, e.g. the inside of a bowl.)
CARVE_LEVEL_FLOOR = 0.5


@dataclass
class IsoChoice:
    iso: float
    method: str  # "auto" (silhouette area) or "given"
    silhouette_iou: float | None = None  # IoU of {m > iso} and {o > 0.5} on the grid's renders
    nerf_area: float | None = None  # rays in the NeRF's silhouette (or its soft area), all views
    best_iou: float | None = None  # the best IoU any level reaches on these renders (soft fields: < 1)
    hull: SilhouetteHull | None = None  # set when the surface is carved to the silhouettes (hull.py)
    uncarved_iou: float | None = None  # carved: the IoU the best uncarved level had
    hull_grid: np.ndarray | None = None  # carved: the hull opacity on the grid the level was chosen on

    @property
    def carved(self) -> bool:
        return self.hull is not None

    def to_json(self) -> dict:
        skip = ("hull", "hull_grid")
        out = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in self.__dict__.items() if k not in skip}
        return {**out, "carved": self.carved}


def iso_cameras(bound: float = 1.0):
    """The level's views: the previews' framing (distance 2.5, focal 1) scaled to the bounding
    sphere, so the whole sphere is in every frame whatever its radius."""
    az = [a for elev, n in VIEW_ELEVATIONS for a in np.arange(n) * (360.0 / n) + (22.5 if elev < 0 else 0.0)]
    el = [elev for elev, n in VIEW_ELEVATIONS for _ in range(n)]
    return make_cameras(az, el, 2.5 * bound, 1.0)


@torch.no_grad()
def render_grid(grid: np.ndarray, bound: float, cameras, resolution: int = VIEW_RESOLUTION,
                step_voxels: float = 0.5, chunk_rays: int = 8192, hull_grid: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Opacity and maximum density along each ray, (B*res*res,) each, of the grid's trilinear field.
    With ``hull_grid`` (hull opacity on the same grid), the maximum counts only samples inside the
    hull (hull opacity > HULL_OPACITY): the carved surface's silhouette test."""
    n = grid.shape[0]
    channels = [grid] if hull_grid is None else [grid, hull_grid]
    vol = torch.from_numpy(np.ascontiguousarray(np.stack(channels), dtype=np.float32))[None]
    h = 2.0 * bound / (n - 1)
    origins, dirs = camera_rays(cameras, resolution, resolution)
    origins, dirs = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    near, far, hit = sphere_near_far(origins, dirs, bound)
    n_samples = max(int(math.ceil(2.0 * bound / (step_voxels * h))), 8)
    opacity = torch.zeros(len(origins))
    peak = torch.zeros(len(origins))
    rays = torch.nonzero(hit).squeeze(-1)
    s = (torch.arange(n_samples, dtype=torch.float32) + 0.5) / n_samples
    for a in range(0, len(rays), chunk_rays):
        r = rays[a:a + chunk_rays]
        t = near[r, None] + (far - near)[r, None] * s  # (R, S)
        pts = origins[r, None, :] + dirs[r, None, :] * t[..., None]
        # grid[i, j, k] is (x_i, y_j, z_k): depth <- x, height <- y, width <- z; grid_sample wants (w, h, d).
        coords = (pts[..., [2, 1, 0]] / bound).reshape(1, 1, 1, -1, 3)
        sampled = F.grid_sample(vol, coords, mode="bilinear", padding_mode="zeros", align_corners=True)
        sigma = sampled[0, 0].reshape(len(r), n_samples).clamp_min(0)
        delta = (far - near)[r] / n_samples
        opacity[r] = 1.0 - torch.exp(-sigma.sum(-1) * delta)
        if hull_grid is not None:
            inside = sampled[0, 1].reshape(len(r), n_samples) > HULL_OPACITY
            sigma = torch.where(inside, sigma, torch.zeros_like(sigma))
        peak[r] = sigma.max(-1).values
    return opacity.numpy(), peak.numpy()


def choose_iso(grid: np.ndarray, bound: float, carve: str = "auto") -> IsoChoice:
    """The level whose silhouette area matches the rendered opacity's (module docstring); with
    ``carve`` "on" the surface is carved to the views' silhouettes (hull.py), with "auto" when no
    single level matches them well and the carved surface matches better, with "off" never."""
    if carve not in SILHOUETTE_CARVES:
        raise ValueError(f"carve must be one of {SILHOUETTE_CARVES}, got {carve!r}")
    cameras = iso_cameras(bound)
    opacity, peak = render_grid(grid, bound, cameras)
    vmax = float(grid.max())
    if vmax <= 0:
        return IsoChoice(iso=1.0, method="auto", silhouette_iou=0.0, nerf_area=0.0)  # empty: the check reports it
    choice = _level_from_peaks(peak, opacity, vmax)
    nerf = opacity > 0.5
    if carve == "off" or not nerf.any() or (carve == "auto" and (choice.best_iou or 0.0) >= CARVE_BELOW):
        return choice
    hull = SilhouetteHull(cameras, torch.from_numpy(opacity).reshape(len(cameras), VIEW_RESOLUTION, VIEW_RESOLUTION))
    floor = CARVE_LEVEL_FLOOR * choice.iso
    # The hull only matters where the density can reach the carved level (a dilation for trilinear
    # sampling between grid points).
    hull_grid = hull.on_grid(grid.shape[0], bound, binary_dilation(grid > floor, np.ones((3, 3, 3), dtype=bool)))
    _, peak_inside = render_grid(grid, bound, cameras, hull_grid=hull_grid)
    inside_max = float(np.max(np.where(hull_grid > HULL_OPACITY, grid, 0.0)))
    if inside_max <= floor or peak_inside.max() <= floor:
        return choice  # nothing inside the hull reaches the floor: carving would leave little or no surface
    carved = _level_from_peaks(peak_inside, opacity, inside_max, floor=floor)
    if carve == "auto" and carved.silhouette_iou < choice.silhouette_iou + CARVE_GAIN:
        return choice
    carved.hull, carved.hull_grid, carved.uncarved_iou = hull, hull_grid, choice.silhouette_iou
    return carved


def _level_from_peaks(peak: np.ndarray, opacity: np.ndarray, vmax: float, floor: float = 0.0) -> IsoChoice:
    """The level (below ``vmax``, at or above ``floor``) whose silhouette {peak > level} best matches
    {opacity > 0.5}."""
    nerf = opacity > 0.5
    area = float(nerf.sum()) if nerf.any() else float(opacity.sum())
    order = np.argsort(-peak, kind="stable")
    sorted_peak = peak[order]
    best = None
    if area < 1 or sorted_peak[0] <= 0:
        iso = 0.5 * vmax
    else:
        # The level just below the k-th largest ray maximum shows exactly the top-k rays. Score every
        # k by the IoU of those rays with the NeRF's silhouette (a soft silhouette when nothing is 50 %
        # opaque); among the near-best, take the k whose area matches the NeRF's best.
        target = nerf if nerf.any() else opacity > 0.5 * opacity.max()
        inter = np.cumsum(target[order])
        k = np.arange(1, len(order) + 1)
        iou = inter / (k + target.sum() - inter)
        iou[sorted_peak <= floor] = -1.0  # a level at or above the floor cannot show these many rays
        best = float(iou.max())
        near_best = np.nonzero(iou >= iou.max() - 1e-3)[0]
        kk = int(near_best[np.argmin(np.abs(near_best + 1 - area))]) + 1
        kk = min(kk, len(order) - 1)
        hi, lo = float(sorted_peak[kk - 1]), float(sorted_peak[kk])
        # Any level in [lo, hi) gives the same mask; the middle (on a log scale) is the least sensitive.
        iso = math.sqrt(hi * lo) if lo > 0 else 0.5 * hi
    iso = min(max(iso, 1e-6 * vmax, floor), 0.999 * vmax)  # strictly below the maximum: never empty
    mesh_mask = peak > iso
    union = int((mesh_mask | nerf).sum())
    iou = float((mesh_mask & nerf).sum()) / union if union else 0.0
    return IsoChoice(iso=float(iso), method="auto", silhouette_iou=iou, nerf_area=area, best_iou=best)


@torch.no_grad()
def auto_iso(density_fn, bound: float = 1.0, resolution: int = 64, device="cpu", chunk_size: int = 1 << 16,
             carve: str = "auto") -> IsoChoice:
    """The exporter's automatic level for a field, from a grid of ``resolution`` points per axis
    (64 is the coarse grid of a 256^3 export), for callers that score a field at the exporter's
    surface: that surface is {surface_density(density_fn, choice) > choice.iso}."""
    from .grid import sample_density
    from .progress import Reporter

    return choose_iso(sample_density(density_fn, resolution, bound, device, chunk_size, Reporter(False, None)), bound, carve)


def surface_density(density_fn, choice: IsoChoice):
    """The function whose level set at ``choice.iso`` is the exported surface: the density itself,
    or the density carved to the silhouette hull when the choice carved it."""
    return density_fn if choice.hull is None else choice.hull.carve(density_fn, choice.iso)
