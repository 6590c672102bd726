"""Pictures for docs/SDS_SHAPES.md's refinement section: each run of bench/eval_refine.py's JSON, its
NeRF export (top row) over its refined mesh (bottom row), shaded grey (the geometry alone: lumps show)
and in its baked-in albedo field colour, rendered with engine/raster (cheap on the CPU; Blender's
scripts/render_glb.py gives the same meshes in Cycles).

    python bench/refine_pictures.py RESULTS.json docs/img/refine_seed0.png
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import trimesh
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.cameras import orbit_cameras  # noqa: E402
from engine.raster import render_mesh  # noqa: E402

SIZE = 160


def views(glb: Path) -> np.ndarray:
    m = trimesh.load(glb, force="mesh")
    v = torch.as_tensor(np.asarray(m.vertices), dtype=torch.float32)
    f = torch.as_tensor(np.asarray(m.faces), dtype=torch.long)
    cams = orbit_cameras(2, elevation=25.0, distance=2.2, focal=2.4)
    lights = cams.origins * 1.2 + torch.tensor([0.0, 1.0, 0.0])
    out = render_mesh(v, f, cams, SIZE, SIZE, shading="textureless", light_positions=lights, ambient=0.25,
                      background=torch.ones(3))
    return (torch.cat(list(out.images), dim=2).permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def main() -> int:
    rows = json.loads(Path(sys.argv[1]).read_text())["rows"]
    cols = []
    for r in rows:
        run = Path(r["run_dir"])
        cols.append(np.concatenate([views(run / "asset" / "asset.glb"), views(run / "refined" / "asset.glb")], 0))
    Image.fromarray(np.concatenate(cols, 1)).save(sys.argv[2])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
