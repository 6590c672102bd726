"""Triangle rasterisation in pure PyTorch: per-pixel face id, perspective-correct barycentrics, depth.

Two passes (why: the visibility search is large and needs no gradient; the gradient needs only the
winner of each pixel):

1. Visibility, without gradient. Every face enumerates the pixel centres in its screen bounding box
   (a face "bins" itself into the pixels it can cover); the (pixel, face) candidates are tested with
   edge functions and their depth computed, in chunks of about ``max_pairs`` candidates so memory
   stays bounded whatever the mesh. The nearest candidate per pixel wins through one int64
   ``scatter_reduce(amin)`` on a key (depth bits << 32 | face id): positive float32 bit patterns sort
   like the floats, and ties go to the lower face id, so the result is deterministic.
2. Barycentrics, differentiable: for the covered pixels only, the winner's corners are projected
   again with autograd on and the perspective-correct barycentrics and depth recomputed.

Camera convention: engine.render.rays.camera_rays (OpenGL camera space, focal in image widths, pixel
centres at +0.5), so a mesh render and a NeRF render of one CameraBatch align pixel for pixel.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..cameras import CameraBatch

#: Candidates (pixel, face) per visibility chunk: ~40 bytes of temporaries each, so ~160 MiB.
MAX_PAIRS = 1 << 22
#: Faces with a corner closer than this to the camera plane (or behind it) are not drawn.
NEAR = 1e-3
_NO_HIT = torch.iinfo(torch.int64).max


@dataclass
class Fragments:
    face_id: torch.Tensor  # (B,H,W) long, -1 where empty
    bary: torch.Tensor  # (B,H,W,3) perspective-correct, differentiable w.r.t. verts; 0 where empty
    depth: torch.Tensor  # (B,H,W) distance along the camera's -Z, differentiable; 0 where empty
    mask: torch.Tensor  # (B,H,W) bool
    # Packed over the covered pixels, for interpolate / antialias without touching empty pixels:
    pix: torch.Tensor  # (N,) flat index into B*H*W
    pix_face: torch.Tensor  # (N,) face id
    pix_bary: torch.Tensor  # (N,3) differentiable
    screen: torch.Tensor  # (B,V,2) projected vertex positions in pixels (x right, y down), differentiable
    inv_z: torch.Tensor  # (B,V) 1 / depth of every vertex, differentiable

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.face_id.shape)


def project(verts: torch.Tensor, cameras: CameraBatch, height: int, width: int):
    """Screen positions (B,V,2) in pixels (pixel (i, j) has its centre at (i + .5, j + .5)) and the
    depth along -Z (B,V) of every vertex in every camera."""
    c2w = cameras.c2w.to(verts.dtype)
    rot, origin = c2w[:, :3, :3], c2w[:, :3, 3]
    cam = torch.einsum("bji,bvj->bvi", rot, verts[None] - origin[:, None])  # R^T (v - o)
    z = -cam[..., 2]
    f = (cameras.focal.to(verts.dtype) * width)[:, None]
    zs = z.clamp_min(NEAR)  # behind-camera corners: finite numbers (their faces are culled anyway)
    sx = width * 0.5 + f * cam[..., 0] / zs
    sy = height * 0.5 - f * cam[..., 1] / zs
    return torch.stack([sx, sy], -1), z


def _edge_bary(tri: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Screen-space barycentrics (..., 3) of points (px, py) in triangles tri (..., 3, 2)."""
    x0, y0, x1, y1, x2, y2 = tri[..., 0, 0], tri[..., 0, 1], tri[..., 1, 0], tri[..., 1, 1], tri[..., 2, 0], tri[..., 2, 1]
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    e0 = (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)  # opposite corner 0
    e1 = (x0 - x2) * (py - y2) - (y0 - y2) * (px - x2)
    e2 = (x1 - x0) * (py - y0) - (y1 - y0) * (px - x0)
    safe = torch.where(area.abs() > 1e-12, area, torch.ones_like(area))
    return torch.stack([e0, e1, e2], -1) / safe[..., None]


@torch.no_grad()
def _visible_faces(screen: torch.Tensor, z: torch.Tensor, faces: torch.Tensor, height: int, width: int,
                   cull_backfaces: bool, max_pairs: int) -> torch.Tensor:
    """Face id (H*W,) of the nearest face at each pixel centre of one camera (-1: none)."""
    device = screen.device
    tri = screen[faces]  # (F,3,2)
    tz = z[faces]  # (F,3)
    area = ((tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1])
            - (tri[:, 2, 0] - tri[:, 0, 0]) * (tri[:, 1, 1] - tri[:, 0, 1]))
    ok = (tz > NEAR).all(1) & (area.abs() > 1e-12) & torch.isfinite(tri).all(2).all(1)
    if cull_backfaces:  # screen y points down: a counter-clockwise (front-facing) face has area < 0
        ok &= area < 0
    lo = tri.amin(1).clamp(-1.0, max(width, height) + 1.0)
    hi = tri.amax(1).clamp(-1.0, max(width, height) + 1.0)
    x0 = torch.ceil(lo[:, 0] - 0.5).long().clamp_min(0)
    x1 = torch.floor(hi[:, 0] - 0.5).long().clamp_max(width - 1)
    y0 = torch.ceil(lo[:, 1] - 0.5).long().clamp_min(0)
    y1 = torch.floor(hi[:, 1] - 0.5).long().clamp_max(height - 1)
    nx = (x1 - x0 + 1).clamp_min(0)
    ny = (y1 - y0 + 1).clamp_min(0)
    counts = torch.where(ok, nx * ny, torch.zeros_like(nx))
    best = torch.full((height * width,), _NO_HIT, dtype=torch.int64, device=device)
    cum = torch.cumsum(counts, 0)
    total = int(cum[-1]) if len(cum) else 0
    if total == 0:
        return torch.full((height * width,), -1, dtype=torch.int64, device=device)
    budget = max(int(max_pairs), height * width)  # one face's box always fits in a chunk
    # Chunks of consecutive faces with about ``budget`` candidates (at most twice that).
    marks = torch.arange(budget, total, budget, device=device) if total > budget else cum[:0]
    cuts = torch.searchsorted(cum, marks, right=False).tolist()
    bounds = [0] + sorted(set(int(c) for c in cuts)) + [len(faces)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b <= a:
            continue
        cnt = counts[a:b]
        n = int(cnt.sum())
        if n == 0:
            continue
        fid = torch.repeat_interleave(torch.arange(a, b, device=device), cnt)
        start = torch.cumsum(cnt, 0) - cnt
        local = torch.arange(n, device=device) - torch.repeat_interleave(start, cnt)
        w = nx.index_select(0, fid)
        col = x0.index_select(0, fid) + local % w
        row = y0.index_select(0, fid) + local // w
        del local, start, w
        l = _edge_bary(tri.index_select(0, fid), col.to(tri.dtype) + 0.5, row.to(tri.dtype) + 0.5)
        inside = (l >= 0).all(1)
        keep = inside.nonzero().squeeze(1)
        if len(keep) == 0:
            continue
        l, fid = l.index_select(0, keep), fid.index_select(0, keep)
        pix = (row * width + col).index_select(0, keep)
        inv = (l / tz.index_select(0, fid)).sum(1)
        depth = (1.0 / inv).float().clamp_min(0.0)
        key = (depth.view(torch.int32).to(torch.int64) << 32) | fid
        best.scatter_reduce_(0, pix, key, reduce="amin", include_self=True)
    return torch.where(best == _NO_HIT, torch.full_like(best, -1), best & 0xFFFFFFFF)


def rasterize(verts: torch.Tensor, faces: torch.Tensor, cameras: CameraBatch, height: int, width: int, *,
              cull_backfaces: bool = False, max_pairs: int = MAX_PAIRS) -> Fragments:
    """Rasterise the mesh (verts (V,3) float, faces (F,3) long) in every camera. Faces are two-sided
    unless ``cull_backfaces`` (counter-clockwise = front, as glTF)."""
    if verts.ndim != 2 or verts.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"verts must be (V,3) and faces (F,3), got {tuple(verts.shape)} and {tuple(faces.shape)}")
    faces = faces.long()
    bsz = len(cameras)
    screen, z = project(verts, cameras, height, width)
    face_id = torch.stack([
        _visible_faces(screen[b].detach(), z[b].detach(), faces, height, width, cull_backfaces, max_pairs)
        for b in range(bsz)
    ]).reshape(-1)
    pix = (face_id >= 0).nonzero().squeeze(1)
    pix_face = face_id.index_select(0, pix)
    cam = torch.div(pix, height * width, rounding_mode="floor")
    rest = pix - cam * height * width
    row, col = torch.div(rest, width, rounding_mode="floor"), rest % width
    corners = faces.index_select(0, pix_face)  # (N,3)
    tri = screen[cam[:, None], corners]  # (N,3,2), differentiable
    inv_z = 1.0 / z.clamp_min(NEAR)
    iz = inv_z[cam[:, None], corners]  # (N,3)
    l = _edge_bary(tri, col.to(tri.dtype) + 0.5, row.to(tri.dtype) + 0.5)
    w = l * iz
    inv_depth = w.sum(1, keepdim=True)
    pix_bary = w / inv_depth
    n = bsz * height * width
    bary = torch.zeros(n, 3, dtype=verts.dtype, device=verts.device).index_copy(0, pix, pix_bary)
    depth = torch.zeros(n, dtype=verts.dtype, device=verts.device).index_copy(0, pix, 1.0 / inv_depth[:, 0])
    shape = (bsz, height, width)
    return Fragments(
        face_id=face_id.reshape(shape), bary=bary.reshape(*shape, 3), depth=depth.reshape(shape),
        mask=(face_id >= 0).reshape(shape), pix=pix, pix_face=pix_face, pix_bary=pix_bary, screen=screen,
        inv_z=inv_z,
    )


def interpolate_packed(attr: torch.Tensor, frags: Fragments, faces: torch.Tensor) -> torch.Tensor:
    """``attr`` (V,C) or (B,V,C) at the covered pixels only: (N,C), in the order of ``frags.pix``."""
    corners = faces.long().index_select(0, frags.pix_face)  # (N,3)
    if attr.ndim == 2:
        vals = attr[corners]  # (N,3,C)
    else:
        bsz, h, w = frags.shape
        cam = torch.div(frags.pix, h * w, rounding_mode="floor")
        vals = attr[cam[:, None], corners]
    return (vals * frags.pix_bary[..., None].to(vals.dtype)).sum(1)


def interpolate(attr: torch.Tensor, frags: Fragments, faces: torch.Tensor) -> torch.Tensor:
    """Vertex attributes (V,C) or (B,V,C) interpolated to every pixel: (B,H,W,C), zeros where empty.
    Differentiable w.r.t. attr and, through the barycentrics, the vertex positions."""
    bsz, h, w = frags.shape
    packed = interpolate_packed(attr, frags, faces)
    out = packed.new_zeros(bsz * h * w, packed.shape[1]).index_copy(0, frags.pix, packed)
    return out.reshape(bsz, h, w, -1)
