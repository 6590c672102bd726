"""UV atlas with xatlas: charts cut along seams and packed into the unit square.

xatlas splits vertices on seams, so the output has its own vertex list; ``vmapping`` maps every
new vertex to the original one (positions and normals are copied through it)."""
from __future__ import annotations

import numpy as np
import xatlas


#: "fast" atlas: charts of about this many faces at most. xatlas grows charts by a cost that it
#: re-evaluates over the whole chart, so its time rises much faster than linearly with chart size;
#: capping the area keeps it near-linear (measured on a 20k-face torus: 8.8 s with xatlas's
#: defaults, 18 charts; 0.9 s with ~60-face charts; docs/BENCHMARKS-export.md). More charts mean
#: more seams, which the baker's conservative rasterisation and dilation make invisible.
CHART_FACES = 64


def unwrap(verts: np.ndarray, faces: np.ndarray, texture_size: int, padding: int, atlas_mode: str = "fast"):
    """Returns (vmapping (V',), faces (F,3) into the new vertices, uvs (V',2) in [0,1], OpenGL
    convention: v up, so texture row = (1 - v) * size)."""
    atlas = xatlas.Atlas()
    atlas.add_mesh(verts.astype(np.float32), faces.astype(np.uint32))
    chart = xatlas.ChartOptions()
    if atlas_mode == "fast":
        tri = verts[faces]
        area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum()
        chart.max_chart_area = float(area * CHART_FACES / max(len(faces), 1))
        chart.max_iterations = 0  # no chart-merging refinement pass (its cost grows with chart size)
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
