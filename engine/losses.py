"""Regularisers computed from a render's outputs, next to the SDS loss (not inside the renderer).

The renderer hands back what these need, per evaluated sample (packed, so the same code serves a
renderer that skips empty space): compositing ``weights`` (S,), world ``normals`` (S, 3) where
computed, ``ray_index`` (S,) into the flattened rays, and the rays' unit ``dirs`` (n_rays, 3).
"""

from __future__ import annotations

import torch

from .render.query import forward_difference_normals


# A ray counts as non-empty (for the orientation average) above this opacity: our dense samples give
# every ray through the sphere a tiny opacity, where threestudio's occupancy-pruned renderer gives 0.
NONEMPTY_OPACITY = 0.01


def orientation_loss(out, average: str = "all_rays") -> torch.Tensor:
    """Ref-NeRF / DreamFusion orientation term: visible normals facing away from the camera,
    ``sum_i w_i * max(0, n_i·d)^2`` per ray, averaged over all rays or, with
    ``average="nonempty_rays"`` (threestudio), over the rays that hit something, so the penalty per
    surface ray does not shrink when the object covers less of the frame. The weights are detached
    so the term turns normals without moving where the surface is. Zero when the render took no normals."""
    if out.normals is None:
        return torch.zeros((), device=out.weights.device)
    facing = (out.normals * out.dirs[out.ray_index]).sum(-1).clamp_min(0.0)
    total = (out.weights.detach() * facing**2).sum()
    if average == "nonempty_rays":
        return total / (out.opacity > NONEMPTY_OPACITY).sum().clamp_min(1)
    if average != "all_rays":
        raise ValueError(f"unknown orientation average {average!r}")
    return total / out.dirs.shape[0]


def opacity_loss(out) -> torch.Tensor:
    """A smooth L1 on accumulated alpha: keeps empty space empty (no fog)."""
    return torch.sqrt(out.opacity**2 + 0.01).mean()


def opacity_entropy_loss(out) -> torch.Tensor:
    """Mean binary entropy (bits) of the rays' accumulated opacity: 0 for rays fully empty or fully
    opaque, 1 at half opacity. A soft fringe makes the object's edge depend on the level a mesh is cut
    at; this term (stable-dreamfusion's ``lambda_entropy``) pushes the fringe to one side or the other."""
    a = out.opacity.clamp(1e-5, 1.0 - 1e-5)
    return (-a * torch.log2(a) - (1.0 - a) * torch.log2(1.0 - a)).mean()


# Surface samples the 3D normal-smoothness term looks at per step: ~8 density evaluations each.
SMOOTH_POINTS = 256


def normal_smoothness_loss(field, out, jitter: float, generator: torch.Generator,
                           points: int = SMOOTH_POINTS, cap: float | None = None) -> torch.Tensor:
    """threestudio's 3D normal smoothness: mean |n(x) - n(x + e)|^2 over samples x drawn by their
    compositing weight (the visible surface) and e ~ N(0, jitter^2) per axis. The prior sees 32-px
    renders, so bumps a few pixels wide (the sinusoidal field's ripples) cost it nothing; this term
    makes them cost something. Normals by forward differences of the density, as the renderer's.
    ``cap`` (config normal_smooth_cap): each pair costs cap·d²/(d² + cap) instead of d², about the
    same for gentle bumps and at most ``cap``, so the prompt's edges are not rounded away."""
    w = out.weights.detach()
    idx = torch.multinomial(w + 1e-12, points, replacement=True, generator=generator)
    x = out.points.index_select(0, idx)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    both = torch.cat([x, x + jitter * noise])
    n = forward_difference_normals(field, both, field.density(both))
    d2 = ((n[:points] - n[points:]) ** 2).sum(-1)
    if cap is not None:  # robust (Geman-McClure) form: ~d2 for gentle bumps, at most `cap` across an edge
        d2 = cap * d2 / (d2 + cap)
    return d2.mean()
