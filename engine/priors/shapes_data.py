"""The ``builtin:shapes`` world: five analytic shapes in four colours, their exact occupancy, and a
vectorised sphere-tracing renderer that draws them the way the engine renders its NeRF.

Conventions (docs/ARCHITECTURE.md, engine/cameras.py): +Y up, front faces +Z, scene inside the unit
bounding sphere. Every shape is centred at the origin with its axis along +Y and fits inside radius
0.6. Cameras come from :func:`engine.cameras.sample_cameras` with its default ranges (the engine's
training distribution), rays are pinhole OpenGL rays through pixel centres with the focal length given
as a fraction of the image width (as ``engine.render.camera_rays``), lights from
:func:`engine.cameras.sample_light_positions`, and shading is the engine's Lambertian
``rgb = albedo * (ambient + (1 - ambient) * max(0, n·l))`` over a white background.

Because shading is linear in the albedo and in the ambient term, a view is stored colour-free as two
channels per pixel, averaged over the 2x2 supersamples:

* ``coverage`` C = mean(hit)
* ``diffuse``  D = mean(hit * max(0, n·l))

and any colour / ambient is composed exactly afterwards (:func:`compose`)::

    rgb = albedo * (ambient * C + (1 - ambient) * D) + (1 - C)      # white background
"""

from __future__ import annotations

import math
import re

import torch
from torch.nn import functional as F

from ..cameras import CameraBatch, sample_cameras, sample_light_positions, view_prompt

SHAPES = ("sphere", "cube", "cylinder", "cone", "torus")
COLOURS = {
    "red": (0.85, 0.12, 0.10),
    "green": (0.15, 0.70, 0.20),
    "blue": (0.12, 0.25, 0.85),
    "yellow": (0.92, 0.80, 0.10),
}

# Sizes (all inside radius 0.6 of the origin).
SPHERE_R = 0.5
CUBE_HALF = 0.34  # corner at 0.589
CYL_R, CYL_H = 0.35, 0.45  # radius, half height: rim at 0.570
CONE_R, CONE_H = 0.42, 0.42  # base radius at y=-H, apex at y=+H: base rim at 0.594
TORUS_R, TORUS_r = 0.4, 0.15  # major / minor radius, ring in the XZ plane: 0.55

SCENE_RADIUS = 0.6


def colour_rgb(name: str) -> torch.Tensor:
    return torch.tensor(COLOURS[name], dtype=torch.float32)


def caption(colour: str, shape: str, label: str | None = None) -> str:
    """``"a red cube"``, or with a view label ``"a red cube, side view"`` (cameras.view_prompt)."""
    text = f"a {colour} {shape}"
    return view_prompt(text, label) if label else text


def all_prompts() -> list[str]:
    return [caption(c, s) for s in SHAPES for c in COLOURS]


_WORD = re.compile(r"[a-z]+")


def parse_prompt(prompt: str) -> tuple[str, str] | None:
    """``"a red cube"`` / ``"A red cube, side view"`` -> ``("red", "cube")``; None if the prompt does not
    name exactly one known colour and one known shape."""
    words = _WORD.findall(prompt.lower())
    colours = {w for w in words if w in COLOURS}
    shapes = {w for w in words if w in SHAPES}
    if len(colours) != 1 or len(shapes) != 1:
        return None
    return colours.pop(), shapes.pop()


# --- signed distances ------------------------------------------------------------------------------
# Each function is 1-Lipschitz, negative exactly inside the shape and zero on its surface, so it is
# safe for sphere tracing; sphere, cube, cylinder and torus are exact Euclidean SDFs, the cone is the
# max of two 1-Lipschitz half-space distances (exact zero set, a lower bound of the distance outside).

def _sdf_sphere(p):
    return p.norm(dim=-1) - SPHERE_R


def _sdf_cube(p):
    q = p.abs() - CUBE_HALF
    return q.clamp_min(0).norm(dim=-1) + q.max(dim=-1).values.clamp_max(0)


def _sdf_cylinder(p):
    d = torch.stack([p[..., [0, 2]].norm(dim=-1) - CYL_R, p[..., 1].abs() - CYL_H], dim=-1)
    return d.max(dim=-1).values.clamp_max(0) + d.clamp_min(0).norm(dim=-1)


_CONE_N = torch.tensor([2 * CONE_H, CONE_R]) / math.hypot(2 * CONE_H, CONE_R)  # outward normal of the side line


def _sdf_cone(p):
    radial = p[..., [0, 2]].norm(dim=-1)
    side = radial * float(_CONE_N[0]) + (p[..., 1] - CONE_H) * float(_CONE_N[1])
    caps = p[..., 1].abs() - CONE_H
    return torch.maximum(side, caps)


def _sdf_torus(p):
    q = torch.stack([p[..., [0, 2]].norm(dim=-1) - TORUS_R, p[..., 1]], dim=-1)
    return q.norm(dim=-1) - TORUS_r


SDF = {"sphere": _sdf_sphere, "cube": _sdf_cube, "cylinder": _sdf_cylinder, "cone": _sdf_cone, "torus": _sdf_torus}


def sdf(name: str, points: torch.Tensor) -> torch.Tensor:
    if name not in SDF:
        raise KeyError(f"unknown shape {name!r}; known: {', '.join(SHAPES)}")
    return SDF[name](points)


def occupancy(name: str, points: torch.Tensor) -> torch.Tensor:
    """Exact inside test for world points (N,3) -> bool (N,) (for volumetric IoU)."""
    return sdf(name, points.float()) <= 0.0


def normals(name: str, points: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Outward unit normals by central differences of the SDF."""
    offs = torch.eye(3, dtype=points.dtype) * eps
    g = torch.stack([sdf(name, points + o) - sdf(name, points - o) for o in offs], dim=-1)
    return F.normalize(g, dim=-1)


# --- rendering ---------------------------------------------------------------------------------------

def camera_rays(cameras: CameraBatch, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, size*size, 3) origins and unit directions through pixel centres (as engine.render)."""
    j, i = torch.meshgrid(torch.arange(size, dtype=torch.float32) + 0.5, torch.arange(size, dtype=torch.float32) + 0.5, indexing="ij")
    focal_px = cameras.focal.cpu()[:, None, None] * size
    x = (i[None] - size * 0.5) / focal_px
    y = -(j[None] - size * 0.5) / focal_px
    dirs_cam = torch.stack([x, y, -torch.ones_like(x)], dim=-1).reshape(len(cameras), -1, 3)
    c2w = cameras.c2w.cpu()
    dirs = F.normalize(torch.einsum("bij,bnj->bni", c2w[:, :3, :3], dirs_cam), dim=-1)
    return c2w[:, None, :3, 3].expand_as(dirs), dirs


def sphere_trace(name: str, origins: torch.Tensor, dirs: torch.Tensor, steps: int = 96, eps: float = 1e-3):
    """Sphere-trace flat rays (N,3): returns hit (N,) bool and hit points (N,3)."""
    # Start on the bounding sphere of the scene (radius SCENE_RADIUS + margin).
    b = (origins * dirs).sum(-1)
    c = (origins * origins).sum(-1) - (SCENE_RADIUS + 0.02) ** 2
    disc = b * b - c
    live = disc > 0
    sq = disc.clamp_min(0).sqrt()
    t = (-b - sq).clamp_min(0)
    t_far = -b + sq
    hit = torch.zeros_like(live)
    idx = live.nonzero().squeeze(-1)
    for _ in range(steps):
        if idx.numel() == 0:
            break
        p = origins[idx] + t[idx, None] * dirs[idx]
        d = sdf(name, p)
        t[idx] = t[idx] + d
        done_hit = d < eps
        gone = t[idx] > t_far[idx]
        hit[idx[done_hit]] = True
        idx = idx[~(done_hit | gone)]
    points = origins + t[:, None] * dirs
    return hit, points


def render_views(name: str, cameras: CameraBatch, lights: torch.Tensor, size: int, supersample: int = 2) -> torch.Tensor:
    """Colour-free render of one shape for B cameras: (B, 2, size, size) float = [coverage, diffuse]
    (see the module docstring), supersampled ``supersample``² per pixel."""
    hi = size * supersample
    origins, dirs = camera_rays(cameras, hi)
    B, N, _ = dirs.shape
    o, d = origins.reshape(-1, 3).contiguous(), dirs.reshape(-1, 3).contiguous()
    hit, pts = sphere_trace(name, o, d)
    lam = torch.zeros(B * N)
    if hit.any():
        hp = pts[hit]
        n = normals(name, hp)
        light = lights.cpu()[:, None, :].expand(B, N, 3).reshape(-1, 3)[hit]
        ldir = F.normalize(light - hp, dim=-1)
        lam[hit] = (n * ldir).sum(-1).clamp_min(0)
    cov = hit.float().reshape(B, 1, hi, hi)
    dif = lam.reshape(B, 1, hi, hi)
    out = torch.cat([cov, dif], dim=1)
    return F.avg_pool2d(out, supersample) if supersample > 1 else out


def compose(cd: torch.Tensor, albedo: torch.Tensor, ambient: torch.Tensor) -> torch.Tensor:
    """(B,2,H,W) coverage/diffuse + albedo (B,3) + ambient (B,) -> RGB (B,3,H,W) in [0,1] on white."""
    cov, dif = cd[:, :1], cd[:, 1:2]
    a = ambient.view(-1, 1, 1, 1)
    shade = a * cov + (1 - a) * dif
    return (albedo.view(-1, 3, 1, 1) * shade + (1 - cov)).clamp(0, 1)


def render_dataset(views_per_shape: int, size: int, seed: int, supersample: int = 2, chunk: int = 64, log=None):
    """Cameras/lights drawn once per shape with the engine's samplers. Returns a dict of numpy arrays:
    ``cd`` (S, V, 2, size, size) float16, ``azimuth``/``elevation``/``distance``/``focal`` (S, V),
    ``labels`` (S, V) int index into VIEW_LABELS."""
    import numpy as np

    from ..cameras import VIEW_LABELS

    g = torch.Generator().manual_seed(seed)
    cds, meta = [], {k: [] for k in ("azimuth", "elevation", "distance", "focal", "labels")}
    for s, name in enumerate(SHAPES):
        cams = sample_cameras(views_per_shape, g)
        lights = sample_light_positions(cams, g)
        parts = []
        for k in range(0, views_per_shape, chunk):
            parts.append(render_views(name, cams[k:k + chunk], lights[k:k + chunk], size, supersample))
        cds.append(torch.cat(parts).half().numpy())
        meta["azimuth"].append(cams.azimuth.numpy())
        meta["elevation"].append(cams.elevation.numpy())
        meta["distance"].append(cams.distance.numpy())
        meta["focal"].append(cams.focal.numpy())
        meta["labels"].append(np.array([VIEW_LABELS.index(l) for l in cams.labels()], dtype=np.int64))
        if log:
            log(f"rendered {views_per_shape} views of {name}")
    out = {k: np.stack(v) for k, v in meta.items()}
    out["cd"] = np.stack(cds)
    return out
