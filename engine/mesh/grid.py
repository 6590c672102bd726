"""Sample the density field on a regular grid over [-bound, bound]^3, densely or coarse to fine.

Only points strictly inside the bounding sphere are sent to ``density_fn``; everything else is 0
(empty). That halves the work (the sphere is 52% of the cube) and guarantees the zero border that
makes marching cubes return closed surfaces. The grid is filled slab by slab along x, and each
call to ``density_fn`` gets at most ``chunk_size`` points, so device memory stays bounded and the
only large array is the float32 grid itself (4*N^3 bytes: 64 MiB at 256, 512 MiB at 512).

Coarse to fine (``sample_near_surface``): querying every point of a 256^3 grid costs tens of seconds
for a trained hash-grid field on a CPU, but marching cubes only needs exact values in the cells the
surface crosses. So a coarse grid (about N/4 per axis) is sampled first, the level is chosen on it,
and each finer level (``refinement_levels``: sizes doubling up to N) queries only its points in the
previous level's cells that straddle the level or hold a density above iso / ``TAIL`` (a thin
feature's tail; iso / ``TAIL_FINE`` after the coarsest grid, where thin features are partly resolved:
on a soft trained field the wide tail rule would triple the finest level's queries), then follows
the surface (tracking) into every neighbour cell it leaves through, until it leaves none. Every
other point takes the previous level's trilinear interpolation, which is on the same side of the
level as the cell's corners, so marching cubes finds no surface there (and the grid still has no
open border, so the mesh stays closed). A feature thinner than a coarse cell that no coarse point
sees and that touches no tracked cell is missed; the coarse spacing (2/63 of the bound at 256^3) is
the limit."""
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
TAIL_FINE = 1.5  # after the coarsest grid: rods are partly resolved (a 0.024-thick rod's tail on a 96^3 grid is ~iso/1.2); a soft trained field's skirt (iso/2 and up, ~2x the points) stays out


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


#: At most this many tracking rounds per level (each adds the coarse cells the surface crosses into;
#: a surface usually stays within the first set, or leaves it for a cell or two).
MAX_TRACK_ROUNDS = 64


@torch.no_grad()
def sample_near_surface(density_fn: DensityFn, coarse: np.ndarray, resolution: int, bound: float, iso: float,
                        device, chunk_size: int, tail: float = TAIL) -> tuple[np.ndarray, int]:
    """Fine (N, N, N) grid from a coarse one (module docstring). Returns (grid, points queried).
    ``tail``: TAIL from the coarsest grid (thin features), TAIL_FINE from the finer ones.

    Surface tracking: the fine points of the coarse cells that straddle the level (or hold a thin
    feature's tail) are queried; then, for every queried cell and each of its 6 faces, if the fine
    values on the face and the neighbour cell's coarse corners are not all on one side of the level,
    the surface leaves through that face and the neighbour is queried too, until no surface leaves.
    Every fine cell the surface crosses thus has all its corners queried, with a band one coarse
    cell thick instead of three (the one-cell growth this replaced)."""
    n, nc = resolution, coarse.shape[0]
    axis = grid_axis(n, bound)
    cmin, cmax = _cell_range(coarse)
    straddle = (cmax >= iso) & (cmin < iso)
    # A thin feature's tail: all corners below the level, one above iso / tail, away from the surface
    # (next to it, the tail is the soft field's own skirt, which tracking covers where needed).
    tail_only = (cmax > iso / tail) & (cmax < iso) & ~binary_dilation(straddle, np.ones((3, 3, 3), dtype=bool))
    todo = straddle | tail_only
    done = np.zeros_like(todo)
    grid = F.interpolate(torch.from_numpy(np.ascontiguousarray(coarse, dtype=np.float32))[None, None],
                         size=(n, n, n), mode="trilinear", align_corners=True)[0, 0].numpy()
    r2_yz = axis[:, None] ** 2 + axis[None, :] ** 2
    r2_max = (bound * (1.0 - 1e-6)) ** 2
    for i in range(n):
        grid[i][(r2_yz + axis[i] ** 2) >= r2_max] = 0.0
    # Fine cells belong to the coarse cell holding their centre; coarse cell a owns fine cells
    # first[a]..last[a] and so the fine points first[a]..last[a]+1 (its box, closed).
    centre_cell = np.clip(np.floor(((axis[:-1] + axis[1:]) / 2 + bound) / (2.0 * bound / (nc - 1))), 0, nc - 2)
    first = np.searchsorted(centre_cell, np.arange(nc - 1), side="left")
    last = np.searchsorted(centre_cell, np.arange(nc - 1), side="right")  # exclusive cell end = last point
    width = int((last - first).max()) + 1  # box points per axis at most
    t = np.arange(width)
    known = np.zeros(n * n * n, dtype=bool)
    flat = grid.reshape(-1)
    ax = torch.as_tensor(axis, dtype=torch.float32)
    device = torch.device(device)
    n_queried = 0
    for _ in range(MAX_TRACK_ROUNDS):
        cells = np.argwhere(todo)  # (m, 3)
        if len(cells) == 0:
            break
        done |= todo
        # Box points of each cell: (m, width) per axis, valid where within the cell's box.
        lo = np.stack([first[cells[:, d]] for d in range(3)], 1)
        hi = np.stack([last[cells[:, d]] for d in range(3)], 1)
        idx = lo[:, :, None] + t[None, None, :]  # (m, 3, width)
        ok = idx <= hi[:, :, None]
        idx = np.minimum(idx, hi[:, :, None])  # invalid slots repeat the last point (harmless for min/max)
        ids = ((idx[:, 0, :, None, None] * n + idx[:, 1, None, :, None]) * n + idx[:, 2, None, None, :])
        new = np.zeros(n * n * n, dtype=bool)
        new[ids.reshape(-1)] = True
        new &= ~known
        q = np.flatnonzero(new)
        del new
        known[q] = True
        ijk = np.stack([q // (n * n), (q // n) % n, q % n], 1)
        q = q[(axis[ijk] ** 2).sum(1) < r2_max]  # outside the sphere stays 0
        for s0 in range(0, len(q), chunk_size):
            part = torch.from_numpy(q[s0:s0 + chunk_size])
            pts = torch.stack([ax[part // (n * n)], ax[(part // n) % n], ax[part % n]], dim=-1).to(device)
            flat[q[s0:s0 + chunk_size]] = _check_density(density_fn(pts), len(part)).cpu().numpy()
        n_queried += len(q)
        vals = flat[ids]  # (m, width, width, width)
        todo = np.zeros_like(done)
        for d in range(3):
            for side in (0, 1):
                # The face's points: the first / last box slot along axis d.
                face_slot = np.zeros(len(cells), dtype=np.int64) if side == 0 else ok[:, d, :].sum(1) - 1
                face = np.take_along_axis(np.moveaxis(vals, 1 + d, 1), face_slot[:, None, None, None], 1)[:, 0]
                nb = cells.copy()
                nb[:, d] += 1 if side else -1
                inb = (nb[:, d] >= 0) & (nb[:, d] < nc - 1)
                nb, fmin, fmax = nb[inb], face[inb].min((1, 2)), face[inb].max((1, 2))
                lo_v = np.minimum(fmin, cmin[nb[:, 0], nb[:, 1], nb[:, 2]])
                hi_v = np.maximum(fmax, cmax[nb[:, 0], nb[:, 1], nb[:, 2]])
                leave = (hi_v > iso) & (lo_v < iso)
                todo[nb[leave, 0], nb[leave, 1], nb[leave, 2]] = True
        todo &= ~done
    _check_finite(grid)
    return grid, int(n_queried)


def _cell_range(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per cell of a grid, the smallest and largest of its 8 corners: two (n-1)^3 arrays."""
    corners = [c[a:a + c.shape[0] - 1, b:b + c.shape[1] - 1, d:d + c.shape[2] - 1]
               for a in (0, 1) for b in (0, 1) for d in (0, 1)]
    return np.minimum.reduce(corners), np.maximum.reduce(corners)
