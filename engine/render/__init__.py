"""Volume rendering of the field, split by job:

- ``rays``: camera rays, the bounding-sphere interval, stratified samples, packing;
- ``engine.occupancy``: the occupancy grid that marks samples in empty space to skip;
- ``query``: density and albedo at the packed samples, normals from the density;
- ``composite``: compositing weights, shading, per-ray sums.

Only samples inside the sphere (and, with a grid, in occupied cells) are evaluated; normals are
taken only where they can change the image (compositing weight above a threshold) unless
``normal_samples="all"``. Packing (``rays.pack``) is exact, or with a ``packing.FixedCapacityPacker``
of fixed capacity, which needs no host synchronisation (the trainer's choice on accelerators). The reference path of the engine's first version is
``normals="finite_difference", normal_samples="all", occupancy=None``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..cameras import CameraBatch
from .composite import SHADING_MODES, compositing_weights, lambert_factor, ray_sum, sample_colour
from .query import NORMAL_METHODS, density_normals, normals_at
from .packing import FixedCapacityPacker
from .rays import camera_rays, pack, sphere_near_far, stratified_samples

__all__ = ["FixedCapacityPacker", "NORMAL_METHODS", "NORMAL_SAMPLES", "SHADING_MODES", "RenderOutput", "camera_rays", "density_normals",
           "render", "sphere_near_far"]

NORMAL_SAMPLES = ("weighted", "all")
# Samples below this compositing weight get no normal (their shading is ambient only). Measured on
# analytic boxes and spheres (tests/test_render_path.py): at 1e-3 a pixel moves by at most ~0.002
# against normals everywhere, while normals are taken for 5-20% of the evaluated samples (1e-4: 9-34%).
NORMAL_WEIGHT_THRESHOLD = 1e-3


@dataclass
class RenderOutput:
    image: torch.Tensor  # (B, 3, H, W) in [0, 1], composited over the background
    opacity: torch.Tensor  # (B, 1, H, W) accumulated alpha
    depth: torch.Tensor  # (B, 1, H, W) expected distance along the ray (0 where empty)
    # Per evaluated sample, packed, for the losses (engine/losses.py): compositing weights (S,),
    # world normals (S, 3) if computed (zero where a sample's weight was too small to need one), the
    # sample's ray in the flattened (B*H*W) rays, and the rays' unit directions (B*H*W, 3).
    weights: torch.Tensor
    normals: torch.Tensor | None
    ray_index: torch.Tensor
    dirs: torch.Tensor
    normal_image: torch.Tensor | None = None  # (B, 3, H, W) composited world normals, if asked for
    points: torch.Tensor | None = None  # (S, 3) the samples' world positions (no gradient), for 3D regularisers
    # With fixed-capacity packing: a 0-d bool on the device, True when more samples were selected than
    # the capacity holds (the render is then incomplete: the trainer skips that step's update).
    overflow: torch.Tensor | None = None


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
    normals: str = "forward_difference",
    normal_samples: str = "weighted",
    occupancy=None,
    want_normal_image: bool = False,
    normal_weight_threshold: float = NORMAL_WEIGHT_THRESHOLD,
    packer: FixedCapacityPacker | None = None,
) -> RenderOutput:
    """Render B square images of ``resolution`` pixels. Differentiable w.r.t. field and background.

    ``occupancy``: an ``engine.occupancy.OccupancyGrid`` (or None: evaluate every sample in the sphere).
    ``packer``: pack into fixed capacities (no host synchronisation; see ``out.overflow``), or None: exact."""
    if shading not in SHADING_MODES:
        raise ValueError(f"unknown shading mode {shading!r}")
    if normal_samples not in NORMAL_SAMPLES:
        raise ValueError(f"unknown normal_samples {normal_samples!r}: choose one of {', '.join(NORMAL_SAMPLES)}")
    if need_normals is None:
        need_normals = shading != "albedo"
    bsz, h, w, n = len(cameras), resolution, resolution, samples_per_ray
    origins, dirs = camera_rays(cameras, h, w)
    origins, dirs = origins.reshape(-1, 3), dirs.reshape(-1, 3)  # (BR, 3): all rays of all views
    n_rays = origins.shape[0]
    near, far, hit = sphere_near_far(origins, dirs, field.bound)
    t, delta = stratified_samples(near, far, n, perturb, generator)  # (BR, N), (BR, 1)
    pts = origins[:, None, :] + dirs[:, None, :] * t[..., None]  # (BR, N, 3)

    # Evaluate only samples inside the sphere and, with a grid, in occupied cells.
    mask = hit[:, None].expand(-1, n)
    if occupancy is not None:
        mask = mask & occupancy.occupied(pts)
    # Fixed-capacity indices may end in padding: one past the last sample, where a dummy sample
    # (weight 0, on the last ray) is appended, so padded slots add nothing to any sum.
    padded = packer is not None
    idx, overflow = _pack(mask, packer, "samples")
    ray_index = torch.div(idx, n, rounding_mode="floor").clamp_max(n_rays - 1)
    flat = _take(pts.reshape(-1, 3), idx, padded)
    create_graph = torch.is_grad_enabled()
    normal_p = None
    if need_normals and normal_samples == "all":
        sigma_p, albedo_p, normal_p = density_normals(field, flat, create_graph, method=normals)
    else:
        sigma_p, albedo_p = field(flat)

    sigma = torch.zeros(n_rays * n + 1, device=flat.device, dtype=sigma_p.dtype).index_copy(0, idx, sigma_p)[:-1]
    weights = compositing_weights(sigma.reshape(n_rays, n), delta)  # (BR, N); 0 where not evaluated
    w_p = _take(weights.reshape(-1), idx, padded)

    if need_normals and normal_p is None:
        # Normals only where the sample can show: weight above threshold (decided without gradient).
        want = w_p.detach() > normal_weight_threshold
        sel, over = _pack(want, packer, "normals", first_read=False)  # at most the packed samples: no read
        if padded:
            overflow = overflow | over
        n_sel = normals_at(field, _take(flat, sel, padded), _take(sigma_p, sel, padded), normals, create_graph)
        blank = _with_dummy(torch.zeros_like(flat)) if padded else torch.zeros_like(flat)
        normal_p = blank.index_copy(0, sel, n_sel)[: len(flat)]

    factor = None
    if shading != "albedo":
        lights = light_positions.index_select(0, torch.div(ray_index, h * w, rounding_mode="floor"))
        factor = lambert_factor(flat, normal_p, lights, ambient)  # ambient only where no normal was taken
    colour_p = sample_colour(shading, albedo_p, factor)
    rgb = ray_sum(w_p[:, None] * colour_p, ray_index, n_rays)
    opacity = weights.sum(-1)
    rgb = rgb + (1.0 - opacity[:, None]) * background(dirs)
    depth = (weights * t).sum(-1)

    if packer is not None:
        packer.record(overflow)
    to_img = lambda x, c: x.reshape(bsz, h, w, c).permute(0, 3, 1, 2)  # noqa: E731
    normal_img = None
    if want_normal_image and normal_p is not None:
        normal_img = to_img(ray_sum(w_p[:, None] * normal_p, ray_index, n_rays), 3)
    return RenderOutput(
        image=to_img(rgb, 3).clamp(0.0, 1.0),
        opacity=to_img(opacity[:, None], 1),
        depth=to_img(depth[:, None], 1),
        weights=w_p,
        normals=normal_p,
        ray_index=ray_index,
        dirs=dirs,
        normal_image=normal_img,
        overflow=overflow,
        points=flat.detach(),
    )


def _pack(mask: torch.Tensor, packer: FixedCapacityPacker | None, site: str, **kwargs):
    """(indices, overflow) of ``mask``'s True entries: exact (overflow None), or into the packer's
    fixed capacity for ``site`` (padding indices point one past the end)."""
    if packer is None:
        return pack(mask), None
    return packer.pack(mask, site, **kwargs)


def _take(x: torch.Tensor, idx: torch.Tensor, padded: bool) -> torch.Tensor:
    """Rows ``idx`` of ``x``; with padded (fixed-capacity) indices, the one past the end is a zero row."""
    return (_with_dummy(x) if padded else x).index_select(0, idx)


def _with_dummy(x: torch.Tensor) -> torch.Tensor:
    """``x`` (S, ...) with one zero row appended: where packing's padding indices point."""
    return torch.cat([x, x.new_zeros((1, *x.shape[1:]))])
