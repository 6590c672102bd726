"""Shaded mesh renders in the NeRF renderer's conventions (engine/render/composite.py): "albedo",
"shaded" (albedo * (ambient + (1 - ambient) max(0, n.l)) with a point light per view) and
"textureless" (white, shaded); composited over the background model with the soft silhouette
coverage, so the SDS step takes a mesh render where it takes a NeRF render."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch.nn import functional as F

from ..cameras import CameraBatch
from ..render.composite import SHADING_MODES, lambert_factor, sample_colour
from ..render.rays import camera_rays
from .antialias import silhouette_coverage
from .normals import face_normals, vertex_normals
from .rasterize import MAX_PAIRS, Fragments, interpolate_packed, rasterize

NORMAL_MODES = ("face", "vertex")


@dataclass
class MeshRender:
    images: torch.Tensor  # (B,3,H,W) in [0,1], over the background
    opacity: torch.Tensor  # (B,1,H,W) soft coverage
    depth: torch.Tensor  # (B,1,H,W) along the camera's -Z, 0 where empty
    normals: torch.Tensor  # (B,3,H,W) world shading normals (towards the camera), 0 where empty
    points: torch.Tensor  # (B,H,W,3) world surface positions, 0 where empty
    face_id: torch.Tensor  # (B,H,W) long, -1 where empty
    fragments: Fragments

    @property
    def image(self) -> torch.Tensor:  # engine.render.RenderOutput's name
        return self.images


def render_mesh(verts: torch.Tensor, faces: torch.Tensor, cameras: CameraBatch, height: int, width: int, *,
                albedo_fn: Callable[[torch.Tensor], torch.Tensor] | None = None, vertex_colors: torch.Tensor | None = None,
                shading: str = "albedo", light_positions: torch.Tensor | None = None, ambient: float = 0.1,
                background: Callable[[torch.Tensor], torch.Tensor] | torch.Tensor | None = None,
                normals: str = "face", antialias: bool = True, cull_backfaces: bool = False,
                max_pairs: int = MAX_PAIRS) -> MeshRender:
    """Render the mesh in every camera. The surface colour is ``albedo_fn(points (N,3)) -> (N,3)``
    at the visible surface points (e.g. a NeRFField's ``albedo``), or ``vertex_colors`` (V,3)
    interpolated, or mid grey. ``background``: a module of ray directions (N,3) -> (N,3) (the
    engine's background models), a colour (3,), or None (black). ``normals``: "face" (flat, the
    geometry as it is) or "vertex" (interpolated, smooth); either is turned to face the camera, so
    meshes with inconsistent winding shade the same."""
    if shading not in SHADING_MODES:
        raise ValueError(f"unknown shading mode {shading!r}: choose one of {', '.join(SHADING_MODES)}")
    if normals not in NORMAL_MODES:
        raise ValueError(f"unknown normals {normals!r}: choose one of {', '.join(NORMAL_MODES)}")
    if shading != "albedo" and light_positions is None:
        raise ValueError(f"shading {shading!r} needs light_positions (B,3)")
    faces = faces.long()
    bsz, h, w = len(cameras), height, width
    frags = rasterize(verts, faces, cameras, h, w, cull_backfaces=cull_backfaces, max_pairs=max_pairs)
    n_pix = bsz * h * w
    cam = torch.div(frags.pix, h * w, rounding_mode="floor")
    points = interpolate_packed(verts, frags, faces)  # (N,3)
    if normals == "face":
        nrm = face_normals(verts, faces).index_select(0, frags.pix_face)
    else:
        nrm = F.normalize(interpolate_packed(vertex_normals(verts, faces), frags, faces), dim=-1, eps=1e-20)
    # Turn each normal towards its camera (two-sided shading; the geometric normal decides the side).
    geo = face_normals(verts, faces).index_select(0, frags.pix_face)
    to_cam = cameras.origins.to(verts.dtype).index_select(0, cam) - points
    flip = torch.where((geo * to_cam).sum(-1, keepdim=True) < 0, -1.0, 1.0).to(nrm.dtype)
    nrm = nrm * flip.detach()

    if albedo_fn is not None:
        albedo = albedo_fn(points)
    elif vertex_colors is not None:
        albedo = interpolate_packed(vertex_colors, frags, faces)
    else:
        albedo = torch.full_like(points, 0.5)
    factor = None
    if shading != "albedo":
        lights = light_positions.to(points.dtype).index_select(0, cam)
        factor = lambert_factor(points, nrm, lights, ambient)
    colour = sample_colour(shading, albedo, factor)

    dense = lambda x: x.new_zeros(n_pix, x.shape[-1]).index_copy(0, frags.pix, x)  # noqa: E731
    colour_img = dense(colour)
    if antialias:
        alpha, src = silhouette_coverage(frags, faces)
        alpha = alpha.reshape(-1, 1).to(colour.dtype)
        # Empty pixels that gain coverage show the colour of the covered neighbour they gain it from.
        colour_img = torch.where((src >= 0)[:, None], colour_img.index_select(0, src.clamp_min(0)), colour_img)
    else:
        alpha = frags.mask.reshape(-1, 1).to(colour.dtype)
    bg = _background(background, cameras, h, w, colour)
    rgb = colour_img * alpha + bg * (1.0 - alpha)

    to_img = lambda x: x.reshape(bsz, h, w, -1).permute(0, 3, 1, 2)  # noqa: E731
    return MeshRender(
        images=to_img(rgb).clamp(0.0, 1.0), opacity=to_img(alpha), depth=frags.depth[:, None],
        normals=to_img(dense(nrm)), points=dense(points).reshape(bsz, h, w, 3), face_id=frags.face_id,
        fragments=frags,
    )


def _background(background, cameras: CameraBatch, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    n = len(cameras) * h * w
    if background is None:
        return like.new_zeros(n, 3)
    if isinstance(background, torch.Tensor):
        return background.to(like).reshape(1, 3).expand(n, 3)
    _, dirs = camera_rays(cameras, h, w)
    return background(dirs.reshape(-1, 3)).to(like.dtype)
