"""Bake the albedo field into the UV texture.

1. Rasterise every UV triangle in texel space (vectorised over chunks of triangles): each
   triangle enumerates the texel centres in its bounding box grown by ``MARGIN`` texels, and gets
   barycentrics from edge functions. Texels within MARGIN of a triangle are accepted too
   (conservative rasterisation, barycentrics clamped to the triangle) so texels straddling a
   chart border, which bilinear filtering reads, get the colour of the true surface next to them.
   Where several triangles claim a texel, the one whose interior it lies deepest in wins.
2. Interpolate 3D positions with the barycentrics and colour them, in chunks: "grid" (default)
   queries ``albedo_fn`` once per corner of the grid cells the texels lie in (``albedo_grid_resolution``:
   the export grid, or coarser when texels are sparser than its cells) and interpolates trilinearly,
   except in cells whose corners differ by more than ``GRID_TOLERANCE`` (a colour edge or fine
   detail), whose texels are queried exactly; "texel" queries every texel (~0.6M at 1024^2, about
   half a trained hash-grid field's 128^3 export before this option).
3. Fill every texel no triangle claimed with the colour of the nearest claimed texel
   (scipy distance_transform_edt), so mip-mapping and filtering across seams never pull in black.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

from .progress import Reporter

AlbedoFn = Callable[[torch.Tensor], torch.Tensor]
MARGIN = 1.0  # texels (a bilinear tap reaches at most one texel outside the chart)
#: "grid" bake: cells whose 8 corner colours differ by more than this (any channel, 0-1 scale) have
#: their texels queried exactly (colour edges stay sharp); elsewhere trilinear interpolation smooths
#: only variation below it. Measured on a 100-step hash-grid run, 128^3, 1024^2: texels differ from
#: the per-texel bake by 0.9/255 on average (p99 4.4/255) with 30k queries instead of 530k; at 4/255
#: hash-grid noise makes most cells exact (440k queries) for 0.15/255 (docs/BENCHMARKS-export.md).
GRID_TOLERANCE = 16.0 / 255.0
#: "grid" bake: the albedo grid's spacing is at least this many texel spacings on the surface, so
#: its corners stay several times fewer than the texels they colour.
TEXELS_PER_CELL = 2.0
CANDIDATES_PER_CHUNK = 1 << 20  # bounds the rasteriser's temporaries (~100 MiB; larger is no faster)


def rasterize(uvs: np.ndarray, faces: np.ndarray, size: int, reporter: Reporter, margin: float = MARGIN):
    """Returns (texel index (M,) into size*size, face id (M,), barycentrics (M,3)); each texel once.
    ``margin`` 0 claims exactly the texels whose centres lie inside a triangle (coverage masks)."""
    # Texel (col, row) has its centre at pixel coordinates (col, row); row 0 is v = 1 (top).
    px = uvs[:, 0] * size - 0.5
    py = (1.0 - uvs[:, 1]) * size - 0.5
    tri_x, tri_y = px[faces], py[faces]  # (F, 3)
    x0 = np.clip(np.ceil(tri_x.min(1) - margin), 0, size - 1).astype(np.int64)
    x1 = np.clip(np.floor(tri_x.max(1) + margin), 0, size - 1).astype(np.int64)
    y0 = np.clip(np.ceil(tri_y.min(1) - margin), 0, size - 1).astype(np.int64)
    y1 = np.clip(np.floor(tri_y.max(1) + margin), 0, size - 1).astype(np.int64)
    w = np.maximum(x1 - x0 + 1, 0)
    h = np.maximum(y1 - y0 + 1, 0)
    n_cand = w * h
    best_depth = torch.full((size * size,), -float("inf"), dtype=torch.float32)
    best_face = torch.full((size * size,), -1, dtype=torch.int64)
    best_bary = torch.zeros((size * size, 3), dtype=torch.float32)
    # Triangle corners relative to their first corner: small numbers, so float32 edge functions stay
    # exact to ~1e-4 texel even in an 8192^2 texture.
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    origin = t(np.stack([tri_x[:, 0], tri_y[:, 0]], 1))
    coef, lens = _edge_functions(t(np.stack([tri_x - tri_x[:, :1], tri_y - tri_y[:, :1]], -1)).float())
    n_cand_t, x0_t, y0_t, w_t = t(n_cand), t(x0), t(y0), t(w)

    # Chunks of consecutive triangles with about CANDIDATES_PER_CHUNK candidate texels each.
    bounds = np.searchsorted(np.cumsum(n_cand), np.arange(0, n_cand.sum(), CANDIDATES_PER_CHUNK), side="right")
    bounds = np.unique(np.concatenate([[0], bounds, [len(faces)]]))
    with reporter.stage("rasterize", len(bounds) - 1) as stage:
        for a, b in zip(bounds[:-1], bounds[1:]):
            _raster_chunk(int(a), int(b), n_cand_t, x0_t, y0_t, w_t, origin, coef, lens, size, best_depth, best_face,
                          best_bary, margin)
            stage.update(1)
    best_face = best_face.numpy()
    texels = np.nonzero(best_face >= 0)[0]
    return texels, best_face[texels], best_bary.numpy()[texels].astype(np.float64)


def _raster_chunk(a, b, n_cand, x0, y0, w, origin, coef, lens, size, best_depth, best_face, best_bary,
                  margin) -> None:
    """Rasterise triangles a..b-1 and merge into the per-texel best arrays (in place, torch, vectorised:
    the deepest candidate per texel wins via scatter_reduce(amax), no sorting)."""
    counts = n_cand[a:b]
    f_ids = torch.repeat_interleave(torch.arange(a, b), counts)
    if len(f_ids) == 0:
        return
    # Local index of each candidate within its triangle's box -> texel column and row. (index_select,
    # not tensor[index]: the same gathers, several times faster on CPU.)
    start = torch.cumsum(counts, 0) - counts
    local = torch.arange(len(f_ids)) - torch.repeat_interleave(start, counts)
    wf = w.index_select(0, f_ids)
    cols = x0.index_select(0, f_ids) + local % wf
    rows = y0.index_select(0, f_ids) + local // wf
    o = origin.index_select(0, f_ids)
    px, py = (cols - o[:, 0]).float()[:, None], (rows - o[:, 1]).float()[:, None]
    c = coef.index_select(0, f_ids)  # (M, 3 edges, 3)
    dist = c[:, :, 0] * px + c[:, :, 1] * py + c[:, :, 2]  # signed distance to each edge line, texels
    depth = dist.amin(1)
    ok = torch.nonzero(depth >= -margin).squeeze(1)
    tex = (rows * size + cols).index_select(0, ok)
    depth, f_ok, dist = depth.index_select(0, ok), f_ids.index_select(0, ok), dist.index_select(0, ok)
    best_depth.scatter_reduce_(0, tex, depth, reduce="amax", include_self=True)
    win = torch.nonzero(depth >= best_depth.index_select(0, tex)).squeeze(1)  # ties: any tied candidate is fine
    f_win, tex = f_ok.index_select(0, win), tex.index_select(0, win)
    # Barycentrics (clamped to the triangle) only for the winners: edge distance x edge length.
    bary = (dist.index_select(0, win) * lens.index_select(0, f_win)).clamp_min(0.0)
    s = bary.sum(1, keepdim=True)
    bary = torch.where(s > 1e-20, bary / s.clamp_min(1e-20), torch.full_like(bary, 1.0 / 3.0))
    best_face[tex] = f_win
    best_bary[tex] = bary


def _edge_functions(tri: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per triangle ``tri`` (F,3,2) (coordinates relative to the first corner): coefficients (F,3,3)
    of A*x + B*y + C = signed distance in texels from (x, y) to the line of the edge opposite each
    corner (> 0 inside; charts may be mirrored, so the sign follows the winding), and the edge lengths
    (F,3). Degenerate (zero-area) triangles get distance -inf everywhere (never rasterised)."""
    ax, ay, bx, by, cx, cy = tri[:, 0, 0], tri[:, 0, 1], tri[:, 1, 0], tri[:, 1, 1], tri[:, 2, 0], tri[:, 2, 1]
    area2 = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
    sgn = torch.where(area2 < 0, -1.0, 1.0)
    # Edge opposite a: (b - p) x (c - p) = (by - cy) x + (cx - bx) y + (bx cy - by cx); likewise b, c.
    a_ = torch.stack([by - cy, cy - ay, ay - by], 1)
    b_ = torch.stack([cx - bx, ax - cx, bx - ax], 1)
    c_ = torch.stack([bx * cy - by * cx, cx * ay - cy * ax, ax * by - ay * bx], 1)
    lens = torch.hypot(a_, b_).clamp_min(1e-12)
    k = (sgn[:, None] / lens)
    coef = torch.stack([a_ * k, b_ * k, c_ * k], -1)
    degenerate = area2.abs() <= 1e-12
    coef[degenerate] = torch.tensor([0.0, 0.0, -float("inf")])
    return coef, lens


def query_albedo(albedo_fn: AlbedoFn, points: np.ndarray, device, chunk_size: int,
                 reporter: Reporter) -> np.ndarray:
    """``albedo_fn`` at every point, chunked, as the "albedo" stage."""
    with reporter.stage("albedo", max((len(points) + chunk_size - 1) // chunk_size, 1)) as st:
        return _query(albedo_fn, points, device, chunk_size, st)


@torch.no_grad()
def _query(albedo_fn: AlbedoFn, points: np.ndarray, device, chunk_size: int, stage=None) -> np.ndarray:
    out = np.zeros((len(points), 3), dtype=np.float32)
    for s in range(0, len(points), chunk_size):
        pts = torch.as_tensor(points[s:s + chunk_size], dtype=torch.float32, device=device)
        rgb = albedo_fn(pts)
        if rgb.shape != (len(pts), 3):
            raise ValueError(f"albedo_fn must return shape ({len(pts)}, 3), got {tuple(rgb.shape)}")
        out[s:s + len(pts)] = torch.nan_to_num(rgb.float(), nan=0.5).clamp(0, 1).cpu().numpy()
        if stage is not None:
            stage.update(1)
    return out


def fill_empty(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Give every texel outside ``mask`` the colour of the nearest texel inside it."""
    if mask.all() or not mask.any():
        return image
    idx = distance_transform_edt(~mask, return_distances=False, return_indices=True)
    return image[idx[0], idx[1]]


def albedo_grid_resolution(verts: np.ndarray, faces: np.ndarray, n_texels: int, resolution: int,
                           bound: float) -> int:
    """Points per axis of the "grid" bake's albedo grid: the export grid's, or fewer where its cells
    would hold fewer than ``TEXELS_PER_CELL``^2 texels (a fine grid under a small texture)."""
    tri = verts[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum()
    spacing = max(2.0 * bound / (resolution - 1), TEXELS_PER_CELL * np.sqrt(area / max(n_texels, 1)))
    return int(max(2, min(resolution, np.floor(2.0 * bound / spacing) + 1)))


def grid_albedo(albedo_fn: AlbedoFn, points: np.ndarray, resolution: int, bound: float, device, chunk_size: int,
                reporter: Reporter, tolerance: float = GRID_TOLERANCE) -> tuple[np.ndarray, int]:
    """Colours at ``points`` (M,3) from ``albedo_fn`` on the corners of the grid cells they lie in
    (trilinear), queried exactly where a cell's corners differ by more than ``tolerance``.
    Returns (colours (M,3) float32, points queried)."""
    n = resolution
    h = 2.0 * bound / (n - 1)
    g = (points + bound) / h
    cell = np.clip(np.floor(g), 0, n - 2).astype(np.int64)  # (M, 3)
    frac = np.clip(g - cell, 0.0, 1.0)
    cell_id = (cell[:, 0] * n + cell[:, 1]) * n + cell[:, 2]
    cells, texel_cell = np.unique(cell_id, return_inverse=True)
    offs = np.array([(a * n + b) * n + c for a in (0, 1) for b in (0, 1) for c in (0, 1)], dtype=np.int64)
    corner_ids, corner_of_cell = np.unique((cells[:, None] + offs[None, :]).reshape(-1), return_inverse=True)
    ijk = np.stack([corner_ids // (n * n), (corner_ids // n) % n, corner_ids % n], 1)
    with reporter.stage("albedo", 2) as st:
        corner_rgb = _query(albedo_fn, ijk * h - bound, device, chunk_size)
        st.update(1)
        per_cell = corner_rgb[corner_of_cell.reshape(-1, 8)]  # (cells, 8, 3), corner order (a, b, c) as offs
        exact_cell = (per_cell.max(1) - per_cell.min(1)).max(1) > tolerance
        # Trilinear: weight of corner (a, b, c) = prod over axes of (frac if 1 else 1 - frac); float32
        # torch gathers and one batched product (numpy's einsum here took longer than the queries).
        fr = torch.from_numpy(frac.astype(np.float32))
        wx, wy, wz = (torch.stack([1.0 - fr[:, d], fr[:, d]], 1) for d in range(3))
        w = (wx[:, :, None, None] * wy[:, None, :, None] * wz[:, None, None, :]).reshape(-1, 1, 8)
        texel_corners = torch.from_numpy(corner_of_cell.reshape(-1, 8)).index_select(0, torch.from_numpy(texel_cell))
        vals = torch.from_numpy(corner_rgb).index_select(0, texel_corners.reshape(-1)).reshape(-1, 8, 3)
        rgb = torch.bmm(w, vals)[:, 0].numpy()
        exact = np.flatnonzero(exact_cell[texel_cell])
        rgb[exact] = _query(albedo_fn, points[exact], device, chunk_size)
        st.update(1)
    return rgb, len(corner_ids) + len(exact)


def bake_albedo(albedo_fn: AlbedoFn, verts: np.ndarray, faces: np.ndarray, uvs: np.ndarray, size: int,
                device, chunk_size: int, reporter: Reporter, mode: str = "grid", resolution: int = 256,
                bound: float = 1.0) -> tuple[np.ndarray, float, int]:
    """(size, size, 3) uint8 texture (row 0 = top = v 1), the fraction of texels covered by charts and
    the number of albedo queries. ``mode``: "grid" or "texel" (module docstring); ``resolution``: the
    export grid's points per axis (the finest albedo grid "grid" uses)."""
    texels, face_id, bary = rasterize(uvs, faces, size, reporter)
    tri = verts[faces[face_id]]  # (M, 3, 3)
    points = np.einsum("mk,mkd->md", bary, tri)
    if mode == "grid":
        n = albedo_grid_resolution(verts, faces, len(texels), resolution, bound)
        rgb, n_queried = grid_albedo(albedo_fn, points, n, bound, device, chunk_size, reporter)
    else:
        rgb, n_queried = query_albedo(albedo_fn, points, device, chunk_size, reporter), len(points)
    with reporter.stage("dilate") as _:
        image = np.zeros((size * size, 3), dtype=np.float32)
        image[texels] = rgb
        mask = np.zeros(size * size, dtype=bool)
        mask[texels] = True
        image = fill_empty(image.reshape(size, size, 3), mask.reshape(size, size))
        image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    return image, float(mask.mean()), n_queried
