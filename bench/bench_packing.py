"""Exact vs fixed-capacity packing (engine/render/packing.py), side by side on one field.

    python bench/bench_packing.py --field-checkpoint RUN_DIR [--reps 6] [--device cpu] [--json FILE]

One training-size render (the preset's resolution and samples, the default fast path with its
occupancy grid) forward + backward per packing, interleaved on the same random view each rep, per
shading mode; prints seconds, the ratio fixed/exact, how many packed slots each evaluated (fixed: the
capacity, sized as a run sizes it: first use, then every 10 renders from the largest count x margin)
and the load average. On the CPU exact packing is the default (``packing=auto``); this measures what
the fixed capacity would cost there, and on a GPU what it saves.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_sds  # noqa: E402,F401  (puts the repo on sys.path)
from sds_timing import sync  # noqa: E402
from sds_variants import checkpoint_layout  # noqa: E402

import torch  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--field-checkpoint", metavar="RUN_DIR", required=True, help="a trained run folder")
    ap.add_argument("--preset", default="draft", choices=["draft", "standard", "high"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=6, help="timed reps per packing and mode (after one warm-up)")
    ap.add_argument("--modes", nargs="+", default=["albedo", "shaded"])
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)

    from engine.cameras import sample_cameras, sample_light_positions
    from engine.config import build_config
    from engine.losses import orientation_loss
    from engine.occupancy import OccupancyGrid
    from engine.render import FixedCapacityPacker, render
    from engine.train import build_field

    device = torch.device(args.device)
    layout, state = checkpoint_layout(args.field_checkpoint)
    cfg = build_config(args.preset, prompt="x", **layout)
    field, bg = build_field(cfg)
    field.load_state_dict(state["field"])
    bg.load_state_dict(state["background"])
    field.to(device)
    bg.to(device)
    grid = OccupancyGrid(cfg.bound, cfg.occupancy_resolution or max(16, cfg.samples_per_ray), device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    for _ in range(3):
        grid.update(field.density, 2.0 * cfg.bound / cfg.samples_per_ray, generator=gen)
    load0 = os.getloadavg()
    rows = []
    for mode in args.modes:
        packer = FixedCapacityPacker()
        times = {"exact": [], "fixed": []}
        slots = {"exact": [], "fixed": []}
        overflows, max_diff, images = 0, 0.0, {}
        with torch.no_grad():  # size the capacity as a run does: first use, then the largest of 10 views x margin
            for i in range(10):
                rng = torch.Generator(device=device).manual_seed(i)
                cams = sample_cameras(1, rng, device=device)
                render(field, bg, cams, cfg.render_resolution, cfg.samples_per_ray, shading=mode,
                       light_positions=sample_light_positions(cams, rng), ambient=cfg.ambient, generator=rng,
                       normals=cfg.normals, normal_samples=cfg.normal_samples, occupancy=grid, packer=packer)
        primed = packer.poll()
        for rep in range(args.reps + 1):
            view_seed = 1000 + rep
            for packing in ("exact", "fixed") if rep % 2 == 0 else ("fixed", "exact"):  # alternate who goes first
                rng = torch.Generator(device=device).manual_seed(view_seed)
                cams = sample_cameras(1, rng, device=device)
                lights = sample_light_positions(cams, rng)
                sync(device)
                t0 = time.perf_counter()
                out = render(field, bg, cams, cfg.render_resolution, cfg.samples_per_ray, shading=mode, light_positions=lights,
                             ambient=cfg.ambient, generator=rng, normals=cfg.normals, normal_samples=cfg.normal_samples,
                             occupancy=grid, packer=packer if packing == "fixed" else None)
                (out.image.mean() + out.opacity.mean() + orientation_loss(out)).backward()
                sync(device)
                dt = time.perf_counter() - t0
                images[packing] = out.image.detach()
                field.zero_grad(set_to_none=True)
                bg.zero_grad(set_to_none=True)
                if packing == "fixed":
                    overflows += int(out.overflow)
                if rep > 0:
                    times[packing].append(dt)
                    slots[packing].append(len(out.weights))
            if not overflows:  # the same view: the same image up to float rounding
                max_diff = max(max_diff, float((images["exact"] - images["fixed"]).abs().max()))
        mean = {k: sum(v) / len(v) for k, v in times.items()}
        row = {"mode": mode, "exact_s": mean["exact"], "fixed_s": mean["fixed"], "fixed_over_exact": mean["fixed"] / mean["exact"],
               "exact_samples": sum(slots["exact"]) / len(slots["exact"]), "fixed_slots": sum(slots["fixed"]) / len(slots["fixed"]),
               "capacity": dict(packer.capacity), "overflows": overflows + primed["overflows"], "reps": args.reps,
               "max_image_diff": max_diff}
        rows.append(row)
        print(f"{mode:8s} exact {row['exact_s']:.3f}s fixed {row['fixed_s']:.3f}s  fixed/exact {row['fixed_over_exact']:.2f}  "
              f"evaluated {row['exact_samples']:.0f} vs {row['fixed_slots']:.0f} slots  capacity {row['capacity']}  "
              f"overflows {overflows}  max |image diff| {max_diff:.2e}", flush=True)
    result = {"preset": args.preset, "resolution": cfg.render_resolution, "samples_per_ray": cfg.samples_per_ray,
              "field": str(args.field_checkpoint), "field_step": int(state["step"]), "device": str(device),
              "threads": torch.get_num_threads(), "load_before": load0, "load_after": os.getloadavg(), "rows": rows}
    print(f"load average before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, after {result['load_after'][0]:.2f}; "
          f"{torch.get_num_threads()} thread(s)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
