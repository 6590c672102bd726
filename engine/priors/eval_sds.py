"""SDS end to end with the builtin prior: generate each prompt, then score the shape it recovered.

    python -m engine.priors.eval_sds --prompts "a red cube" "a blue sphere" --seeds 0 1 \
        --table docs/SDS_SHAPES.md

Each run goes through the real CLI (``engine.cli.main``: config, guidance loader, training loop,
checkpoint), then ``engine.evaluate.score_field`` measures volumetric IoU (raw and normalised, and
against every other shape), silhouette IoU, albedo colour error and the surface quality (normal
consistency, bumpiness, area within a voxel of the true surface) of the exported .glb (the run's asset/, at
the level the exporter chose). The Markdown table records seeds, steps and time per run (generate,
export included).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from .. import cli, runfolder
from ..evaluate import score_field
from ..export_run import load_field
from ..train import build_field

# Settings every scored run uses, besides the prior's own recommendations (dreamfusion.json).
EVAL_ARGS = ["--model", "builtin:shapes", "--device", "cpu", "--no-progress"]


def score_run(run_dir: Path, prompt: str) -> dict:
    """Scores of a finished run folder: the field from its last checkpoint, the surface from the
    exported asset (the .glb a user gets, at the level the exporter chose and recorded)."""
    import trimesh

    cfg = runfolder.load_run_config(run_dir)
    state = runfolder.load_checkpoint(run_dir)
    field = load_field(run_dir, cfg, torch.device("cpu"), state)
    _, background = build_field(cfg)
    background.load_state_dict(state["background"])
    asset = Path(run_dir) / "asset"
    meta = json.loads((asset / "asset.json").read_text())
    mesh = trimesh.load(asset / "asset.glb", force="mesh")
    iso, surface = exported_surface(field, cfg, meta)
    scores = score_field(field, background.eval(), prompt, iso=iso, bound=cfg.bound, mesh=(mesh.vertices, mesh.faces),
                         surface_density=surface).to_json()
    scores.update(prompt=prompt, iso=iso, run_dir=str(run_dir), glb=str(asset / "asset.glb"), start_shape=cfg.start_shape)
    return scores


def exported_surface(field, cfg, meta: dict):
    """(level, density function) of the surface the exporter made: a given level on the field's
    density, or the automatic choice made again as the exporter made it (the grid size and the carve
    decision asset.json records; the choice is deterministic), so a carved surface is scored carved."""
    from ..mesh import grid, iso as iso_mod

    if meta.get("iso_method") != "auto":
        return meta["iso"], field.density
    n = meta.get("iso_grid_resolution") or grid.coarse_resolution(cfg.mesh_resolution)  # older assets: the run's
    choice = iso_mod.auto_iso(field.density, cfg.bound, n, carve="on" if meta.get("silhouette_carved") else "off")
    if abs(choice.iso - meta["iso"]) > 1e-3 * meta["iso"] or choice.carved != bool(meta.get("silhouette_carved")):
        raise RuntimeError(f"the exporter's surface level could not be reproduced: {choice.iso:g} "
                           f"(carved {choice.carved}) vs {meta['iso']:g} in asset.json")
    return choice.iso, iso_mod.surface_density(field.density, choice)


def run_and_score(prompt: str, steps: int | None, seed: int, runs_dir: Path, extra: list[str] | None = None) -> dict:
    """Generate (the prior's recommended settings; ``steps`` None: its run length) and score."""
    out = runs_dir / f"seed{seed}"
    before = set(out.glob("*")) if out.exists() else set()
    t0 = time.perf_counter()
    steps_args = ["--steps", str(steps)] if steps else []
    code = cli.main(["generate", prompt, "--out", str(out), *steps_args, "--seed", str(seed), *EVAL_ARGS, *(extra or [])])
    seconds = time.perf_counter() - t0
    if code != 0:
        raise RuntimeError(f"generate {prompt!r} failed with exit code {code}")
    run_dir = next(iter(set(out.glob("*")) - before))
    scores = score_run(run_dir, prompt)
    scores.update(seed=seed, steps=runfolder.load_run_config(run_dir).steps, seconds=round(seconds, 1))
    return scores


def markdown_table(rows: list[dict]) -> str:
    head = ("| prompt | seed | steps | time (s) | start | vol. IoU in place / norm. | best-matching shape (norm. / in place) "
            "| silhouette IoU | normal consistency | bumpiness (°) | area within a voxel | colour error | nearest colour |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    body = "".join(
        f"| {r['prompt']} | {r['seed']} | {r['steps']} | {r['seconds']} | {r.get('start_shape', 'ball')} | {r['volume_iou']:.3f} / {r['volume_iou_normalised']:.3f} "
        f"| {r['predicted_shape']} / {r['predicted_shape_in_place']} | {r['silhouette_iou']:.3f} "
        f"| {r['normal_consistency']:.3f} | {r['bumpiness']:.2f} | {r['surface_within_voxel']:.3f} | {r['colour_error']:.3f} | {r['predicted_colour']} |\n"
        for r in rows
    )
    return head + body


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", nargs="+", default=["a red cube", "a blue sphere", "a green cylinder", "a yellow cone", "a red torus"])
    ap.add_argument("--steps", type=int, help="default: the prior's recommended run length (its dreamfusion.json)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/eval_sds"))
    ap.add_argument("--table", type=Path, help="append the Markdown table (with machine info) to this file")
    ap.add_argument("--json", type=Path, help="write all scores as JSON")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--set", action="append", default=[], help="extra engine settings KEY=VALUE")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    extra = [x for kv in args.set for x in ("--set", kv)]
    rows = []
    for prompt in args.prompts:
        for seed in args.seeds:
            row = run_and_score(prompt, args.steps, seed, args.runs_dir, extra)
            rows.append(row)
            print(json.dumps({k: row[k] for k in ("prompt", "seed", "seconds", "volume_iou", "volume_iou_normalised",
                                                   "predicted_shape_in_place", "silhouette_iou", "normal_consistency", "bumpiness",
                                                   "colour_error", "predicted_colour")}), flush=True)
    table = markdown_table(rows)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if args.table:
        info = (f"\n_{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                f"torch {torch.__version__}, load average {os.getloadavg()[0]:.1f}, settings: {' '.join(args.set) or 'prior defaults'}_\n\n")
        with open(args.table, "a") as fh:
            fh.write(info + table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
