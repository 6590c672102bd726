"""The measurements bench_sds.py takes beside the SDS step: the bare U-Net forward (the floor a step is
compared against), render forward + backward per render path and per encoding, and the tiny-model step
per encoding. Each times what it names with the helpers of sds_timing."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from sds_models import build_model
from sds_step import make_trainer, timed_train_step
from sds_timing import Mem, count_saved, sync
from sds_variants import RENDER_PATHS, checkpoint_layout

def unet_floor(guidance, device: torch.device, n: int, warmup: int, mem: Mem, emb_len: int = 77) -> dict:
    """The bare U-Net forward the SDS step cannot beat: batch 2 (CFG), the model's latent size, 77 tokens."""
    cfg = guidance.unet.config
    s = int(cfg.sample_size)
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(2, cfg.in_channels, s, s, generator=gen).to(device=device, dtype=guidance.dtype)
    emb = torch.randn(2, emb_len, cfg.cross_attention_dim, generator=gen).to(device=device, dtype=guidance.dtype)
    t = torch.tensor([500, 500], device=device)
    times, peak = [], 0.0
    with torch.no_grad():
        for i in range(warmup + n):
            sync(device)
            base = mem.current()
            mem.reset_peak()
            t0 = time.perf_counter()
            guidance.unet(z, t, encoder_hidden_states=emb).sample
            sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
                peak = max(peak, mem.peak() - base)
    return {"mean_s": sum(times) / len(times), "all_s": times, "transient_peak_mib": peak, "shape": [2, cfg.in_channels, s, s],
            "tokens": int(emb_len)}


def time_renders(field, bg, rng: torch.Generator, device: torch.device, reps: int, warmup: int, mem: Mem, render_one,
                 on_measured=None) -> tuple[list[float], list[float], float, dict]:
    """Forward and backward seconds, peak memory (MiB) and saved-for-backward bytes of ``render_one(cams, lights)``
    on random single-camera views: one loop for every render comparison in this bench. ``on_measured(out)`` sees
    each timed render's output before it is freed."""
    from engine import losses
    from engine.cameras import sample_cameras, sample_light_positions

    fwd, bwd, peak, saved = [], [], 0.0, {}
    exclude = {p.untyped_storage().data_ptr() for p in list(field.parameters()) + list(bg.parameters())}
    for i in range(warmup + reps):
        cams = sample_cameras(1, rng, device=device)
        lights = sample_light_positions(cams, rng)
        sync(device)
        base = mem.current()
        mem.reset_peak()
        t0 = time.perf_counter()
        store = {} if i == 0 else saved
        with count_saved(store, "render", exclude):
            out = render_one(cams, lights)
        sync(device)
        t1 = time.perf_counter()
        (out.image.mean() + out.opacity.mean() + losses.orientation_loss(out)).backward()
        sync(device)
        t2 = time.perf_counter()
        if i == 0:
            saved = store
        field.zero_grad(set_to_none=True)
        bg.zero_grad(set_to_none=True)
        if i >= warmup:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
            peak = max(peak, mem.peak() - base)
            if on_measured is not None:
                on_measured(out)
        del out
    return fwd, bwd, peak, saved


def render_compare(preset: str, device: torch.device, reps: int, warmup: int, mem: Mem) -> list[dict]:
    """Hash grid vs frequency encoding: render forward + backward at the preset's resolution."""
    from engine.config import build_config
    from engine.render import render
    from engine.train import build_field

    rows = []
    for encoding in ("hashgrid", "frequency"):
        cfg = build_config(preset, prompt="x", encoding=encoding)
        torch.manual_seed(0)
        field, bg = build_field(cfg)
        field.to(device)
        bg.to(device)
        params = sum(p.numel() for p in field.parameters())
        for mode in ("albedo", "shaded"):
            rng = torch.Generator().manual_seed(0)

            def render_one(cams, lights, mode=mode, rng=rng):
                return render(field, bg, cams, cfg.render_resolution, cfg.samples_per_ray, shading=mode,
                              light_positions=lights, ambient=cfg.ambient, generator=rng, normals=cfg.normals)

            fwd, bwd, peak, saved = time_renders(field, bg, rng, device, reps, warmup, mem, render_one)
            rows.append({"encoding": encoding, "mode": mode, "resolution": cfg.render_resolution, "samples_per_ray": cfg.samples_per_ray,
                         "field_params": params, "fwd_s": sum(fwd) / len(fwd), "bwd_s": sum(bwd) / len(bwd),
                         "saved_mib": saved.get("render", 0) / 2**20, "peak_mib": peak, "reps": reps})
            print(f"  render {encoding:9s} {mode:7s}: fwd {rows[-1]['fwd_s']:.3f}s bwd {rows[-1]['bwd_s']:.3f}s", file=sys.stderr)
    return rows


def render_path_compare(preset: str, device: torch.device, reps: int, warmup: int, mem: Mem, field_run: str | None) -> dict:
    """Reference vs fast render path on one field (a trained checkpoint's with ``field_run``): render
    forward + backward of one view at the preset's resolution and samples, per shading mode; the
    occupancy grid's update cost; and what autograd keeps for backward at the high preset's pixels and
    samples (one shaded render), for the memory estimate."""
    from engine.cameras import sample_cameras, sample_light_positions
    from engine.config import PRESETS, build_config
    from engine.occupancy import OccupancyGrid
    from engine.render import render
    from engine.train import build_field

    layout, state = checkpoint_layout(field_run)
    rows, grid_rows, high_rows = [], [], []
    for path, settings in RENDER_PATHS.items():
        cfg = build_config(preset, prompt="x", **{**layout, **settings})
        torch.manual_seed(0)
        field, bg = build_field(cfg)
        if state is not None:
            field.load_state_dict(state["field"])
            bg.load_state_dict(state["background"])
        field.to(device)
        bg.to(device)
        grid = None
        if cfg.occupancy_grid:
            grid = OccupancyGrid(cfg.bound, cfg.occupancy_resolution or max(16, cfg.samples_per_ray), device=device)
            gen = torch.Generator(device=device).manual_seed(0)
            times = []
            for _ in range(3):  # the first update covers every cell, later ones a quarter + the occupied
                t0 = time.perf_counter()
                grid.update(field.density, 2.0 * cfg.bound / cfg.samples_per_ray, generator=gen)
                sync(device)
                times.append(time.perf_counter() - t0)
            grid_rows.append({"path": path, "resolution": grid.resolution, "first_update_s": times[0],
                              "update_s": sum(times[1:]) / 2, "every": cfg.occupancy_update_every,
                              "occupied_fraction": float(grid.occupied_fraction())})
        for mode in ("albedo", "shaded"):
            rng = torch.Generator(device=device).manual_seed(0)
            counts = []

            def render_one(cams, lights, mode=mode, rng=rng):
                return render(field, bg, cams, cfg.render_resolution, cfg.samples_per_ray, shading=mode, light_positions=lights,
                              ambient=cfg.ambient, generator=rng, normals=cfg.normals, normal_samples=cfg.normal_samples,
                              occupancy=grid)

            def count(out, counts=counts):
                normals = 0 if out.normals is None else int((out.normals.abs().sum(-1) > 0).sum())
                counts.append((out.weights.shape[0], normals, float(out.opacity.mean())))

            fwd, bwd, peak, saved = time_renders(field, bg, rng, device, reps, warmup, mem, render_one, on_measured=count)
            n = cfg.render_resolution**2 * cfg.samples_per_ray
            rows.append({"path": path, "mode": mode, "resolution": cfg.render_resolution, "samples_per_ray": cfg.samples_per_ray,
                         "fwd_s": sum(fwd) / len(fwd), "bwd_s": sum(bwd) / len(bwd), "saved_mib": saved.get("render", 0) / 2**20,
                         "peak_mib": peak, "reps": reps, "samples": n,
                         "evaluated": sum(c[0] for c in counts) / len(counts), "with_normals": sum(c[1] for c in counts) / len(counts),
                         "mean_opacity": sum(c[2] for c in counts) / len(counts)})
            r = rows[-1]
            print(f"  render {path:9s} {mode:7s}: fwd {r['fwd_s']:.3f}s bwd {r['bwd_s']:.3f}s evaluated {r['evaluated']:.0f}/{n}",
                  file=sys.stderr)
        # Saved-for-backward bytes of one shaded render at the high preset's pixels and samples. The
        # reference path's would be ~20 GiB: scaled from its draft figure (pixels x samples) instead of run.
        hi = PRESETS["high"]
        scale = (hi["render_resolution"] / cfg.render_resolution) ** 2 * hi["samples_per_ray"] / cfg.samples_per_ray
        measured = path != "reference"
        if measured:
            store: dict = {}
            exclude = {p.untyped_storage().data_ptr() for p in list(field.parameters()) + list(bg.parameters())}
            rng = torch.Generator(device=device).manual_seed(1)
            cams = sample_cameras(1, rng, device=device)
            with count_saved(store, "render", exclude):
                out = render(field, bg, cams, hi["render_resolution"], hi["samples_per_ray"], shading="shaded",
                             light_positions=sample_light_positions(cams, rng), ambient=cfg.ambient, generator=rng,
                             normals=cfg.normals, normal_samples=cfg.normal_samples, occupancy=grid)
            del out
            saved_high = store.get("render", 0) / 2**20
        else:
            saved_high = next(r["saved_mib"] for r in rows if r["path"] == path and r["mode"] == "shaded") * scale
        high_rows.append({"path": path, "resolution": hi["render_resolution"], "samples_per_ray": hi["samples_per_ray"],
                          "levels": cfg.hash_levels, "high_levels": hi["hash_levels"], "saved_mib": saved_high,
                          "measured": measured})
        print(f"  render {path:9s} saved at high px/spp: {high_rows[-1]['saved_mib']:.0f} MiB", file=sys.stderr)
    return {"rows": rows, "grid": grid_rows, "high": high_rows, "field": str(field_run) if field_run else "fresh (start blob)",
            "field_step": None if state is None else int(state["step"])}


def tiny_step_compare(preset: str, device: torch.device, steps: int, warmup: int, workdir: Path) -> list[dict]:
    """A whole SDS step with the tests' tiny latent model, per encoding (the NeRF is then most of the cost)."""
    folder = build_model(workdir / "tiny", "tiny")
    rows = []
    for encoding in ("hashgrid", "frequency"):
        trainer, _, _ = make_trainer(folder, preset, device, "fp32", encoding, workdir / f"run-tiny-{encoding}")
        trainer.step = trainer.cfg.albedo_warmup
        totals = []
        for i in range(warmup + steps):
            _, clock = timed_train_step(trainer, shading="shaded")
            if i >= warmup:
                totals.append(clock.total())
        rows.append({"encoding": encoding, "step_s": sum(totals) / len(totals), "steps": steps})
        print(f"  tiny step {encoding}: {rows[-1]['step_s']:.3f}s", file=sys.stderr)
        del trainer
    return rows
