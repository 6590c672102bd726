"""Rays and samples: camera rays through pixel centres, the bounding-sphere interval, stratified
samples along it, and packing (the samples worth evaluating, by flat index).

Packing is the one place a sample count becomes data-dependent; everything after it works on the
packed (S, ...) tensors and scatters back by index."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ..cameras import CameraBatch


def camera_rays(cameras: CameraBatch, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """World-space ray origins and unit directions, (B, H*W, 3) each, through pixel centres."""
    device = cameras.c2w.device
    j, i = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32) + 0.5,
        torch.arange(width, device=device, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    focal_px = cameras.focal[:, None, None] * width  # (B,1,1)
    x = (i[None] - width * 0.5) / focal_px
    y = -(j[None] - height * 0.5) / focal_px
    dirs_cam = torch.stack([x, y, -torch.ones_like(x)], dim=-1).reshape(len(cameras), -1, 3)
    dirs = torch.einsum("bij,bnj->bni", cameras.c2w[:, :3, :3], dirs_cam)
    dirs = F.normalize(dirs, dim=-1)
    origins = cameras.origins[:, None, :].expand_as(dirs)
    return origins, dirs


def sphere_near_far(origins: torch.Tensor, dirs: torch.Tensor, radius: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ray-sphere intersection: (near, far, hit mask). Rays that miss get near = far = 0."""
    b = (origins * dirs).sum(-1)
    c = (origins * origins).sum(-1) - radius**2
    disc = b * b - c
    hit = disc > 0
    sq = torch.sqrt(disc.clamp_min(0.0))
    near = (-b - sq).clamp_min(0.0)
    far = (-b + sq).clamp_min(0.0)
    near = torch.where(hit, near, torch.zeros_like(near))
    far = torch.where(hit, far, torch.zeros_like(far))
    return near, far, hit


def stratified_samples(near: torch.Tensor, far: torch.Tensor, n: int, perturb: bool,
                       generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances (..., n) of one sample per equal bin of [near, far] (jittered inside its bin when
    ``perturb``, else at the bin centre), and the bins' width (..., 1).

    The jitter is drawn on the generator's device: with a generator on the rays' device no copy
    (and on CUDA no host synchronisation) is needed."""
    device = near.device
    steps = torch.linspace(0.0, 1.0, n + 1, device=device)[:-1]  # bin starts
    shape = (*near.shape, n)
    if perturb:
        gen_device = generator.device if generator is not None else device
        jitter = torch.rand(shape, generator=generator, device=gen_device).to(device, non_blocking=True) / n
    else:
        jitter = torch.full(shape, 0.5 / n, device=device)
    t = near[..., None] + (far - near)[..., None] * (steps + jitter)
    delta = (far - near)[..., None] / n  # constant bin width per ray
    return t, delta


def pack(mask: torch.Tensor) -> torch.Tensor:
    """Flat indices (S,) of the True entries of ``mask``, in row-major order (as boolean indexing)."""
    return mask.reshape(-1).nonzero().squeeze(1)
