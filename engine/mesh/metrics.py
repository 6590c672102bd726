"""How close a triangle mesh is to a known true surface: one implementation for the tests, the
export benchmark and the shape scores of trained runs (engine/evaluate.py).

    ref = reference_from_sdf(sdf)                       # or reference_from_samples(sdf, pts, nrm)
    s = surface_scores(verts, faces, ref, voxel=2 / 255)
    s.chamfer, s.chamfer99, s.normal_consistency, s.near_fraction

The true surface is given by a signed distance function (torch (N,3) -> (N,), negative inside) and
area-uniform sample points on it with their outward normals. Measures, all on area-uniform samples
of the mesh (so a mesh's density of triangles does not bias them):

* Chamfer-L1, symmetric, with exact distances: mesh samples -> truth by |sdf| (when the SDF is an
  exact Euclidean distance; otherwise by point-triangle distance to a fine reference mesh of the
  zero set), truth samples -> mesh by point-triangle distance. Mean and 99th percentile.
* normal consistency: mean dot product of the true normal at each true sample and the mesh's face
  normal at the nearest mesh sample (1 = perfect, about 0 for noise, -1 for inward faces).
* near fraction: share of the mesh's area within ``voxel`` of the true surface (bumps, shrinkage or
  bloat show up here even when Chamfer's mean is small).
* bumpiness (optional, ``bump_radius``): the mean angle, in degrees, between a mesh sample's normal and
  the mean normal of the mesh samples within ``bump_radius``, over the parts of the mesh whose nearest
  true surface is smooth at that scale (a cube's faces, not its edges). Dents a few tenths of the
  bound wide that tilt the normals by a few degrees barely move normal consistency (a cos of a few
  degrees is ~1) but show in shaded pictures; this measure sees them. A uniformly curved surface
  scores ~0 (its normals average out around each sample).

And, with no true surface at all, ``mesh_silhouettes`` (pixel-exact coverage masks of a mesh from
the engine's cameras) and ``mask_iou``: how well a mesh matches what the NeRF renders.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
from scipy.spatial import cKDTree

SdfFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Reference:
    """The true surface: its SDF and area-uniform samples (points, outward unit normals).
    ``exact_sdf``: |sdf| is the Euclidean distance to the surface (else ``mesh`` is used for it)."""

    sdf: SdfFn
    points: np.ndarray
    normals: np.ndarray
    exact_sdf: bool = True
    mesh: tuple[np.ndarray, np.ndarray] | None = None


@dataclass
class SurfaceScores:
    chamfer: float  # mean symmetric Chamfer-L1 (world units)
    chamfer99: float  # 99th percentile of both directions' distances
    normal_consistency: float
    near_fraction: float  # share of mesh area within `voxel` of the true surface (nan if no voxel)
    n_faces: int
    bumpiness: float = float("nan")  # degrees (nan unless a bump_radius was given)

    def to_json(self) -> dict:
        return asdict(self)


def eval_sdf(sdf: SdfFn, points: np.ndarray, chunk: int = 1 << 18) -> np.ndarray:
    out = [sdf(torch.as_tensor(points[i:i + chunk], dtype=torch.float64)).double().numpy()
           for i in range(0, len(points), chunk)]
    return np.concatenate(out) if out else np.zeros(0)


def sdf_normals(sdf: SdfFn, points: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """Outward unit normals by central differences of the SDF."""
    g = np.stack([eval_sdf(sdf, points + e) - eval_sdf(sdf, points - e) for e in np.eye(3) * eps], 1)
    return g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)


def face_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    n = np.cross(verts[faces[:, 1]] - verts[faces[:, 0]], verts[faces[:, 2]] - verts[faces[:, 0]])
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-20)


def sample_surface(verts: np.ndarray, faces: np.ndarray, n: int, seed: int = 0):
    """Area-uniform points on a mesh: (points (n,3), face normals (n,3), face ids (n,), barycentrics (n,3))."""
    rng = np.random.default_rng(seed)
    tri = verts[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    fid = rng.choice(len(faces), size=n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    bary = np.stack([1 - s, s * (1 - r2), s * r2], 1)
    pts = np.einsum("nk,nkd->nd", bary, tri[fid])
    return pts, face_normals(verts, faces)[fid], fid, bary


def point_mesh_distance(points: np.ndarray, verts: np.ndarray, faces: np.ndarray, k: int = 16) -> np.ndarray:
    """Distance from each point to the mesh: exact point-triangle distance to the k triangles with the
    nearest centroids (for even, small triangles the nearest triangle is among them; no rtree needed)."""
    import trimesh  # only here: the rest of the module is numpy/scipy

    tri = verts[faces]
    k = min(k, len(faces))
    _, cand = cKDTree(tri.mean(1)).query(points, k=k)
    cand = cand.reshape(len(points), k)
    out = np.empty(len(points))
    step = max(1, (1 << 18) // k)  # bound the (m*k, 3, 3) temporaries
    for a in range(0, len(points), step):
        p = np.repeat(points[a:a + step], k, axis=0)
        c = trimesh.triangles.closest_point(tri[cand[a:a + step].reshape(-1)], p)
        out[a:a + step] = np.linalg.norm(c - p, axis=1).reshape(-1, k).min(1)
    return out


def reference_from_samples(sdf: SdfFn, points: np.ndarray, normals: np.ndarray) -> Reference:
    """A true surface with an exact SDF and its own area-uniform sampler (tests/analytic_fields)."""
    return Reference(sdf, np.asarray(points, np.float64), np.asarray(normals, np.float64), True)


def reference_from_sdf(sdf: SdfFn, n: int = 20000, bound: float = 1.0, resolution: int = 160,
                       exact_sdf: bool = True, seed: int = 0) -> Reference:
    """A true surface from its SDF alone: marching cubes of the SDF on a fine grid, area-uniform
    samples of that mesh projected onto the zero set (Newton steps along the SDF gradient), normals
    from the SDF's gradient. Good to ~1e-4 of ``bound`` at the default resolution."""
    from skimage.measure import marching_cubes

    ax = np.linspace(-bound, bound, resolution)
    g = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    vol = eval_sdf(sdf, g).reshape(resolution, resolution, resolution)
    h = ax[1] - ax[0]
    v, f, _, _ = marching_cubes(vol, level=0.0, spacing=(h, h, h))
    v = v.astype(np.float64) - bound
    f = f.astype(np.int64)
    pts = sample_surface(v, f, n, seed)[0]
    for _ in range(3):
        pts = pts - eval_sdf(sdf, pts)[:, None] * sdf_normals(sdf, pts)
    if not exact_sdf:  # project the reference mesh's vertices too: mesh -> truth distances use it
        for _ in range(3):
            v = v - eval_sdf(sdf, v)[:, None] * sdf_normals(sdf, v)
    return Reference(sdf, pts, sdf_normals(sdf, pts), exact_sdf, None if exact_sdf else (v, f))


def distance_to_truth(ref: Reference, points: np.ndarray) -> np.ndarray:
    if ref.exact_sdf:
        return np.abs(eval_sdf(ref.sdf, points))
    return point_mesh_distance(points, *ref.mesh)


def chamfer(verts: np.ndarray, faces: np.ndarray, ref: Reference, mesh_points: np.ndarray) -> tuple[float, float]:
    """Symmetric Chamfer-L1 (mean of the two directions' means) and the 99th percentile of all distances."""
    d_mt = distance_to_truth(ref, mesh_points)
    d_tm = point_mesh_distance(ref.points, verts, faces)
    return float(0.5 * (d_mt.mean() + d_tm.mean())), float(np.percentile(np.concatenate([d_mt, d_tm]), 99))


def normal_consistency(mesh_points: np.ndarray, mesh_normals: np.ndarray, ref: Reference) -> float:
    _, j = cKDTree(mesh_points).query(ref.points)
    return float(np.mean(np.sum(mesh_normals[j] * ref.normals, axis=1)))


def near_fraction(ref: Reference, mesh_points: np.ndarray, voxel: float) -> float:
    """Share of the mesh's area (area-uniform samples) within ``voxel`` of the true surface."""
    return float(np.mean(distance_to_truth(ref, mesh_points) <= voxel))


def local_normal_deviation(points: np.ndarray, normals: np.ndarray, radius: float) -> np.ndarray:
    """Per sample, the angle (degrees) between its normal and the mean normal of the samples within
    ``radius`` (itself included)."""
    from scipy import sparse

    near = cKDTree(points).query_ball_point(points, radius, return_sorted=False)
    counts = np.fromiter((len(i) for i in near), np.int64, len(near))
    cols = np.concatenate([np.asarray(i, np.int64) for i in near])
    rows = np.repeat(np.arange(len(near)), counts)
    mean = sparse.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(near), len(near))) @ normals
    mean /= np.linalg.norm(mean, axis=1, keepdims=True) + 1e-12
    return np.degrees(np.arccos(np.clip(np.sum(normals * mean, axis=1), -1.0, 1.0)))


# Where the true surface's own normals deviate less than this at the bump radius, it counts as smooth.
SMOOTH_TRUTH_DEG = 2.0


def bumpiness(mesh_points: np.ndarray, mesh_normals: np.ndarray, ref: Reference, radius: float) -> float:
    """Mean local normal deviation (degrees) of the mesh over the parts whose nearest true sample
    lies where the truth itself is smooth at ``radius`` (edges and rims of the true shape excluded)."""
    smooth_truth = local_normal_deviation(ref.points, ref.normals, radius) < SMOOTH_TRUTH_DEG
    _, j = cKDTree(ref.points).query(mesh_points)
    keep = smooth_truth[j]
    if not keep.any():
        return float("nan")
    return float(local_normal_deviation(mesh_points, mesh_normals, radius)[keep].mean())


def surface_scores(verts: np.ndarray, faces: np.ndarray, ref: Reference, voxel: float | None = None,
                   n: int = 20000, seed: int = 1, bump_radius: float | None = None) -> SurfaceScores:
    """The measures of the mesh (verts (V,3), faces (F,3), outward winding) against ``ref``
    (bumpiness only with a ``bump_radius``)."""
    verts = np.asarray(verts, np.float64)
    faces = np.asarray(faces, np.int64)
    pts, nrm, _, _ = sample_surface(verts, faces, n, seed)
    cd, cd99 = chamfer(verts, faces, ref, pts)
    nf = near_fraction(ref, pts, voxel) if voxel is not None else float("nan")
    bump = bumpiness(pts, nrm, ref, bump_radius) if bump_radius is not None else float("nan")
    return SurfaceScores(cd, cd99, normal_consistency(pts, nrm, ref), nf, int(len(faces)), bump)


def mesh_silhouettes(verts: np.ndarray, faces: np.ndarray, cameras, resolution: int) -> np.ndarray:
    """(B, res, res) bool: pixels whose centre a triangle covers, with the engine's camera model
    (engine/render.camera_rays: pinhole, focal in image widths, OpenGL camera axes)."""
    from .bake import rasterize
    from .progress import Reporter

    out = np.zeros((len(cameras), resolution, resolution), dtype=bool)
    c2w = cameras.c2w.double().numpy()
    for b in range(len(cameras)):
        pc = (verts - c2w[b, :3, 3]) @ c2w[b, :3, :3]  # world -> camera: R^T (p - o)
        f = float(cameras.focal[b]) * resolution
        col = pc[:, 0] / -pc[:, 2] * f + resolution / 2  # pixel units, centres at k + 0.5
        row = -pc[:, 1] / -pc[:, 2] * f + resolution / 2
        uv = np.stack([col / resolution, 1.0 - row / resolution], 1)  # rasterize's texel convention
        texels = rasterize(uv, faces, resolution, Reporter(False, None), margin=0.0)[0]
        out[b].reshape(-1)[texels] = True
    return out


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b)) / union if union else 1.0
