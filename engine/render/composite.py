"""Shading and alpha compositing.

Shading (paper §3.1): ``colour = albedo * (ambient + (1 - ambient) * max(0, n·l))`` with a point
light; "textureless" replaces the albedo by white, so only geometry can explain the image;
"albedo" skips shading altogether."""

from __future__ import annotations

import torch
from torch.nn import functional as F

SHADING_MODES = ("albedo", "shaded", "textureless")


def compositing_weights(sigma: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """w_i = alpha_i * prod_{j<i} (1 - alpha_j) along the last axis, alpha = 1 - exp(-sigma delta)."""
    alpha = 1.0 - torch.exp(-sigma * delta)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1.0 - alpha + 1e-10], dim=-1), dim=-1)[..., :-1]
    return alpha * trans


def lambert_factor(points: torch.Tensor, normals: torch.Tensor, lights: torch.Tensor, ambient: float) -> torch.Tensor:
    """ambient + (1 - ambient) * max(0, n·l) per point (S,), lights (S, 3) the point's light position."""
    ldir = F.normalize(lights - points, dim=-1)
    return ambient + (1.0 - ambient) * (normals * ldir).sum(-1).clamp_min(0.0)


def sample_colour(shading: str, albedo: torch.Tensor, factor: torch.Tensor | None) -> torch.Tensor:
    """Colour (S, 3) of each sample in a shading mode; ``factor`` is the shading factor (S,)."""
    if shading not in SHADING_MODES:
        raise ValueError(f"unknown shading mode {shading!r}")
    colour = torch.ones_like(albedo) if shading == "textureless" else albedo
    return colour if shading == "albedo" else colour * factor[:, None]


def ray_sum(values: torch.Tensor, ray_index: torch.Tensor, n_rays: int) -> torch.Tensor:
    """Per-ray sums of packed per-sample values (S, C) -> (n_rays, C)."""
    out = torch.zeros(n_rays, values.shape[1], device=values.device, dtype=values.dtype)
    return out.index_add(0, ray_index, values)
