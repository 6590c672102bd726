"""Benchmark (not a test): where the time and memory of one SDS step go, at real Stable Diffusion sizes.

What it measures, for one preset / device / dtype / model size / NeRF encoding:
- seconds per SDS step, split into render (NeRF forward), VAE encode (latent models), U-Net forward
  with classifier-free guidance (one batch-2 call, under no_grad), loss assembly, backward through
  the guidance side (VAE encoder, or the resize for pixel models), backward through the render, and
  the optimiser step; steps per second;
- the bare U-Net forward alone (batch 2 for CFG, the model's latent size) as the floor an SDS step
  is compared against, and the ratio SDS-step / U-Net-floor;
- memory: CPU RSS per phase (VmHWM reset through /proc/self/clear_refs; glibc's mmap threshold
  pinned so freed tensors leave RSS at once) or CUDA max_memory_allocated per phase, bytes saved
  for backward per component (saved_tensors_hooks), and on CPU an estimate of fp16 GPU memory;
- time to first preview: model load + Trainer init (text embeddings) + first step + write_preview;
- hash grid against the frequency (plain NeRF) encoding: render forward+backward at the preset's
  resolution, and a tiny-model SDS step;
- mesh export at 128^3 and 256^3, by running bench/bench_export.py's own per-case mode.

Model weights are random: a forward's cost does not depend on their values. The SD 1.5 / 2.1-base
U-Nets and the SD VAE are built from their published configs and saved (fp16 safetensors, to halve
disk and write time; the engine casts to the requested dtype on load) into a temporary diffusers
folder that engine.guidance.Guidance loads, so the measured path is the engine's own. The text
encoder is a 1-layer CLIP with the real hidden size and 77 tokens: it runs once per view label per
run (embeddings are cached by the Trainer), never per step, so its depth does not matter here.

The timed step is ``timed_train_step`` in sds_step.py: Trainer.train_step and Guidance.sds_loss inlined
with clocks between the parts (tests/test_bench_smoke.py checks it computes the same loss and gradients).

This file is the command line and the run (``run``: build, load, time the variants side by side, then
memory, comparisons, export); the parts live next to it, one job each:
  sds_models     the SD-sized random-weight models (and the tiny encoder) it builds
  sds_timing     clocks, memory meters, saved-for-backward counts
  sds_step       the timed step, the Trainer it runs on, the --attention/--channels-last/--compile options
  sds_variants   render paths (--variants) and a trained checkpoint's field (--field-checkpoint)
  sds_compare    what is timed beside the step: U-Net floor, render paths, encodings, tiny-model step
  sds_estimates  GPU memory estimated from CPU figures
  sds_table      docs/BENCHMARKS.md from bench/results/*.json

    .venv/bin/python bench/bench_sds.py --model-size sd15 --preset draft --steps 2 --warmup 1
    .venv/bin/python bench/bench_sds.py --model-size tiny --steps 10 --no-export
    .venv/bin/python bench/bench_sds.py --device cuda --dtype fp16 --model-size sd15 --channels-last --compile

Each run writes bench/results/<name>.json and regenerates --out (docs/BENCHMARKS.md) from all of
bench/results/*.json, so CPU and GPU rows from different machines end up in one table.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from sds_compare import render_compare, render_path_compare, tiny_step_compare, unet_floor  # noqa: E402
from sds_estimates import gpu_estimate, high_estimate  # noqa: E402
from sds_models import REAL_TEXT_ENCODER_PARAMS, build_model, tiny_encoder  # noqa: E402
from sds_step import apply_speed_options, make_trainer, timed_train_step  # noqa: E402
from sds_table import RESULTS, load_results, markdown  # noqa: E402
from sds_timing import Clock, Mem, sync, tight_malloc  # noqa: E402
from sds_variants import RENDER_PATHS, checkpoint_layout, load_trained_field, parse_variants  # noqa: E402


def compare_subprocess(args, workdir: Path) -> dict:
    """render_compare + tiny_step_compare in a fresh process: clean heap for the memory figures."""
    extra = ["--field-checkpoint", str(args.field_checkpoint)] if args.field_checkpoint else []
    extra += ["--compare-encodings" if args.compare_encodings else "--no-compare-encodings"]
    out = subprocess.run([sys.executable, __file__, "--compare-only", str(workdir), "--preset", args.preset, "--device", args.device,
                          "--compare-reps", str(args.compare_reps), *extra], check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def export_bench(resolutions: list[int]) -> list[dict]:
    """bench/bench_export.py's own per-case mode (one subprocess per case, its own peak RSS)."""
    rows = []
    for res in resolutions:
        out = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_export.py"), "--case", "sphere", str(res)],
                             check=True, capture_output=True, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  export sphere {res}^3: {rows[-1]['timings']['total']:.1f}s", file=sys.stderr)
    return rows


def machine_info(device: torch.device) -> dict:
    import diffusers

    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        mem_gib = round(kb / 2**20)
    except (OSError, StopIteration, ValueError):
        pass
    info = {"cpu": cpu, "logical_cpus": os.cpu_count(), "ram_gib": mem_gib, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "loadavg_start": [round(x, 2) for x in os.getloadavg()], "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M")}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# --- the run --------------------------------------------------------------------------------------
def run(args) -> dict:
    from engine.guidance import pick_device

    device = pick_device(args.device)
    info = machine_info(device)
    torch.manual_seed(0)
    workdir = Path(tempfile.mkdtemp(prefix="bench_sds_"))
    model_dir = Path(args.model_dir) if args.model_dir else workdir / f"model-{args.model_size}"
    try:
        if not (model_dir / "unet").is_dir():
            t0 = time.perf_counter()
            # A subprocess, so the ~3.4 GB fp32 build does not inflate this process's memory figures.
            subprocess.run([sys.executable, __file__, "--build-only", str(model_dir), "--model-size", args.model_size], check=True)
            print(f"built {args.model_size} model in {time.perf_counter() - t0:.0f}s -> {model_dir}", file=sys.stderr)
        disk = sum(f.stat().st_size for f in model_dir.rglob("*") if f.is_file())
        mem = Mem(device)
        rss_before_load = mem.current()
        variants = parse_variants(args.variants)
        layout, field_state = checkpoint_layout(args.field_checkpoint)
        overrides = dict(layout)
        if args.render_resolution:
            overrides["render_resolution"] = args.render_resolution
        main_path, main_encoder = variants[0]
        args.encoding = overrides.pop("encoding", args.encoding)  # a checkpoint's field fixes its encoding
        trainer, load_s, init_s = make_trainer(model_dir, args.preset, device, args.dtype, args.encoding, workdir / "run",
                                               **overrides, **RENDER_PATHS[main_path])
        load_trained_field(trainer, field_state)
        g = trainer.guidance
        encoders = {"vae": g.vae}
        if any(enc == "tiny" for _, enc in variants):
            encoders["tiny"] = tiny_encoder(model_dir, g)
        g.vae = encoders[main_encoder]
        notes = apply_speed_options(g, args, device)
        after_load = mem.current()
        load_peak = mem.peak()  # before any reset: the high-water mark of loading (VmHWM / CUDA max)
        print(f"loaded in {load_s:.1f}s, trainer init (text embeddings) {init_s:.1f}s; RSS/alloc {after_load:.0f} MiB", file=sys.stderr)
        # First step = the real Trainer.train_step, then the preview, as `python -m engine generate` does.
        t0 = time.perf_counter()
        trainer.train_step()
        sync(device)
        first_step_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        trainer.write_preview()
        preview_s = time.perf_counter() - t0
        print(f"first step {first_step_s:.1f}s, preview {preview_s:.1f}s", file=sys.stderr)
        # Past the albedo warm-up: time the shading mode 80% of a run's steps use (normals needed).
        trainer.step = max(trainer.step, trainer.cfg.albedo_warmup)
        runners = [(variants[0], trainer)]
        for k, (path, enc) in enumerate(variants[1:], 1):
            other, _, _ = make_trainer(model_dir, args.preset, device, args.dtype, args.encoding, workdir / f"run{k}", guidance=g,
                                       **overrides, **RENDER_PATHS[path])
            load_trained_field(other, field_state)
            other.step = trainer.step
            other.update_occupancy()  # its first (full) grid update, as the main trainer's untimed first step did
            runners.append(((path, enc), other))
        per_variant = {v: [] for v, _ in runners}
        round_floors: list[float] = []
        emb_len = int(trainer.uncond.shape[0])
        # Side by side: one step of each variant in turn, then one bare U-Net call (the floor), so load changes on
        # this shared machine hit steps and floor alike; a floor timed once at the end, minutes later and after
        # tight_malloc (which slows allocation), gave ratios that moved by 2x between runs.
        for i in range(max(args.warmup - 1, 0) + args.steps):
            timed = i >= max(args.warmup - 1, 0)
            for (path, enc), tr in runners:
                g.vae = encoders[enc]
                _, clock = timed_train_step(tr, shading=args.shading)
                if timed:
                    per_variant[(path, enc)].append({**clock.times, "total": clock.total()})
                print(f"{path}-{enc} step {i + 1}: {clock.total():.2f}s " + " ".join(f"{k}={v:.2f}" for k, v in clock.times.items()),
                      file=sys.stderr)
            if timed:
                round_floors.append(unet_floor(g, device, 1, 0, mem, emb_len=emb_len)["mean_s"])
                print(f"U-Net floor (round {i + 1}): {round_floors[-1]:.2f}s; load {os.getloadavg()[0]:.2f}", file=sys.stderr)
        g.vae = encoders[main_encoder]
        steps = per_variant[variants[0]]
        mean = {k: sum(s[k] for s in steps) / len(steps) for k in steps[0]}
        variant_means = {v: {k: sum(s[k] for s in st) / len(st) for k in st[0]} for v, st in per_variant.items()}
        encoder_params = {name: sum(p.numel() for p in mod.parameters()) for name, mod in encoders.items()}
        del runners
        # One more step for memory: per-phase peaks, saved-for-backward bytes. Not timed (tight malloc is slower).
        gc.collect()
        tight = device.type == "cpu" and tight_malloc(mem)
        saved: dict = {}
        _, mclock = timed_train_step(trainer, shading=args.shading, clock=Clock(device, mem), saved=saved)
        step_base = mclock.base
        # Memory of the bare call (after tight_malloc, so its time is not used); the floor's time is the rounds' mean.
        floor = unet_floor(g, device, args.floor_reps, 0, mem, emb_len=emb_len)
        floor.update({"mean_s": sum(round_floors) / len(round_floors), "all_s": round_floors, "interleaved": True})
        print(f"U-Net floor {floor['mean_s']:.2f}s (mean of {len(round_floors)} interleaved calls)", file=sys.stderr)
        field_params = sum(p.numel() for p in trainer.field.parameters()) + sum(p.numel() for p in trainer.background.parameters())
        res = {
            "name": "-".join([args.model_size, args.preset, device.type, args.dtype, args.encoding]
                             + ([f"{main_path}-{main_encoder}"] if args.variants != "fast-vae" else [])
                             + (["cl"] if args.channels_last and device.type == "cuda" else [])
                             + (["compile"] if args.compile and device.type == "cuda" else [])
                             + ([f"attn-{args.attention}"] if args.attention != "sdpa" else [])
                             + ([f"r{args.render_resolution}"] if args.render_resolution else [])),
            "machine": info, "device": str(device), "dtype": args.dtype, "preset": args.preset, "encoding": args.encoding,
            "model_size": args.model_size, "notes": notes, "shading": args.shading or "mixed",
            "render_resolution": trainer.cfg.render_resolution, "samples_per_ray": trainer.cfg.samples_per_ray,
            "vae_input": g.image_size, "model_disk_mib": disk / 2**20,
            "steps_timed": args.steps, "warmup": args.warmup, "steps": steps, "mean": mean, "steps_per_s": 1.0 / mean["total"],
            "guidance_s": mean["vae_encode"] + mean["unet_cfg"], "backward_s": mean["backward_guidance"] + mean["backward_render"],
            "unet_floor": floor, "ratio": mean["total"] / floor["mean_s"],
            "variants": [{"name": f"{p}-{e}", "path": p, "encoder": e, "mean": m, "ratio": m["total"] / floor["mean_s"],
                          "round_ratios": [st["total"] / f for st, f in zip(per_variant[(p, e)], round_floors)],
                          "steps": len(per_variant[(p, e)])} for (p, e), m in variant_means.items()],
            "encoder_params": encoder_params,
            "field": {"checkpoint": args.field_checkpoint, "step": None if field_state is None else int(field_state["step"])},
            "load_s": load_s, "trainer_init_s": init_s, "first_step_s": first_step_s, "preview_s": preview_s,
            "time_to_first_preview_s": load_s + init_s + first_step_s + preview_s,
            "params": {"unet": sum(p.numel() for p in g.unet.parameters()),
                       "vae_encoder": sum(p.numel() for p in g.vae.parameters()) if g.vae is not None else 0,
                       "text_encoder": REAL_TEXT_ENCODER_PARAMS.get(args.model_size, 0), "field": field_params},
            "saved_mib": {k: v / 2**20 for k, v in saved.items() if not k.startswith("_")},
            "memory": {"kind": "cuda_max_allocated" if device.type == "cuda" else "cpu_rss", "tight_malloc": tight,
                       "before_load_mib": rss_before_load, "after_load_mib": after_load, "step_base_mib": step_base,
                       "phase_peak_mib": mclock.peaks, "load_peak_mib": load_peak},
        }
        res["memory"]["step_peak_mib"] = step_base + max(v for k, v in mclock.peaks.items() if not k.endswith("_end"))
        # (VmHWM resets also reset ru_maxrss, so the process peak is the max of what was observed.)
        res["memory"]["process_peak_mib"] = max(load_peak, res["memory"]["step_peak_mib"])
        if device.type == "cpu" and args.model_size != "tiny":
            res["gpu_estimate"] = gpu_estimate(res)
        del trainer, g
        gc.collect()
        if args.compare_encodings or args.compare_paths:
            print("render paths / hash grid vs frequency ...", file=sys.stderr)
            res.update(compare_subprocess(args, workdir))
        if args.export:
            print("mesh export (bench/bench_export.py --case) ...", file=sys.stderr)
            res["export"] = export_bench(args.export_resolutions)
        if device.type == "cpu" and args.model_size != "tiny":
            res["high_estimate"] = high_estimate(res)
        res["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        return res
    finally:
        if not args.keep_model:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}", file=sys.stderr)



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="draft", choices=["draft", "standard", "high"])
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"], help="guidance model dtype (the NeRF is fp32)")
    ap.add_argument("--steps", type=int, default=None, help="steps timed (default 2 at SD size, 10 tiny)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first (the first is Trainer.train_step + preview)")
    ap.add_argument("--model-size", default="sd15", choices=["sd15", "sd21", "tiny"])
    ap.add_argument("--encoding", default="hashgrid", choices=["hashgrid", "frequency"])
    ap.add_argument("--shading", default="shaded", choices=["albedo", "shaded", "textureless", "mixed"],
                    help="shading mode of timed steps; 'mixed' = the trainer's random choice")
    ap.add_argument("--render-resolution", type=int, default=None, help="override the preset's render resolution")
    ap.add_argument("--attention", default="sdpa", choices=["sdpa", "classic", "sliced"])
    ap.add_argument("--channels-last", action="store_true", help="CUDA only; skipped on CPU")
    ap.add_argument("--compile", action="store_true", help="torch.compile the U-Net; CUDA only, skipped on CPU")
    ap.add_argument("--compile-mode", default="max-autotune-no-cudagraphs")
    ap.add_argument("--floor-reps", type=int, default=None, help="bare U-Net forwards for the floor's memory figure (default 1 at SD size, 10 tiny); its time is one call per "
                         "timed round, interleaved with the steps")
    ap.add_argument("--compare-encodings", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--compare-paths", action=argparse.BooleanOptionalAction, default=True,
                    help="reference vs fast render path, forward + backward (in a subprocess, with the encodings comparison)")
    ap.add_argument("--field-checkpoint", metavar="RUN_DIR", default=None,
                    help="a trained run folder whose field the render comparisons and timed steps use (not the start blob)")
    ap.add_argument("--variants", default="fast-vae",
                    help="comma list of PATH-ENCODER (PATH: fast|reference, ENCODER: vae|tiny), timed side by side, steps "
                         "interleaved; the first is the main row. e.g. reference-vae,fast-vae,fast-tiny")
    ap.add_argument("--compare-reps", type=int, default=2, help="timed reps per encoding (after 1 warm-up)")
    ap.add_argument("--export", action=argparse.BooleanOptionalAction, default=True, help="run bench_export.py cases")
    ap.add_argument("--export-resolutions", type=lambda s: [int(x) for x in s.split(",")], default=[128, 256])
    ap.add_argument("--model-dir", default=None, help="reuse (or create) the generated model folder here")
    ap.add_argument("--keep-model", action="store_true", help="keep the temporary folder (model weights) at the end")
    ap.add_argument("--out", default=str(ROOT / "docs" / "BENCHMARKS.md"))
    ap.add_argument("--no-write", action="store_true", help="print only; write neither bench/results nor --out")
    ap.add_argument("--build-only", metavar="FOLDER", help=argparse.SUPPRESS)
    ap.add_argument("--markdown-only", action="store_true", help="only regenerate --out from bench/results/*.json")
    ap.add_argument("--compare-only", metavar="WORKDIR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build_only:
        build_model(Path(args.build_only), args.model_size)
        return
    if args.markdown_only:
        md = markdown(load_results())
        Path(args.out).write_text(md)
        print(md)
        return
    if args.compare_only:
        from engine.guidance import pick_device

        device = pick_device(args.device)
        mem = Mem(device)
        if device.type == "cpu":
            tight_malloc(mem)
        paths = render_path_compare(args.preset, device, args.compare_reps, 1, mem, args.field_checkpoint)
        rows = render_compare(args.preset, device, args.compare_reps, 1, mem) if args.compare_encodings else []
        tiny = tiny_step_compare(args.preset, device, args.compare_reps, 1, Path(args.compare_only)) if args.compare_encodings else []
        print(json.dumps({"render_paths": paths, "render_compare": rows, "tiny_step_compare": tiny}))
        return
    sd = args.model_size != "tiny"
    args.steps = args.steps or (2 if sd else 10)
    args.floor_reps = args.floor_reps or (1 if sd else 10)
    args.shading = None if args.shading == "mixed" else args.shading
    res = run(args)
    text = json.dumps(res, indent=1)
    if args.no_write:
        print(text)
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{res['name']}.json").write_text(text)
    md = markdown(load_results())
    Path(args.out).write_text(md)
    print(md)


if __name__ == "__main__":
    main()
