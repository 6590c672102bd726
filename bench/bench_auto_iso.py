"""Benchmark (not a test): the automatic surface level on full-length builtin-prior runs.

    .venv/bin/python bench/bench_auto_iso.py --out /tmp/iso-runs                   # 5 prompts, seed 0
    .venv/bin/python bench/bench_auto_iso.py --out /tmp/iso-runs --seeds 0,1 --set encoding=hashgrid

For every prompt and seed: one default ``python -m engine generate PROMPT --model builtin:shapes
--device cpu`` run (the prior's own settings, engine/priors/shapes/dreamfusion.json: 300 steps, and the
export the run makes itself: automatic iso, 128^3), one at a time, one torch thread. Then, for the
exported asset.glb: the exporter's own score (asset.json ``iso_silhouette_iou``: the level set's
silhouette against {opacity > 0.5} on renders of the sampled grid, 16 views) and the mesh's
silhouette against the NeRF's own renders (bench_export's measure: the trained field rendered with
the run's samples per ray, 8 views, 64^2; pixel-exact mesh masks, engine/mesh/metrics.py), and the best
IoU any single level reaches on the exporter's renders (a soft field's {opacity > 0.5} is not always
the silhouette of a density level set: the ceiling of the automatic choice; of the carved surface's
levels where the exporter carved it to the silhouettes, engine/mesh/hull.py: column "carved").
Prints a markdown table (one row per run, appended as each run ends) with the load average.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ("a red cube", "a blue sphere", "a green cylinder", "a yellow cone", "a red torus")


def score(run_dir: Path) -> dict:
    """Scores of one finished run's asset (in this process)."""
    sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
    import numpy as np
    import torch
    import trimesh

    from bench_export import _load_trained, _silhouette_iou

    torch.set_num_threads(1)
    from engine.mesh import grid, iso
    from engine.mesh.progress import Reporter

    meta = json.loads((run_dir / "asset" / "asset.json").read_text())
    mesh = trimesh.load(run_dir / "asset" / "asset.glb", force="mesh")
    nerf, cfg = _load_trained(run_dir)
    v, f = np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64)
    # The exporter's choice again (same coarse grid, deterministic) for the best IoU any level reaches.
    with torch.no_grad():
        coarse = grid.sample_density(nerf.density, grid.coarse_resolution(cfg.mesh_resolution), cfg.bound, "cpu",
                                     1 << 18, Reporter(False, None))
    choice = iso.choose_iso(coarse, cfg.bound, cfg.silhouette_carve)
    return dict(best_iou=choice.best_iou, carved=bool(meta.get("silhouette_carved")), uncarved_iou=meta.get("iso_uncarved_iou"), iso=meta["iso"], iso_method=meta["iso_method"], grid_iou=meta["iso_silhouette_iou"],
                nerf_iou=_silhouette_iou(nerf, cfg, v, f), faces=len(f), export_s=meta["timings"]["total"],
                export_cpu_s=meta["cpu_timings"]["total"], encoding=cfg.encoding, steps=cfg.steps)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="a folder for the runs (kept, for inspection)")
    ap.add_argument("--prompts", default=",".join(PROMPTS))
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--set", action="append", default=[], help="extra config KEY=VALUE for every run")
    ap.add_argument("--score", help=argparse.SUPPRESS)  # internal: score one run folder, print JSON
    args = ap.parse_args()
    if args.score:
        print(json.dumps(score(Path(args.score))))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    print("| prompt | seed | encoding | steps | iso | carved (uncarved IoU) | faces | IoU grid (exporter) | best level's IoU | "
          "IoU vs NeRF render | export s (CPU s) | run s | load |", flush=True)
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for prompt in args.prompts.split(","):
        for seed in args.seeds.split(","):
            dest = out / f"{prompt.replace(' ', '-')}-s{seed}{'-' + '-'.join(args.set) if args.set else ''}"
            load0 = os.getloadavg()[0]
            t0 = time.perf_counter()
            cmd = [sys.executable, "-m", "engine", "generate", prompt, "--model", "builtin:shapes", "--device", "cpu",
                   "--seed", seed, "--no-progress", "--out", str(dest)]
            for kv in args.set:
                cmd += ["--set", kv]
            run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            runs = sorted(dest.glob("*/asset/asset.glb"))
            if run.returncode != 0 or not runs:
                err = (run.stderr.strip().splitlines() or ["?"])[-1]
                print(f"| {prompt} | {seed} | FAILED (exit {run.returncode}): {err} |", flush=True)
                continue
            sc = subprocess.run([sys.executable, __file__, "--out", str(out), "--score", str(runs[-1].parent.parent)],
                                cwd=ROOT, env=env, capture_output=True, text=True)
            if sc.returncode != 0:
                print(f"| {prompt} | {seed} | scoring failed: {sc.stderr.strip().splitlines()[-1:]} |", flush=True)
                continue
            r = json.loads(sc.stdout.strip().splitlines()[-1])
            carved = f"yes ({r['uncarved_iou']:.3f})" if r["carved"] else "no"
            print(f"| {prompt} | {seed} | {r['encoding']} | {r['steps']} | {r['iso']:.3g} | {carved} | {r['faces']} | "
                  f"{r['grid_iou']:.3f} | {r['best_iou']:.3f} | {r['nerf_iou']:.3f} | {r['export_s']:.1f} ({r['export_cpu_s']:.1f}) | "
                  f"{wall:.0f} | {load0:.1f}-{os.getloadavg()[0]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
