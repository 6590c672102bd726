"""Sample the density field on a regular grid over [-bound, bound]^3, densely or coarse to fine.

Only points strictly inside the bounding sphere are sent to ``density_fn``; everything else is 0
(empty). That halves the work (the sphere is 52% of the cube) and guarantees the zero border that
makes marching cubes return closed surfaces. The grid is filled slab by slab along x, and each
call to ``density_fn`` gets at most ``chunk_size`` points, so device memory stays bounded and the
only large array is the float32 grid itself (4*N^3 bytes: 64 MiB at 256, 512 MiB at 512).

Coarse to fine (``sample_near_surface``): querying every point of a 256^3 grid costs tens of seconds
for a trained hash-grid field on a CPU, but marching cubes only needs exact values in the cells the
surface crosses. So a coarse grid (about N/4 per axis) is sampled first, the level is chosen on it,
and each finer level (``refinement_levels``: sizes doubling up to N) queries only its points inside
the previous level's cells that straddle the level or hold a density above iso / ``TAIL`` (a thin
feature's tail), grown by one cell (iso / ``TAIL_FINE`` after the coarsest grid, where thin features are partly
resolved: on a soft trained field the wide tail rule would triple the finest level's queries);
every other point takes the previous level's trilinear interpolation, which is on the same side of the level as the cell's corners, so
marching cubes finds no surface there (and the grid still has no open border, so the mesh stays
closed). A feature thinner than a coarse cell that no coarse point sees is missed; the coarse
spacing (2/63 of the bound at 256^3) is the limit."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import binary_dilation

from ..errors import ExportError
from .progress import Reporter

DensityFn = Callable[[torch.Tensor], torch.Tensor]


def grid_axis(resolution: int, bound: float) -> np.ndarray:
    """Coordinates of the grid points along one axis (both ends included)."""
    return np.linspace(-bound, bound, resolution, dtype=np.float64)


@torch.no_grad()
def sample_density(density_fn: DensityFn, resolution: int, bound: float, device, chunk_size: int,
                   reporter: Reporter) -> np.ndarray:
    """(N, N, N) float32 array, index [i, j, k] = density at (x_i, y_j, z_k)."""
    n = resolution
    axis = grid_axis(n, bound)
    grid = np.zeros((n, n, n), dtype=np.float32)
    device = torch.device(device)
    ax = torch.as_tensor(axis, dtype=torch.float32, device=device)
    yy, zz = torch.meshgrid(ax, ax, indexing="ij")
    yz = torch.stack([yy.reshape(-1), zz.reshape(-1)], dim=-1)        # (N*N, 2)
    r2_yz = (yz.double() ** 2).sum(-1)
    # Strictly inside, with a hair of margin so points on the sphere itself stay empty.
    r2_max = (bound * (1.0 - 1e-6)) ** 2
    with reporter.stage("density", n) as st:
        for i in range(n):
            inside = (r2_yz + float(axis[i]) ** 2) < r2_max
            idx = torch.nonzero(inside).squeeze(-1)
            if idx.numel() > 0:
                out = torch.empty(idx.numel(), dtype=torch.float32, device=device)
                for s in range(0, idx.numel(), chunk_size):
                    sl = idx[s:s + chunk_size]
                    pts = torch.cat([ax[i].expand(sl.numel(), 1), yz[sl]], dim=-1)
                    sigma = density_fn(pts)
                    out[s:s + sl.numel()] = _check_density(sigma, sl.numel())
                slab = np.zeros(n * n, dtype=np.float32)
                slab[idx.cpu().numpy()] = out.cpu().numpy()
                grid[i] = slab.reshape(n, n)
            st.update(1)
    _check_finite(grid)
    return grid


def points_inside(resolution: int, bound: float) -> int:
    """How many grid points lie strictly inside the bounding sphere (those are queried)."""
    axis = grid_axis(resolution, bound)
    r2 = axis[:, None] ** 2 + axis[None, :] ** 2
    r2_max = (bound * (1.0 - 1e-6)) ** 2
    return int(sum(np.count_nonzero(r2 + a * a < r2_max) for a in axis))


def _check_finite(grid: np.ndarray) -> None:
    if not np.isfinite(grid).all():
        raise ExportError("The density field returned NaN or infinite values; the checkpoint has probably "
                          "diverged. Try exporting an earlier checkpoint or train again with a lower learning rate.")


def _check_density(sigma: torch.Tensor, n: int) -> torch.Tensor:
    if not isinstance(sigma, torch.Tensor):
        sigma = torch.as_tensor(sigma)
    sigma = sigma.reshape(-1) if sigma.dim() == 2 and sigma.shape[-1] == 1 else sigma
    if sigma.shape != (n,):
        raise ValueError(f"density_fn must return shape ({n},) for {n} points, got {tuple(sigma.shape)}")
    return sigma.float()


# Refine cells with a corner below the level and one above iso / TAIL (straddling the level, or
# holding the tail of something denser between the coarse points: a rod thinner than a coarse cell
# shows up there only as its sigmoid tail), and their neighbours.
TAIL = 8.0
TAIL_FINE = 2.0  # after the coarsest grid: rods are partly resolved, a soft trained field's band stays thin


def coarse_resolution(resolution: int) -> int:
    """About a quarter of the fine resolution, at least 48 points per axis (never more than fine)."""
    return min(resolution, max(48, (resolution - 1) // 4 + 1))


def refinement_levels(resolution: int) -> list[int]:
    """Grid sizes from coarse to fine, doubling while that stays well below the target
    (256: 64, 128, 256; 128: 48, 96, 128): each level queries only near the previous one's surface,
    so the band the finest level queries is found with the next-finest spacing (thinner)."""
    levels = [coarse_resolution(resolution)]
    while levels[-1] < resolution:
        nxt = levels[-1] * 2
        levels.append(nxt if nxt <= 0.75 * resolution else resolution)
    return levels


def _active_cells(coarse: np.ndarray, iso: float, tail: float) -> np.ndarray:
    """(nc-1)^3 bool: cells with a corner below iso and one above iso / tail, grown by one cell."""
    c = coarse
    cmax = np.maximum.reduce([c[a:a + c.shape[0] - 1, b:b + c.shape[1] - 1, d:d + c.shape[2] - 1]
                              for a in (0, 1) for b in (0, 1) for d in (0, 1)])
    cmin = np.minimum.reduce([c[a:a + c.shape[0] - 1, b:b + c.shape[1] - 1, d:d + c.shape[2] - 1]
                              for a in (0, 1) for b in (0, 1) for d in (0, 1)])
    active = (cmax > iso / tail) & (cmin < iso)
    return binary_dilation(active, structure=np.ones((3, 3, 3), dtype=bool))


@torch.no_grad()
def sample_near_surface(density_fn: DensityFn, coarse: np.ndarray, resolution: int, bound: float, iso: float,
                        device, chunk_size: int, tail: float = TAIL) -> tuple[np.ndarray, int]:
    """Fine (N, N, N) grid from a coarse one (module docstring). Returns (grid, points queried).
    ``tail``: TAIL from the coarsest grid (thin features), TAIL_FINE from the finer ones."""
    n, nc = resolution, coarse.shape[0]
    axis = grid_axis(n, bound)
    cell = np.clip(np.floor((axis + bound) / (2.0 * bound / (nc - 1))).astype(np.int64), 0, nc - 2)
    active = _active_cells(coarse, iso, tail)
    grid = F.interpolate(torch.from_numpy(np.ascontiguousarray(coarse, dtype=np.float32))[None, None],
                         size=(n, n, n), mode="trilinear", align_corners=True)[0, 0].numpy()
    r2_yz = axis[:, None] ** 2 + axis[None, :] ** 2
    r2_max = (bound * (1.0 - 1e-6)) ** 2
    select = np.zeros((n, n, n), dtype=bool)
    for i in range(n):
        inside = (r2_yz + axis[i] ** 2) < r2_max
        grid[i][~inside] = 0.0
        select[i] = active[cell[i]][np.ix_(cell, cell)] & inside
    idx = np.flatnonzero(select)
    del select
    flat = grid.reshape(-1)
    ax = torch.as_tensor(axis, dtype=torch.float32)
    device = torch.device(device)
    for s in range(0, len(idx), chunk_size):
        part = torch.from_numpy(idx[s:s + chunk_size])
        pts = torch.stack([ax[part // (n * n)], ax[(part // n) % n], ax[part % n]], dim=-1).to(device)
        flat[idx[s:s + chunk_size]] = _check_density(density_fn(pts), len(part)).cpu().numpy()
    _check_finite(grid)
    return grid, int(len(idx))
