"""Density grid -> clean, outward-oriented triangle surface.

Steps: occupancy checks (empty / fills the sphere -> ExportError with advice), scikit-image
marching cubes at the iso-level, connected-component filter (floaters), optional quadric
decimation (fast-simplification), outward orientation, area-weighted smooth vertex normals.

The iso-level is chosen by iso.py (or given); check_occupancy runs on the first (coarse) grid so a
field that is empty or fills the sphere at that level fails before the expensive work, with advice.
"""
from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from skimage.measure import marching_cubes

from ..errors import ExportError

# The field "fills the sphere" when more than this fraction of the outermost shell of in-sphere
# grid points (2 voxels thick) is above the iso-level: the surface would then be the clipping
# sphere rather than the object. Objects touching the boundary (a base, a long tail) cover a few
# percent of the shell, a fog-filled sphere covers ~all of it.
FULL_SHELL_FRACTION = 0.5


def check_occupancy(grid: np.ndarray, iso: float, bound: float) -> float:
    """Raise ExportError if nothing is above ``iso`` or the field fills the sphere; return the
    occupied fraction of the sphere's volume."""
    n = grid.shape[0]
    occupied = grid > iso
    n_occ = int(np.count_nonzero(occupied))
    vmax = float(grid.max())
    if n_occ == 0:
        hint = (f" e.g. iso={_nice(vmax / 2)}" if vmax > 0 else "")
        raise ExportError(
            f"The field is empty at iso={iso:g}: no point in the bounding sphere is denser than that "
            f"(maximum density {vmax:.3g}). Try a lower iso{hint}, or train longer so the object becomes solid.")
    h = 2.0 * bound / (n - 1)
    ax = np.linspace(-bound, bound, n)
    # Radius of every grid point, built one x-slab at a time would be slower; N^3 float32 is fine
    # next to the grid itself, but avoid it anyway: the shell test needs only the shell points.
    r2_yz = ax[None, :, None] ** 2 + ax[None, None, :] ** 2
    shell_total = 0
    shell_occ = 0
    inside_total = 0
    for i in range(n):
        r = np.sqrt(ax[i] ** 2 + r2_yz[0])
        shell = (r < bound * (1 - 1e-6)) & (r >= bound - 2 * h)
        inside_total += int(np.count_nonzero(r < bound))
        shell_total += int(np.count_nonzero(shell))
        shell_occ += int(np.count_nonzero(occupied[i][shell]))
    if shell_total and shell_occ / shell_total > FULL_SHELL_FRACTION:
        raise ExportError(
            f"The field fills the whole bounding sphere at iso={iso:g} ({100 * shell_occ / shell_total:.0f}% of its "
            f"boundary is solid), so the mesh would just be the sphere. Try a higher iso "
            f"(e.g. iso={_nice(iso * 4)}), or train longer / with a stronger opacity regulariser so the "
            f"space around the object clears.")
    return n_occ / max(inside_total, 1)


def check_not_empty(grid: np.ndarray, iso: float) -> None:
    """The fine grid has a point above ``iso`` (the coarse check can pass on a feature the fine
    points miss only in contrived fields; marching cubes would fail obscurely)."""
    if not (grid > iso).any():
        raise ExportError(f"The field is empty at iso={iso:g} on the fine grid (maximum density {float(grid.max()):.3g}). "
                          f"Try a lower iso, or train longer so the object becomes solid.")


def _nice(x: float) -> str:
    return f"{float(f'{x:.2g}'):g}"


def extract_surface(grid: np.ndarray, iso: float, bound: float) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes (scikit-image, Lewiner) -> world-space vertices (V,3) float64, faces (F,3) int64."""
    grid[0], grid[-1], grid[:, 0], grid[:, -1], grid[:, :, 0], grid[:, :, -1] = 0, 0, 0, 0, 0, 0
    h = 2.0 * bound / (grid.shape[0] - 1)
    verts, faces, _, _ = marching_cubes(grid, level=iso, spacing=(h, h, h), allow_degenerate=False)
    verts = verts.astype(np.float64) - bound
    return verts, faces.astype(np.int64)


def components(n_vertices: int, faces: np.ndarray) -> tuple[int, np.ndarray]:
    """Connected components over shared vertices: (count, label per face)."""
    a, b, c = faces[:, 0], faces[:, 1], faces[:, 2]
    rows = np.concatenate([a, b])
    cols = np.concatenate([b, c])
    adj = sparse.coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n_vertices, n_vertices))
    n, labels = connected_components(adj, directed=False)
    return n, labels[a]


def keep_components(verts: np.ndarray, faces: np.ndarray, keep_fraction: float):
    """Drop components with fewer than ``keep_fraction`` x the largest component's faces.
    Returns (verts, faces, n_components, n_kept)."""
    n, face_label = components(len(verts), faces)
    counts = np.bincount(face_label, minlength=n)
    n_present = int(np.count_nonzero(counts))
    keep = counts >= max(keep_fraction * counts.max(), 1)
    faces = faces[keep[face_label]]
    verts, faces = compact(verts, faces)
    return verts, faces, n_present, int(np.count_nonzero(keep))


def compact(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove unreferenced vertices and renumber faces."""
    used = np.zeros(len(verts), dtype=bool)
    used[faces.reshape(-1)] = True
    remap = np.cumsum(used) - 1
    return verts[used], remap[faces]


def decimate(verts: np.ndarray, faces: np.ndarray, target_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadric edge collapse (fast-simplification) to about ``target_faces`` triangles."""
    if len(faces) <= target_faces:
        return verts, faces
    import fast_simplification

    v, f = fast_simplification.simplify(verts.astype(np.float32), faces.astype(np.int32),
                                        target_reduction=1.0 - target_faces / len(faces))
    return compact(np.asarray(v, dtype=np.float64), np.asarray(f, dtype=np.int64))


def signed_volume(verts: np.ndarray, faces: np.ndarray) -> float:
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    return float(np.einsum("ij,ij->", v0, np.cross(v1, v2)) / 6.0)


def orient_outward(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Marching cubes winds every triangle the same way relative to the density gradient, so one
    global test suffices: a closed surface enclosing material has positive signed volume when its
    normals point outward (holes/cavities subtract, as they should). For a density (large inside)
    scikit-image's winding comes out inward, so in practice this flips; the test keeps it honest."""
    if signed_volume(verts, faces) < 0:
        faces = faces[:, [0, 2, 1]]
    return np.ascontiguousarray(faces)


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Smooth per-vertex normals: the sum of adjacent face normals weighted by face area
    (the unnormalised cross product), normalised."""
    fn = np.cross(verts[faces[:, 1]] - verts[faces[:, 0]], verts[faces[:, 2]] - verts[faces[:, 0]])
    vn = np.zeros_like(verts)
    for k in range(3):
        for d in range(3):
            vn[:, d] += np.bincount(faces[:, k], weights=fn[:, d], minlength=len(verts))
    norm = np.linalg.norm(vn, axis=1, keepdims=True)
    return vn / np.maximum(norm, 1e-12)


def is_watertight(faces: np.ndarray) -> bool:
    """Every undirected edge is shared by exactly two faces, with opposite directions."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    key_dir = e[:, 0].astype(np.int64) * (faces.max() + 1) + e[:, 1]
    if len(np.unique(key_dir)) != len(key_dir):  # a directed edge used twice: non-manifold / flipped
        return False
    und = np.sort(e, axis=1)
    _, counts = np.unique(und[:, 0].astype(np.int64) * (faces.max() + 1) + und[:, 1], return_counts=True)
    return bool(np.all(counts == 2))
