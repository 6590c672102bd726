"""Volume rendering of the field: rays, stratified samples inside the bounding sphere, alpha
compositing, normals from the density gradient, and the three shading modes.

Shading (paper §3.1): ``colour = albedo * (ambient + (1 - ambient) * max(0, n·l))`` with a point
light; "textureless" replaces the albedo by white, so only geometry can explain the image;
"albedo" skips shading altogether.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from .cameras import CameraBatch

SHADING_MODES = ("albedo", "shaded", "textureless")


@dataclass
class RenderOutput:
    image: torch.Tensor  # (B, 3, H, W) in [0, 1], composited over the background
    opacity: torch.Tensor  # (B, 1, H, W) accumulated alpha
    depth: torch.Tensor  # (B, 1, H, W) expected distance along the ray (0 where empty)
    # Per evaluated sample, packed, for the losses (engine/losses.py): compositing weights (S,),
    # world normals (S, 3) if computed, the sample's ray in the flattened (B*H*W) rays, and the
    # rays' unit directions (B*H*W, 3).
    weights: torch.Tensor
    normals: torch.Tensor | None
    ray_index: torch.Tensor
    dirs: torch.Tensor
    normal_image: torch.Tensor | None = None  # (B, 3, H, W) composited world normals, if computed


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


def density_normals(field, points: torch.Tensor, create_graph: bool, method: str = "finite_difference",
                    eps: float = 1e-2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Density, albedo and unit normals n = -∇σ/|∇σ| at ``points`` (the paper's normals).

    ``finite_difference`` (default) takes central differences of the density: six extra forward
    passes, but no double backward, which through a hash grid's gather is ~10x slower on CPU
    (measured: 3.2 s vs 0.3 s per 32x32 step). ``analytic`` uses autograd; with ``create_graph``
    its normals stay differentiable so shading gradients reach the geometry (FD normals always do)."""
    if method == "analytic":
        with torch.enable_grad():
            pts = points.detach().requires_grad_(True) if not points.requires_grad else points
            sigma, albedo = field(pts)
            grad = torch.autograd.grad(sigma.sum(), pts, create_graph=create_graph)[0]
    else:
        sigma, albedo = field(points)
        offsets = torch.eye(3, device=points.device, dtype=points.dtype) * eps
        shifted = torch.cat([points[None] + offsets[:, None], points[None] - offsets[:, None]]).reshape(-1, 3)
        s = field.density(shifted).reshape(2, 3, -1)
        grad = ((s[0] - s[1]) / (2 * eps)).T
    normals = -F.normalize(grad, dim=-1, eps=1e-6)
    return sigma, albedo, normals


def render(
    field,
    background,
    cameras: CameraBatch,
    resolution: int,
    samples_per_ray: int,
    shading: str = "albedo",
    light_positions: torch.Tensor | None = None,
    ambient: float = 0.1,
    generator: torch.Generator | None = None,
    perturb: bool = True,
    need_normals: bool | None = None,
    normals: str = "finite_difference",
) -> RenderOutput:
    """Render B square images of ``resolution`` pixels. Differentiable w.r.t. field and background."""
    if shading not in SHADING_MODES:
        raise ValueError(f"unknown shading mode {shading!r}")
    bsz, h, w = len(cameras), resolution, resolution
    device = cameras.c2w.device
    origins, dirs = camera_rays(cameras, h, w)  # (B, R, 3)
    near, far, hit = sphere_near_far(origins, dirs, field.bound)
    n = samples_per_ray
    steps = torch.linspace(0.0, 1.0, n + 1, device=device)[:-1]  # bin starts
    if perturb:
        jitter = torch.rand(bsz, origins.shape[1], n, generator=generator, device="cpu").to(device) / n
    else:
        jitter = torch.full((bsz, origins.shape[1], n), 0.5 / n, device=device)
    t = near[..., None] + (far - near)[..., None] * (steps + jitter)  # (B, R, N)
    delta = (far - near)[..., None] / n  # constant bin width per ray
    pts = origins[..., None, :] + dirs[..., None, :] * t[..., None]  # (B, R, N, 3)

    # Only evaluate the field where the ray hits the sphere.
    mask = hit[..., None].expand(-1, -1, n)
    flat_pts = pts[mask]
    if need_normals is None:
        need_normals = shading != "albedo"
    if need_normals:
        sigma_f, albedo_f, normal_f = density_normals(field, flat_pts, create_graph=torch.is_grad_enabled(), method=normals)
    else:
        sigma_f, albedo_f = field(flat_pts)
        normal_f = None

    sigma = torch.zeros(bsz, origins.shape[1], n, device=device, dtype=sigma_f.dtype)
    sigma = sigma.masked_scatter(mask, sigma_f)
    alpha = 1.0 - torch.exp(-sigma * delta)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1.0 - alpha + 1e-10], dim=-1), dim=-1)[..., :-1]
    weights = alpha * trans  # (B, R, N)
    opacity = weights.sum(-1)

    if shading == "textureless":
        colour_f = torch.ones_like(albedo_f)
    else:
        colour_f = albedo_f
    if shading != "albedo":
        sample_batch = torch.arange(bsz, device=device)[:, None, None].expand(-1, origins.shape[1], n)[mask]
        light = light_positions[sample_batch]
        ldir = F.normalize(light - flat_pts, dim=-1)
        lambert = (normal_f * ldir).sum(-1).clamp_min(0.0)
        colour_f = colour_f * (ambient + (1.0 - ambient) * lambert)[:, None]

    colour = torch.zeros(bsz, origins.shape[1], n, 3, device=device, dtype=colour_f.dtype)
    colour = colour.masked_scatter(mask[..., None].expand(-1, -1, -1, 3), colour_f)
    rgb = (weights[..., None] * colour).sum(-2)
    bg = background(dirs)
    rgb = rgb + (1.0 - opacity[..., None]) * bg
    depth = (weights * t).sum(-1)

    if normal_f is not None:
        normals = torch.zeros(bsz, origins.shape[1], n, 3, device=device, dtype=normal_f.dtype)
        normals = normals.masked_scatter(mask[..., None].expand(-1, -1, -1, 3), normal_f)
        normal_img = (weights[..., None] * normals).sum(-2)
        normal_img = normal_img.reshape(bsz, h, w, 3).permute(0, 3, 1, 2)
    else:
        normal_img = None
    ray_index = torch.arange(bsz * origins.shape[1], device=device).reshape(bsz, -1, 1).expand(-1, -1, n)[mask]

    to_img = lambda x, c: x.reshape(bsz, h, w, c).permute(0, 3, 1, 2)  # noqa: E731
    return RenderOutput(
        image=to_img(rgb, 3).clamp(0.0, 1.0),
        opacity=to_img(opacity[..., None], 1),
        depth=to_img(depth[..., None], 1),
        weights=weights[mask],
        normals=normal_f,
        ray_index=ray_index,
        dirs=dirs.reshape(-1, 3),
        normal_image=normal_img,
    )
