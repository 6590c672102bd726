"""Analytic density/albedo fields with known surfaces, for testing and benchmarking the exporter
(and anything else that consumes ``field.density`` / ``field.albedo``-style callables).

Each shape has a signed distance function (negative inside) and a density
``peak * sigmoid(-sdf / width)``: smooth like a trained NeRF's, with density = peak/2 exactly on
the true surface. With the default peak 20 that is 10 = the exporter's default iso, so the
extracted level set should coincide with the analytic surface. ``sample_surface`` draws points
uniformly by area on the true surface with their analytic outward normals (float64 numpy)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

PEAK = 20.0
ISO = PEAK / 2  # the density on the true surface (pass it as the export's iso to compare with the SDF)
WIDTH = 0.01  # surface transition thickness (~ one voxel at resolution 200 over [-1, 1])


def density_from_sdf(sdf: torch.Tensor, peak: float = PEAK, width: float = WIDTH) -> torch.Tensor:
    return peak * torch.sigmoid(-sdf / width)


def octant_albedo(x: torch.Tensor) -> torch.Tensor:
    """Colour by octant: each channel is 0.85 on the positive side of its axis, 0.15 on the negative
    side (R<->x, G<->y, B<->z), so neighbouring octants differ by 0.7 in one channel."""
    return 0.15 + 0.7 * (x > 0).to(x.dtype)


def octant_albedo_np(x: np.ndarray) -> np.ndarray:
    return 0.15 + 0.7 * (x > 0).astype(np.float64)


@dataclass
class Shape:
    name: str
    sdf: Callable[[torch.Tensor], torch.Tensor]
    sample_surface: Callable[[int, int], tuple[np.ndarray, np.ndarray]]
    volume: float
    area: float

    def density(self, x: torch.Tensor, peak: float = PEAK, width: float = WIDTH) -> torch.Tensor:
        return density_from_sdf(self.sdf(x), peak, width)

    def step_density(self, x: torch.Tensor, value: float = 50.0) -> torch.Tensor:
        """A hard-edged variant: ``value`` inside, 0 outside."""
        return value * (self.sdf(x) < 0).to(x.dtype)


# ---- sphere -------------------------------------------------------------------------------------
def sphere(radius: float = 0.6, center=(0.0, 0.0, 0.0)) -> Shape:
    c = np.asarray(center, dtype=np.float64)

    def sdf(x):
        return (x - torch.as_tensor(c, dtype=x.dtype, device=x.device)).norm(dim=-1) - radius

    def sample(n, seed=0):
        d = np.random.default_rng(seed).normal(size=(n, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        return c + radius * d, d

    return Shape("sphere", sdf, sample, 4 / 3 * math.pi * radius**3, 4 * math.pi * radius**2)


# ---- axis-aligned box ---------------------------------------------------------------------------
def box(half=(0.5, 0.35, 0.4)) -> Shape:
    h = np.asarray(half, dtype=np.float64)

    def sdf(x):
        q = x.abs() - torch.as_tensor(h, dtype=x.dtype, device=x.device)
        return q.clamp(min=0).norm(dim=-1) + q.max(dim=-1).values.clamp(max=0)

    # Face areas: the pair of faces normal to axis a has area 4 * h[b] * h[c] each.
    face_area = np.array([4 * h[1] * h[2], 4 * h[0] * h[2], 4 * h[0] * h[1]])

    def sample(n, seed=0):
        rng = np.random.default_rng(seed)
        axis = rng.choice(3, size=n, p=face_area / face_area.sum())
        sign = rng.choice([-1.0, 1.0], size=n)
        p = rng.uniform(-1, 1, size=(n, 3)) * h
        p[np.arange(n), axis] = sign * h[axis]
        nrm = np.zeros((n, 3))
        nrm[np.arange(n), axis] = sign
        return p, nrm

    return Shape("box", sdf, sample, 8 * float(np.prod(h)), 2 * float(face_area.sum()))


# ---- torus around the +Y axis (lying in the XZ plane) -------------------------------------------
def torus(major: float = 0.55, minor: float = 0.2) -> Shape:
    def sdf(x):
        q = torch.stack([torch.sqrt(x[:, 0] ** 2 + x[:, 2] ** 2) - major, x[:, 1]], dim=-1)
        return q.norm(dim=-1) - minor

    def sample(n, seed=0):
        rng = np.random.default_rng(seed)
        out_u, out_v = [], []
        # Area element is proportional to (major + minor cos v): rejection-sample v.
        while sum(len(u) for u in out_u) < n:
            u = rng.uniform(0, 2 * math.pi, 2 * n)
            v = rng.uniform(0, 2 * math.pi, 2 * n)
            keep = rng.uniform(0, major + minor, 2 * n) < major + minor * np.cos(v)
            out_u.append(u[keep])
            out_v.append(v[keep])
        u, v = np.concatenate(out_u)[:n], np.concatenate(out_v)[:n]
        nrm = np.stack([np.cos(v) * np.cos(u), np.sin(v), np.cos(v) * np.sin(u)], 1)
        ring = np.stack([major * np.cos(u), np.zeros(n), major * np.sin(u)], 1)
        return ring + minor * nrm, nrm

    return Shape("torus", sdf, sample, 2 * math.pi**2 * major * minor**2, 4 * math.pi**2 * major * minor)


# ---- grille: parallel capsules (rods) a few voxels thick -----------------------------------------
def grille(radius: float = 0.035, count: int = 6, half_length: float = 0.45, gap: float | None = None) -> Shape:
    """``count`` capsules along Z, side by side along X, radius ``radius`` and ``gap`` (default
    2*radius) apart: fine detail with a curved cross-section, so a mesh decimated below what the
    rods need loses them (a box survives decimation to 12 triangles; a rod 3 voxels thick does
    not). The rods are disjoint and convex, so min() of their exact SDFs is exact everywhere (inside a
    rod the nearest surface is its own) and area-uniform samples are exact too."""
    gap = 2 * radius if gap is None else gap
    pitch = 2 * radius + gap
    xs = (np.arange(count) - (count - 1) / 2) * pitch

    def sdf(x):
        c = torch.as_tensor(xs, dtype=x.dtype, device=x.device)
        # distance to each rod's axis segment (x = c, y = 0, |z| <= half_length)
        dz = (x[:, 2:3].abs() - half_length).clamp(min=0)
        d = torch.sqrt((x[:, 0:1] - c) ** 2 + x[:, 1:2] ** 2 + dz ** 2) - radius
        return d.min(dim=1).values

    side = 2 * math.pi * radius * 2 * half_length  # cylinder part of one rod
    caps = 4 * math.pi * radius ** 2  # the two hemispheres

    def sample(n, seed=0):
        rng = np.random.default_rng(seed)
        rod = rng.integers(0, count, n)
        on_side = rng.uniform(0, side + caps, n) < side
        nrm = rng.normal(size=(n, 3))
        nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
        z = np.where(nrm[:, 2] >= 0, half_length, -half_length)  # hemisphere centre by the normal's side
        ang = rng.uniform(0, 2 * math.pi, n)
        side_n = np.stack([np.cos(ang), np.sin(ang), np.zeros(n)], 1)
        nrm = np.where(on_side[:, None], side_n, nrm)
        z = np.where(on_side, rng.uniform(-half_length, half_length, n), z)
        centre = np.stack([xs[rod], np.zeros(n), z], 1)
        return centre + radius * nrm, nrm

    volume = count * (math.pi * radius ** 2 * 2 * half_length + 4 / 3 * math.pi * radius ** 3)
    return Shape("grille", sdf, sample, volume, count * (side + caps))


def union_density(*fns: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Density of several objects together (max), e.g. an object plus a floater."""
    def density(x):
        return torch.stack([f(x) for f in fns], 0).max(0).values
    return density


SHAPES = {"sphere": sphere, "box": box, "torus": torus, "grille": grille}
