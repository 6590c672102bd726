"""Silhouette hull: carve a soft field's level set to the NeRF's rendered silhouettes.

A trained NeRF is often soft at its edges: a thin rim that is 50 % opaque seen edge-on (a long path
through it) is faint seen face-on. Then no single density level has the silhouette the renders show
from every side (the yellow cone of the builtin prior: the best level matches the silhouettes of 16
views with IoU 0.88). The visual hull of those silhouettes, the points that project inside
{opacity > 0.5} in every view, contains everything the renders show as solid, so the surface

    {density > iso} ∩ {hull opacity > HULL_OPACITY},  hull opacity(x) = min over views of the opacity at x's pixel

can take a lower level (the side rim appears) while the hull trims what the other views show as
faint. It is the level set, at ``iso``, of ``min(density, iso * hull opacity / HULL_OPACITY)`` (the
hull's threshold is a little below 0.5, below), so every later
stage (coarse-to-fine sampling, marching cubes) stays a level set of one function. Only what the
views see is trimmed: a concavity no silhouette shows is left to the density.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .grid import _check_density, grid_axis

#: A point is inside the hull when its hull opacity is above this: a little below the silhouettes'
#: 0.5, because the hull comes from 64^2 renders of the coarse grid, and at 0.5 it trimmed parts of
#: the true shape that one view renders just under half opaque (the builtin prior's yellow cones:
#: in-place IoU 0.62 / 0.56 -> 0.55 / 0.51). At 0.42 their silhouettes still match 0.91 (from 0.88)
#: with the in-place IoU unchanged (0.615 / 0.570), and so on two cones of other settings
#: (docs/BENCHMARKS-export.md).
HULL_OPACITY = 0.42


@dataclass
class SilhouetteHull:
    cameras: object  # engine.cameras.CameraBatch of the views the opacity was rendered from
    opacity: torch.Tensor  # (views, res, res) rendered opacity, row 0 at the top (camera_rays' order)
    chunk: int = 1 << 16

    @torch.no_grad()
    def opacity_at(self, points: torch.Tensor) -> torch.Tensor:
        """(N,) the smallest rendered opacity over the views at each point's projection (bilinear).
        A view that does not see a point (outside its frame, or behind it) does not constrain it
        (reads 1). Points are world coordinates on any device; the result is on theirs."""
        out = torch.empty(len(points), dtype=torch.float32)
        rot = self.cameras.c2w[:, :3, :3].float().cpu()
        origins = self.cameras.origins.float().cpu()
        res = self.opacity.shape[-1]
        focal_px = self.cameras.focal.float().cpu()[:, None] * res
        images = self.opacity[:, None].float().cpu()
        pts_all = points.detach().float().cpu()
        for a in range(0, len(pts_all), self.chunk):
            pts = pts_all[a:a + self.chunk]
            cam = torch.einsum("vji,vnj->vni", rot, pts[None] - origins[:, None])  # world -> camera: R^T (x - o)
            depth = -cam[..., 2]  # cameras look down -z (engine.render.rays)
            safe = depth.clamp_min(1e-6)
            u = cam[..., 0] / safe * focal_px / (res / 2)  # pixel x relative to the centre, in [-1, 1]
            v = -cam[..., 1] / safe * focal_px / (res / 2)
            coords = torch.stack([u, v], -1)[:, :, None, :]
            sampled = F.grid_sample(images, coords, mode="bilinear", padding_mode="border", align_corners=False)[:, 0, :, 0]
            seen = (depth > 0) & (u.abs() <= 1) & (v.abs() <= 1)
            out[a:a + len(pts)] = torch.where(seen, sampled, torch.ones_like(sampled)).min(0).values
        return out.to(points.device)

    def on_grid(self, resolution: int, bound: float, where: np.ndarray | None = None) -> np.ndarray:
        """``opacity_at`` on the (resolution,)^3 grid of engine/mesh/grid.py, index [i, j, k] = (x_i, y_j, z_k);
        only at the points ``where`` is true if given, 1 (unconstrained) elsewhere: the caller's
        level cannot reach those points, so the carve must leave them as they are."""
        axis = grid_axis(resolution, bound)
        idx = np.flatnonzero(where) if where is not None else np.arange(resolution**3)
        ijk = np.stack(np.unravel_index(idx, (resolution,) * 3), -1)
        out = np.ones(resolution**3, dtype=np.float32)
        out[idx] = self.opacity_at(torch.as_tensor(axis[ijk], dtype=torch.float32)).numpy()
        return out.reshape((resolution,) * 3)

    @staticmethod
    def carve_grid(grid: np.ndarray, iso: float, hull_grid: np.ndarray) -> np.ndarray:
        """The carved density (module docstring) on a sampled grid, given the hull opacity on it (``on_grid``)."""
        return np.minimum(grid, _hull_cap(iso, hull_grid)).astype(np.float32)

    def carve(self, density_fn, iso: float):
        """A density function whose level set at ``iso`` is the carved surface."""
        def carved(x: torch.Tensor) -> torch.Tensor:
            # The exporter accepts (N,) or (N, 1) densities (grid._check_density): normalise before the min.
            return torch.minimum(_check_density(density_fn(x), len(x)), _hull_cap(iso, self.opacity_at(x)))
        return carved


def _hull_cap(iso: float, hull_opacity):
    """The carve's cap on the density: ``iso`` exactly where the hull opacity is HULL_OPACITY, so
    the level set at ``iso`` of min(density, cap) is {density > iso} ∩ {hull opacity > HULL_OPACITY}
    (numpy arrays or tensors)."""
    return (iso / HULL_OPACITY) * hull_opacity
