"""Benchmark (not a test): mesh export, today's path vs the fast path, side by side in one run.

    .venv/bin/python bench/bench_export.py                 # table + docs/BENCHMARKS-export.md
    .venv/bin/python bench/bench_export.py --no-write --run-dir runs/a-red-cube-...   # reuse a trained run

Paths (engine.mesh.ExportSettings):
  old   what export did before issue 15: every grid point queried, fixed iso, decimation to 100k
        faces, no smoothing, xatlas's own chart options, one albedo query per texel;
  new   the defaults: coarse-to-fine sampling with surface tracking, Taubin smoothing, decimation to
        the preset's target_faces (40k at 256^3, 20k at 128^3), capped atlas charts, the texture baked
        from the albedo on the surface cells' corners; automatic iso ('new-auto') and the field's known
        surface level ('new', comparable with the SDF);
  new-texel  'new-auto' with the texture baked by one albedo query per texel (albedo_sampling
        "texel", the bake before the grid bake), to show that stage's share.
Since 2026-11-30 06:00 every path queries a hash grid through its faster no-autograd encoding
(engine/field.py), so 'old' is today's code with the old settings, not the old code.
Fields: the analytic sphere, torus and grille (rods 3 voxels thick at 256^3) of tests/analytic_fields.py
(density 20*sigmoid(-sdf/0.01): density 10 is the true surface) and a trained field: a 100-step
builtin:shapes run of "a red cube" the benchmark makes itself with the prior's own settings (a 4-band
frequency field since the prior's dreamfusion.json chose it; 1 torch thread; cached in
bench/results/trained-cube/), or any run given by --run-dir (the issue's hash-grid target: a run made
with `--set encoding=hashgrid`). Accuracy by engine.mesh.metrics against the true surface
(the cube for the trained field), colour error of the written texture, silhouette IoU of the mesh
against the NeRF's rendered opacity (trained field, the run's samples per ray, 8 views).
Each case runs in its own subprocess (peak RSS is its own) with one torch thread; the load average
is printed with every row because this machine is shared.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / "results" / "trained-cube"
PATHS = {
    "old": dict(sampling="dense", smooth_iterations=0, atlas="xatlas-default", target_faces=100_000,
                albedo_sampling="texel"),
    "new": {},
    "new-auto": {},
    "new-texel": dict(albedo_sampling="texel"),
}
TARGET = {128: 20_000, 256: 40_000}  # the draft / standard presets' target_faces (engine/config.py)


def _setup():
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    import torch

    torch.set_num_threads(1)


def analytic_shape(name: str):
    import analytic_fields as af

    # At 256^3 the grille's rods are 3 voxels thick (h = 2/255); at 128^3 they are 1.5.
    return af.grille(radius=0.012, count=12) if name == "grille" else af.SHAPES[name]()


def run_case(field: str, resolution: int, path: str, run_dir: str | None) -> dict:
    """Runs inside the child process."""
    _setup()
    import numpy as np
    import torch
    import trimesh

    import analytic_fields as af
    from engine.mesh import ExportSettings, export_field, metrics

    settings = dict(resolution=resolution, texture_size=1024, progress=False, target_faces=TARGET[resolution])
    settings.update(PATHS[path])
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load0 = os.getloadavg()[0]
    if field == "trained":
        nerf, cfg = _load_trained(Path(run_dir))
        density, albedo = nerf.density, nerf.albedo
        if path == "old":
            settings["iso"] = 2.0  # the builtin prior's constant before the automatic level
        from engine.priors import shapes_data

        ref = metrics.reference_from_sdf(lambda p: shapes_data.sdf("cube", p), n=20000, exact_sdf=True)
    else:
        shape = analytic_shape(field)
        density, albedo = shape.density, af.octant_albedo
        if path not in ("new-auto", "new-texel"):
            settings["iso"] = af.ISO
        ref = metrics.reference_from_samples(shape.sdf, *shape.sample_surface(20000, 2))
    with tempfile.TemporaryDirectory() as d:
        res = export_field(density, albedo, d, ExportSettings(**settings))
        scene = trimesh.load(res.paths["glb"], force="scene")
        mesh = list(scene.geometry.values())[0]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    v, f = np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64)
    sc = metrics.surface_scores(v, f, ref, voxel=2.0 / (resolution - 1))
    row = dict(field=field, resolution=resolution, path=path, iso=res.iso, iso_method=res.iso_method,
               faces=res.n_faces, mc_faces=res.n_faces_extracted, points=res.points_queried,
               albedo_points=res.albedo_queried,
               timings=res.timings, cpu=res.cpu_timings, chamfer=sc.chamfer, chamfer99=sc.chamfer99, nc=sc.normal_consistency,
               near=sc.near_fraction, volume_change=res.volume_change, rss_peak_mib=peak, rss_base_mib=base,
               load=(load0, os.getloadavg()[0]))
    if field == "trained":
        row["silhouette_iou"] = _silhouette_iou(nerf, cfg, v, f)
    else:
        pts, _, fid, bary = metrics.sample_surface(v, f, 20000, seed=1)
        uv = np.einsum("nk,nkd->nd", bary, mesh.visual.uv[f[fid]])
        image = np.asarray(mesh.visual.material.baseColorTexture.convert("RGB")).astype(np.float64) / 255
        hgt = image.shape[0]
        col = np.clip(np.round(uv[:, 0] * hgt - 0.5), 0, hgt - 1).astype(int)
        rowi = np.clip(np.round((1 - uv[:, 1]) * hgt - 0.5), 0, hgt - 1).astype(int)
        row["colour_mae"] = float(np.abs(image[rowi, col] - af.octant_albedo_np(pts)).mean())
    return row


def _load_trained(run_dir: Path):
    from engine import runfolder
    from engine.export_run import load_field

    cfg = runfolder.load_run_config(run_dir)
    import torch

    return load_field(run_dir, cfg, torch.device("cpu")), cfg


def _silhouette_iou(nerf, cfg, v, f) -> float:
    import torch

    from engine.cameras import make_cameras
    from engine.mesh import metrics
    from engine.render import render

    cams = make_cameras([0, 90, 180, 270, 45, 135, 225, 315], [15] * 4 + [45] * 4, 2.5, 1.0)
    with torch.no_grad():
        out = render(nerf, lambda d: torch.ones_like(d), cams, 64, cfg.samples_per_ray, perturb=False)
    return metrics.mask_iou(metrics.mesh_silhouettes(v, f, cams, 64), (out.opacity[:, 0] > 0.5).numpy())


def ensure_trained_run(run_dir: str | None) -> Path:
    if run_dir:
        return Path(run_dir)
    found = sorted(CACHE.glob("*/checkpoints/last.pt"))
    if found:
        return found[-1].parent.parent
    CACHE.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    print("training a 100-step builtin:shapes run of 'a red cube' (minutes)...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "engine", "generate", "a red cube", "--model", "builtin:shapes",
                    "--steps", "100", "--no-export", "--no-progress", "--out", str(CACHE)], check=True, cwd=ROOT, env=env)
    return sorted(CACHE.glob("*/checkpoints/last.pt"))[-1].parent.parent


def machine_info() -> list[str]:
    import numpy
    import torch
    cpu = platform.processor() or "?"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return [f"- date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
            f"- machine: {cpu}, {os.cpu_count()} logical CPUs (shared); load average at start {load}",
            f"- python {platform.python_version()}, torch {torch.__version__}, numpy {numpy.__version__}; "
            f"one torch thread per case"]


STAGE_COLS = ["density", "iso", "refine", "surface", "smooth", "decimate", "uv", "rasterize", "albedo", "write",
              "total"]


def table(rows: list[dict]) -> str:
    head = ("| field | grid | path | iso | points queried | albedo queries | faces | " + " | ".join(STAGE_COLS)
            + " | CPU total | speed-up | Chamfer | p99 | NC | near | colour MAE / silh. IoU | load |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    old = {(r["field"], r["resolution"]): r["timings"]["total"] for r in rows if r["path"] == "old"}
    for r in rows:
        t = " | ".join(f"{r['timings'][s]:.2f}" if s in r["timings"] else "-" for s in STAGE_COLS)
        o = old.get((r["field"], r["resolution"]))
        speed = f"{o / r['timings']['total']:.1f}x" if o and r["path"] != "old" else "-"
        last = f"{r['colour_mae']:.4f}" if "colour_mae" in r else f"IoU {r['silhouette_iou']:.3f}"
        lines.append(f"| {r['field']} | {r['resolution']}^3 | {r['path']} | {r['iso']:.3g} | {r['points']} | "
                     f"{r.get('albedo_points', '-')} | {r['faces']} | {t} | {r['cpu']['total']:.2f} | {speed} | {r['chamfer']:.5f} | {r['chamfer99']:.4f} | {r['nc']:.4f} | {r['near']:.3f} | "
                     f"{last} | {r['load'][0]:.1f}-{r['load'][1]:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", nargs=3, metavar=("FIELD", "RES", "PATH"), help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", help="a trained run to export (default: the cached builtin:shapes run)")
    ap.add_argument("--fields", default="sphere,torus,grille,trained")
    ap.add_argument("--resolutions", default="128,256")
    ap.add_argument("--paths", default=",".join(PATHS), help="which of " + ", ".join(PATHS))
    ap.add_argument("--no-write", action="store_true", help="only print the table")
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case[0], int(args.case[1]), args.case[2], args.run_dir)))
        return
    info = machine_info()
    fields = args.fields.split(",")
    run_dir = str(ensure_trained_run(args.run_dir)) if "trained" in fields else None
    rows, failures = [], []
    for field in fields:
        for res in (int(r) for r in args.resolutions.split(",")):
            for path in args.paths.split(","):
                if field == "trained" and path == "new":
                    continue  # no known surface level to give: 'new-auto' is its fast path
                cmd = [sys.executable, __file__, "--case", field, str(res), path]
                if run_dir:
                    cmd += ["--run-dir", run_dir]
                out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
                if out.returncode != 0:  # a failed case is a result too: report it, go on
                    err = (out.stderr.strip().splitlines() or ["?"])[-1]
                    print(f"{field} {res}^3 {path}: FAILED: {err}", file=sys.stderr, flush=True)
                    failures.append(f"- {field} {res}^3 {path}: failed: {err}")
                    continue
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                r = rows[-1]
                with open(ROOT / "bench" / "results" / "export-rows.jsonl", "a") as fh:  # survives an abort
                    fh.write(json.dumps(r) + "\n")
                print(f"{field} {res}^3 {path}: {r['timings']['total']:.1f} s (CPU {r['cpu']['total']:.1f} s), iso {r['iso']:.3g}, "
                      f"{r['faces']} faces, load {r['load'][0]:.1f}", file=sys.stderr, flush=True)
    md = "\n".join([
        "# Mesh export benchmark (CPU): today's path vs the fast path", "",
        "Generated by `bench/bench_export.py` (its docstring says what each path and field is). Seconds per",
        "stage of `engine.mesh.export_field`, texture 1024^2, glb; speed-up = old total / this total, same",
        "field and grid, same run. Chamfer (mean, p99) in world units (the bounding sphere has radius 1; a",
        "voxel is 0.0157 at 128^3, 0.0078 at 256^3), NC = normal consistency, near = share of mesh area",
        "within a voxel of the true surface (all engine/mesh/metrics.py). For the trained field the truth is",
        "the prompt's cube (how far SDS got, not the exporter's error) and the last column is the mesh's",
        "silhouette IoU against the NeRF's rendered opacity > 0.5. load = load average before-after the case.",
        "", *info, "", table(rows), "", *failures, ""])
    print(md)
    if not args.no_write:
        (ROOT / "docs" / "BENCHMARKS-export.md").write_text(md)
        (ROOT / "bench" / "results" / "export.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
