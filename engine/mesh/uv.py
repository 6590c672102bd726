"""UV atlas with xatlas: charts cut along seams and packed into the unit square.

xatlas splits vertices on seams, so the output has its own vertex list; ``vmapping`` maps every
new vertex to the original one (positions and normals are copied through it)."""
from __future__ import annotations

import numpy as np
import xatlas


def unwrap(verts: np.ndarray, faces: np.ndarray, texture_size: int, padding: int):
    """Returns (vmapping (V',), faces (F,3) into the new vertices, uvs (V',2) in [0,1], OpenGL
    convention: v up, so texture row = (1 - v) * size)."""
    atlas = xatlas.Atlas()
    atlas.add_mesh(verts.astype(np.float32), faces.astype(np.uint32))
    chart = xatlas.ChartOptions()
    pack = xatlas.PackOptions()
    # Pack for the texture we will bake: padding is in texels at this resolution, and bilinear
    # keeps a texel of clearance around charts so filtering never reads a neighbour chart.
    pack.resolution = int(texture_size)
    pack.padding = int(padding)
    pack.bilinear = True
    pack.create_image = False
    atlas.generate(chart, pack)
    vmapping, indices, uvs = atlas[0]
    return vmapping.astype(np.int64), indices.astype(np.int64), np.clip(uvs.astype(np.float64), 0.0, 1.0)
