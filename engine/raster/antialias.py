"""Soft coverage at silhouette edges, with gradients to the vertex positions.

A hard mask has no gradient with respect to where an edge lies. Here, for every pair of
4-neighbour pixels where one is covered (face f) and the other is empty, the barycentric of f that
reaches 0 first on the way from the covered centre to the empty one names the silhouette edge
crossed. A barycentric is affine on screen, so l / (|dl/dx| + |dl/dy|) is the signed distance to
that edge's line in the L1 sense, and a pixel's coverage is 0.5 + that distance, clamped to [0, 1]
(the covered pixel loses, the empty one gains). This ramp is the box filter's coverage for an edge
along an axis and integrates exactly along any straight edge, so the summed coverage is the
silhouette's area and its derivative follows the edges' motion. A pixel takes the least coverage
(covered) or the most (empty) over its pairs. Occlusion edges between two faces are not softened.
"""
from __future__ import annotations

import torch

from .rasterize import Fragments, _edge_bary

_DIRECTIONS = ((0, 1), (0, -1), (1, 0), (-1, 0))  # (d row, d col)


def silhouette_coverage(frags: Fragments, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha (B,H,W) in [0,1], source (B*H*W,) long): the soft coverage, and for each pixel the flat
    index of the covered pixel whose colour it shows (itself if covered, the neighbour that gives
    it coverage if empty, -1 if it shows only background)."""
    bsz, h, w = frags.shape
    fid = frags.face_id
    mask = frags.mask
    dtype = frags.screen.dtype
    inside = torch.ones(bsz, h, w, dtype=dtype, device=fid.device)
    gains, sources = [], []
    flat = torch.arange(bsz * h * w, device=fid.device).reshape(bsz, h, w)
    for dr, dc in _DIRECTIONS:
        # p: covered pixel, q = p + (dr, dc): empty, inside the image.
        rs, cs = slice(max(0, -dr), h - max(0, dr)), slice(max(0, -dc), w - max(0, dc))
        rq, cq = slice(max(0, dr), h + min(0, dr)), slice(max(0, dc), w + min(0, dc))
        sel = mask[:, rs, cs] & ~mask[:, rq, cq]
        b, r, c = sel.nonzero(as_tuple=True)
        r, c = r + rs.start, c + cs.start
        tri = frags.screen[b[:, None], faces.long().index_select(0, fid[b, r, c])]  # (M,3,2)
        x, y = c.to(dtype) + 0.5, r.to(dtype) + 0.5
        lp = _edge_bary(tri, x, y)
        gx, gy = _edge_bary(tri, x + 1.0, y) - lp, _edge_bary(tri, x, y + 1.0) - lp  # affine: exact slopes
        lq = lp + dc * gx + dr * gy
        # The edge crossed first on the way p -> q (its barycentric reaches 0 first).
        out = lq < 0
        t_k = torch.where(out, lp / torch.where(out, lp - lq, torch.ones_like(lp)), torch.full_like(lp, 2.0))
        k = t_k.detach().argmin(1, keepdim=True)
        l1 = (gx.abs() + gy.abs()).gather(1, k)[:, 0].clamp_min(1e-12)
        dist_p = lp.gather(1, k)[:, 0] / l1
        dist_q = lq.gather(1, k)[:, 0] / l1
        cover_p = (0.5 + dist_p).clamp(0.0, 1.0)
        inside = inside.index_put((b, r, c), torch.minimum(inside[b, r, c], cover_p))
        gains.append(torch.zeros_like(inside).index_put((b, r + dr, c + dc), (0.5 + dist_q).clamp(0.0, 1.0)))
        sources.append(torch.full_like(flat, -1).index_put((b, r + dr, c + dc), flat[b, r, c]))
    gain = torch.stack(gains)  # (4,B,H,W)
    best = gain.detach().argmax(0, keepdim=True)
    outside = gain.gather(0, best)[0]
    src = torch.stack(sources).gather(0, best)[0]
    alpha = torch.where(mask, inside, outside)
    src = torch.where(mask, flat, torch.where(outside.detach() > 0, src, torch.full_like(src, -1)))
    return alpha, src.reshape(-1)


def antialias_alpha(frags: Fragments, faces: torch.Tensor) -> torch.Tensor:
    """Soft coverage (B,1,H,W) with gradients to the vertices at silhouette edges."""
    return silhouette_coverage(frags, faces)[0][:, None]
