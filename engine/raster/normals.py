"""Face and vertex normals of a triangle mesh (differentiable w.r.t. the vertex positions)."""
from __future__ import annotations

import torch
from torch.nn import functional as F


def face_normals(verts: torch.Tensor, faces: torch.Tensor, unit: bool = True) -> torch.Tensor:
    """(F,3) normals by the right-hand rule (counter-clockwise corners face the viewer); with
    ``unit=False`` their length is twice the face's area."""
    tri = verts[faces.long()]
    n = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    return F.normalize(n, dim=-1, eps=1e-20) if unit else n


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(V,3) unit normals: the area-weighted mean of the normals of the faces around each vertex
    (zero for a vertex no face uses)."""
    fn = face_normals(verts, faces, unit=False)
    f = faces.long()
    acc = torch.zeros_like(verts).index_add(0, f.reshape(-1), fn.repeat_interleave(3, dim=0))
    return F.normalize(acc, dim=-1, eps=1e-20)
