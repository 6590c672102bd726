"""The mesh refinement (engine/refine.py) side by side with the NeRF-only export of the same run.

    python bench/eval_refine.py --refine-steps 100 --seeds 0 --json out.json

Each run is one `generate` with the builtin prior's recommended settings plus ``--refine-steps``; its
asset/ (the NeRF export) and refined/ (the refinement) are scored the same way, on the mesh:
bumpiness, normal consistency, Chamfer-L1 (engine/evaluate.mesh_scores), a **mesh in-place IoU** on
the 64^3 grid (voxels hit by 200k surface samples, interior filled: the shell counts as inside for
both meshes alike), for the cube the **edge distance** (mean distance from points on the true
cube's 12 edges to the mesh: a rounded edge is far from it) and the **colour error** (mean |albedo -
true colour| of the run's albedo field at the mesh's surface samples: the NeRF's for asset/, the
refined field for refined/). Times: the NeRF stage (train + export) and the refinement (its steps +
bake), from the events.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import cli, runfolder  # noqa: E402
from engine.evaluate import mesh_scores  # noqa: E402
from engine.export_run import load_field  # noqa: E402
from engine.priors import shapes_data  # noqa: E402

PROMPTS = ["a red cube", "a blue sphere", "a green cylinder", "a yellow cone", "a red torus"]


def mesh_occupancy(verts: np.ndarray, faces: np.ndarray, res: int = 64, bound: float = 1.0) -> np.ndarray:
    from scipy.ndimage import binary_fill_holes

    from engine.mesh.metrics import sample_surface

    pts = sample_surface(verts, faces, 200_000)[0]
    idx = np.clip(((pts + bound) / (2 * bound) * res).astype(int), 0, res - 1)
    occ = np.zeros((res,) * 3, bool)
    occ[idx[:, 0], idx[:, 1], idx[:, 2]] = True
    return binary_fill_holes(occ)


def truth_occupancy(shape: str, res: int = 64) -> np.ndarray:
    from engine.evaluate import grid_points

    return shapes_data.occupancy(shape, grid_points(res, 1.0)).numpy().reshape((res,) * 3)


def cube_edge_distance(verts: np.ndarray, faces: np.ndarray) -> float:
    from engine.mesh.metrics import point_mesh_distance

    h = shapes_data.CUBE_HALF
    t = np.linspace(-h, h, 40)
    pts = []
    for axis in range(3):
        for a in (-h, h):
            for b in (-h, h):
                p = np.zeros((len(t), 3))
                p[:, axis] = t
                p[:, (axis + 1) % 3], p[:, (axis + 2) % 3] = a, b
                pts.append(p)
    return float(point_mesh_distance(np.concatenate(pts), verts, faces).mean())


def colour_error(field, verts: np.ndarray, faces: np.ndarray, colour: str) -> float:
    from engine.mesh.metrics import sample_surface

    pts = torch.as_tensor(sample_surface(verts, faces, 20_000, seed=1)[0], dtype=torch.float32)
    with torch.no_grad():
        alb = field.albedo(pts)
    return float((alb - shapes_data.colour_rgb(colour)).abs().mean())


def score_mesh(glb: Path, shape: str, colour: str, field) -> dict:
    import trimesh

    m = trimesh.load(glb, force="mesh")
    v, f = np.asarray(m.vertices), np.asarray(m.faces)
    s = mesh_scores(v, f, shape)
    occ, truth = mesh_occupancy(v, f), truth_occupancy(shape)
    s["mesh_iou"] = float((occ & truth).sum() / max((occ | truth).sum(), 1))
    s["colour_error"] = colour_error(field, v, f, colour)
    if shape == "cube":
        s["edge_distance"] = cube_edge_distance(v, f)
    s["faces"] = int(len(f))
    return {k: round(x, 4) if isinstance(x, float) else x for k, x in s.items()}


def stage_times(run_dir: Path) -> dict:
    ev = [json.loads(line) for line in (run_dir / runfolder.EVENTS).read_text().splitlines() if line.strip()]
    t = {}
    for e in ev:
        stage = e.get("stage")
        if e.get("type", e.get("event")) == "progress" and stage in ("train", "refine") and e.get("elapsed_s") is not None:
            t[stage] = e["elapsed_s"]
    return t


def reuse_run(src: Path, dst: Path, settings: dict) -> int:
    """Refine a finished run's NeRF again with other settings: a copy without its refinement, the
    settings written into its config.json, then `generate --resume` (the NeRF stage is complete)."""
    import shutil

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("refine", "refined*", "previews"))
    (dst / "previews").mkdir()
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(settings)
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))
    return cli.main(["generate", "--resume", str(dst), "--no-progress"])


def run_one(prompt: str, seed: int, refine_steps: int, runs: Path, extra: list[str], reuse: Path | None = None,
            settings: dict | None = None) -> dict:
    colour, shape = shapes_data.parse_prompt(prompt)
    out = runs / f"{shape}-seed{seed}"
    t0 = time.perf_counter()
    if reuse is not None:
        out.mkdir(parents=True, exist_ok=True)
        src = sorted((reuse / f"{shape}-seed{seed}").iterdir())[-1]
        code = reuse_run(src, out / src.name, {"refine_steps": refine_steps, **(settings or {})})
    else:
        code = cli.main(["generate", prompt, "--out", str(out), "--seed", str(seed), "--model", "builtin:shapes", "--device",
                         "cpu", "--no-progress", "--refine-steps", str(refine_steps), *extra])
    wall = time.perf_counter() - t0
    if code != 0:
        raise RuntimeError(f"{prompt} seed {seed}: exit {code}")
    run_dir = sorted(out.iterdir())[-1]
    cfg = runfolder.load_run_config(run_dir)
    nerf_field = load_field(run_dir, cfg, torch.device("cpu"))
    row = {"prompt": prompt, "seed": seed, "wall_s": round(wall, 1), "run_dir": str(run_dir), **stage_times(run_dir)}
    row["nerf"] = score_mesh(run_dir / "asset" / "asset.glb", shape, colour, nerf_field)
    if refine_steps:
        from engine.refine import REFINE_CHECKPOINT

        refined_field = load_field(run_dir, cfg, torch.device("cpu"))
        refined_field.load_state_dict(torch.load(run_dir / REFINE_CHECKPOINT, weights_only=True)["field"])
        row["refined"] = score_mesh(run_dir / "refined" / "asset.glb", shape, colour, refined_field.eval())
        meta = json.loads((run_dir / "refined" / "asset.json").read_text())
        row["refine_s"], row["triangles"] = meta["refine_s"], meta["triangles"]
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", nargs="+", default=PROMPTS)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--refine-steps", type=int, default=100)
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/eval_refine"))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--reuse", type=Path, help="a --runs-dir of earlier runs: refine their NeRFs again (no training)")
    ap.add_argument("--refine-set", action="append", default=[], help="refine_* KEY=VALUE for --reuse")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    extra = [x for s in args.set for x in ("--set", s)]
    rows = []
    for seed in args.seeds:
        for prompt in args.prompts:
            settings = {k: float(v) if "." in v or "e" in v else int(v) for k, v in (x.split("=", 1) for x in args.refine_set)}
            row = run_one(prompt, seed, args.refine_steps, args.runs_dir, extra, args.reuse, settings)
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.json:
                args.json.write_text(json.dumps({"load": open("/proc/loadavg").read().strip(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
