"""Benchmark (not a test): `python -m engine texture` with builtin:shapes, and the mesh renderer's cost.

    .venv/bin/python bench/bench_texture.py                      # everything, writes bench/results/texture.json
    .venv/bin/python bench/bench_texture.py --only timing,memory  # the side-by-side step times and peak memory

Parts:
  colours  analytic meshes (a sphere with its own UVs, a cube and a 10k-face torus without, a ~100k-face
           sphere, two loose cubes with a non-manifold fin) x the four colours x seeds: a full builtin
           texture run each (the prior's recipe, 300 steps); the mean texel colour error (mean |rgb - the
           prompt's colour| over the texels the charts cover, the generate checks' measure: threshold 0.25)
           and the nearest named colour; plus "a red sphere" on the cube mesh (it must come out a red cube:
           the geometry is the input's by construction, the colour is measured).
  timing   seconds per SDS step, a texture step (mesh render) against a generate step (NeRF render) of the
           same prior, cameras and render size, alternating in one process (16 and 32 px: the prior's size;
           64 px: Stable Diffusion's render size, with the builtin prior's U-Net).
  sd15     at Stable Diffusion 1.5 size (bench/bench_sds.py's random-weight SD-1.5 U-Net and VAE, the draft
           preset's render size upsampled to 512^2 for the VAE): seconds and peak resident memory (VmHWM
           above the step's start) of one generate step and one texture step, alternating, in one process.
  albedo   the albedo field (engine encodings, what `texture` uses) against a UV texture optimised directly
           (a 256^2 logit image, bilinear lookup at the interpolated per-corner UVs, Adam lr 0.05): the
           builtin recipe on the 10k-face torus with xatlas UVs, "a red torus", two seeds; at fixed steps the
           mean colour error of albedo renders from four fixed views, and the spread (std) of the covered
           pixels' colour (a uniform target: lower is cleaner).
  memory   peak resident memory of one mesh render forward+backward (10k and 100k faces; 64^2 the SD render
           size, 512^2 the SD image size), each in its own process, above the process's baseline.
One torch thread; the load average is printed with each part because the machine is shared.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
COLOUR_ERROR_MAX = 0.25  # tests/test_sds_shapes.py's threshold for generate
#: The bound tests/test_raster.py holds a 100k-face render at 512^2 (forward + backward) to, in MiB of peak
#: RSS above the process's baseline; part_memory measured 149 (docs/TEXTURE.md): the rest is headroom
#: for allocator noise.
RENDER_512_PEAK_MIB = 192


def load() -> str:
    return open("/proc/loadavg").read().split()[0] if os.path.exists("/proc/loadavg") else "?"


def make_meshes(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, the shape word of its prompt)."""
    import numpy as np
    import trimesh

    from engine import texture_mesh

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    ball = trimesh.creation.icosphere(subdivisions=3)
    corner_uvs = texture_mesh.generated_uvs(ball.vertices, ball.faces, 256)
    uv_list, idx = np.unique(corner_uvs.reshape(-1, 2), axis=0, return_inverse=True)
    idx = idx.reshape(-1, 3)
    lines = [f"v {x!r} {y!r} {z!r}" for x, y, z in ball.vertices] + [f"vt {u!r} {v!r}" for u, v in uv_list]
    lines += [f"f {a + 1}/{ta + 1} {b + 1}/{tb + 1} {c + 1}/{tc + 1}" for (a, b, c), (ta, tb, tc) in zip(ball.faces, idx)]
    (folder / "sphere-uv.obj").write_text("\n".join(lines) + "\n")
    out["sphere-uv"] = (folder / "sphere-uv.obj", "sphere")
    trimesh.creation.box(extents=(1, 1, 1)).export(folder / "cube.glb")
    out["cube"] = (folder / "cube.glb", "cube")
    torus = trimesh.creation.torus(0.4, 0.15, major_sections=100, minor_sections=50)  # 10,000 faces
    torus.export(folder / "torus-10k.ply")
    out["torus-10k"] = (folder / "torus-10k.ply", "torus")
    big = trimesh.creation.uv_sphere(radius=0.5, count=[160, 160])
    trimesh.Trimesh(big.vertices, big.faces, process=False).export(folder / "sphere-100k.glb")
    out["sphere-100k"] = (folder / "sphere-100k.glb", "sphere")
    a = trimesh.creation.box(extents=(0.5, 0.5, 0.5))
    a.apply_translation((-0.35, 0, 0))
    b = trimesh.creation.box(extents=(0.5, 0.5, 0.5))
    b.apply_translation((0.35, 0, 0))
    v = np.concatenate([a.vertices, b.vertices])
    f = np.concatenate([a.faces, b.faces + len(a.vertices)])
    e0, e1 = a.edges_unique[0]
    fin = len(v)
    v = np.concatenate([v, [a.vertices[e0] + (0, 0.4, 0.2)]])
    f = np.concatenate([f, [[e0, e1, fin]]])  # a third face on a cube edge: non-manifold
    trimesh.Trimesh(v, f, process=False).export(folder / "loose-fin.obj")
    out["loose-fin"] = (folder / "loose-fin.obj", "cube")
    return out


def texel_colour(asset: Path):
    """Mean colour and the covered texels' colours of a baked texture (charts only, not the fill)."""
    import numpy as np
    from PIL import Image

    from engine.mesh.bake import rasterize
    from engine.mesh.progress import Reporter

    img = np.asarray(Image.open(asset / "albedo.png"), dtype=np.float64) / 255.0
    cu = np.load(asset / "corner_uvs.npy").astype(np.float64).reshape(-1, 2)
    texels = rasterize(cu, np.arange(len(cu)).reshape(-1, 3), img.shape[0], Reporter(False, None), margin=0.0)[0]
    return img.reshape(-1, 3)[texels]


def part_colours(seeds, only_cases=None, keep: Path | None = None) -> list[dict]:
    from engine import cli
    from engine.priors import shapes_data

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        meshes = make_meshes(Path(tmp) / "meshes")
        # The shape word disagrees with the mesh first, then rounds in which every mesh gets another colour,
        # so a cut-short run still covers every mesh and every colour.
        cases = [("cube", "red", "sphere")]
        names, colours = list(meshes), list(shapes_data.COLOURS)
        for k in range(len(colours)):
            cases += [(name, colours[(i + k) % len(colours)], meshes[name][1]) for i, name in enumerate(names)]
        for seed in seeds:
            for name, colour, shape in cases:
                if only_cases and name not in only_cases:
                    continue
                prompt = f"a {colour} {shape}"
                out = Path(tmp) / "runs" / f"{name}-{colour}-{shape}-{seed}"
                t0 = time.monotonic()
                code = cli.main(["texture", str(meshes[name][0]), prompt, "--out", str(out), "--model", "builtin:shapes",
                                 "--device", "cpu", "--no-progress", "--seed", str(seed)])
                wall = time.monotonic() - t0
                assert code == 0, (name, prompt, code)
                (run,) = out.iterdir()
                asset = run / "asset"
                meta = json.loads((asset / "asset.json").read_text())
                rgb = texel_colour(asset)
                target = shapes_data.colour_rgb(colour).numpy()
                err = float(abs(rgb - target).mean())
                mean = rgb.mean(0)
                nearest = min(shapes_data.COLOURS, key=lambda n: float(abs(shapes_data.colour_rgb(n).numpy() - mean).sum()))
                row = dict(mesh=name, prompt=prompt, seed=seed, faces=meta["faces"], uv=meta["uv"], colour_error=round(err, 4),
                           nearest=nearest, ok=bool(nearest == colour and err <= COLOUR_ERROR_MAX),
                           mean_rgb=[round(float(c), 3) for c in mean], wall_s=round(wall, 1), load=load())
                rows.append(row)
                print(json.dumps(row), flush=True)
                if keep is not None:  # the assets, for pictures (scripts/render_glb.py)
                    keep.mkdir(parents=True, exist_ok=True)
                    import shutil

                    shutil.copy(asset / "asset.glb", keep / f"{name}-{colour}-{shape}-{seed}.glb")
    return rows


def part_timing(steps: int = 12) -> list[dict]:
    import torch

    from engine.config import build_config
    from engine.guidance import Guidance
    from engine.protocol import EventStream
    from engine.recipe import resolve
    from engine.texture_run import TEXTURE_RECIPE, _trainer_class
    from engine.train import Trainer
    import trimesh

    torch.set_num_threads(1)
    guidance = Guidance("builtin:shapes", torch.device("cpu"), torch.float32, offline=True)
    torus = trimesh.creation.torus(0.4, 0.15, major_sections=100, minor_sections=50)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (16, 32, 64):
            cfg = build_config("standard", prompt="a red torus", model="builtin:shapes", device="cpu")
            resolve(cfg, guidance.family, guidance.recommended)
            cfg.render_resolution, cfg.albedo_warmup, cfg.start_shape = size, 0, "ball"
            tex_cfg = type(cfg).from_json({**cfg.to_json(), **TEXTURE_RECIPE})
            gen = Trainer(cfg, Path(tmp), EventStream(), guidance, torch.device("cpu"), progress_bar=False)
            tex = _trainer_class()(tex_cfg, Path(tmp), EventStream(), guidance, torch.device("cpu"),
                                   torus.vertices * 0.6 / 0.55, torus.faces, progress_bar=False)
            times = {"generate": [], "texture": []}
            for i in range(steps):
                for name, tr in (("generate", gen), ("texture", tex)) if i % 2 == 0 else (("texture", tex), ("generate", gen)):
                    t0 = time.perf_counter()
                    tr.train_step()
                    if i >= 2:  # first steps: one-off costs
                        times[name].append(time.perf_counter() - t0)
            g, t = (sorted(times[k])[len(times[k]) // 2] for k in ("generate", "texture"))
            row = dict(render=size, generate_s=round(g, 4), texture_s=round(t, 4), ratio=round(t / g, 2), faces=len(torus.faces),
                       generate_samples_per_ray=cfg.samples_per_ray, load=load())
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


MEMORY_CHILD = r"""
import resource, sys, torch, trimesh, json
sys.path.insert(0, sys.argv[1])
torch.set_num_threads(1)
from engine.cameras import make_cameras
from engine.raster import render_mesh
faces, size = int(sys.argv[2]), int(sys.argv[3])
n = int(round((faces / 4) ** 0.5))  # uv_sphere: about 4 n^2 faces
m = trimesh.creation.uv_sphere(radius=0.6, count=[n, n])
v = torch.tensor(m.vertices, dtype=torch.float32, requires_grad=True)
f = torch.tensor(m.faces)
cams = make_cameras([30.0], [20.0], 2.0, 1.0)
albedo = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3), torch.nn.Sigmoid())
def status_kib(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
# The import's own peak can exceed the render's (then ru_maxrss would not move): reset the high-water
# mark (Linux clear_refs 5) and measure the render's peak above the RSS it starts from.
try:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    base, peak_now = status_kib("VmRSS"), lambda: status_kib("VmHWM")
except OSError:  # no procfs: the process's own high-water mark (0 if the import peaked higher)
    base, peak_now = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
import time
t0 = time.perf_counter()
out = render_mesh(v, f, cams, size, size, albedo_fn=albedo, shading="shaded", light_positions=cams.origins)
out.images.mean().backward()
dt = time.perf_counter() - t0
peak = peak_now()
print(json.dumps(dict(faces=len(m.faces), render=size, peak_mib=round((peak - base) / 1024, 1), seconds=round(dt, 3),
                      coverage_px=float(out.opacity.sum()), grad_finite=bool(torch.isfinite(v.grad).all()),
                      grad_abs=float(v.grad.abs().sum()))))
"""


def measure_render_memory(faces: int, size: int) -> dict:
    """One mesh render forward+backward in a fresh process: its peak RSS above that process's baseline."""
    res = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(ROOT), str(faces), str(size)], capture_output=True,
                         text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if res.returncode != 0:
        raise RuntimeError(res.stderr)
    return json.loads(res.stdout.strip().splitlines()[-1])


def part_memory() -> list[dict]:
    rows = []
    for faces in (10_000, 100_000):
        for size in (64, 512):
            row = measure_render_memory(faces, size)
            row["load"] = load()
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def _uv_texture_trainer(base, corner_uvs, size: int, lr: float):
    """A texture trainer whose albedo is a UV texture optimised directly instead of the field."""
    import torch
    import torch.nn.functional as F

    from engine import step_guard
    from engine.raster import render as raster_render

    class UVTextureTrainer(base):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.logits = torch.nn.Parameter(torch.zeros(1, 3, size, size))
            self.optimizer = torch.optim.Adam([self.logits], lr=lr, betas=(0.9, 0.99), eps=1e-15)
            self.guard = step_guard.StepGuard(self.optimizer)
            self.uv = torch.as_tensor(corner_uvs, dtype=torch.float32)  # (F,3,2), origin bottom-left

        def render(self, cams, mode, lights, background, size_, ambient):
            held = {}
            real = raster_render.rasterize

            def keep(*a, **k):
                held["frags"] = frags = real(*a, **k)
                return frags

            def lookup(points):
                frags = held["frags"]
                uv = (self.uv.index_select(0, frags.pix_face) * frags.pix_bary[..., None]).sum(1)
                grid = torch.stack([uv[:, 0] * 2 - 1, 1 - uv[:, 1] * 2], -1).view(1, -1, 1, 2)
                rgb = F.grid_sample(self.logits, grid, mode="bilinear", align_corners=False)  # (1,3,N,1)
                return torch.sigmoid(rgb[0, :, :, 0].T)

            raster_render.rasterize = keep
            try:
                return raster_render.render_mesh(self.verts, self.faces, cams, size_, size_, albedo_fn=lookup, shading=mode,
                                                 light_positions=lights, ambient=ambient, background=background)
            finally:
                raster_render.rasterize = real

    return UVTextureTrainer


def part_albedo(seeds=(0, 1), checkpoints=(25, 50, 100, 200, 300)) -> list[dict]:
    import torch
    import trimesh

    from engine import texture_mesh
    from engine.cameras import orbit_cameras
    from engine.config import build_config
    from engine.guidance import Guidance
    from engine.priors import shapes_data
    from engine.protocol import EventStream
    from engine.recipe import resolve
    from engine.texture_run import TEXTURE_RECIPE, _trainer_class

    torch.set_num_threads(1)
    dev = torch.device("cpu")
    guidance = Guidance("builtin:shapes", dev, torch.float32, offline=True)
    torus = trimesh.creation.torus(0.4, 0.15, major_sections=100, minor_sections=50)
    verts = torus.vertices * 0.6 / 0.55
    uvs = texture_mesh.generated_uvs(verts, torus.faces, 256)
    target = shapes_data.colour_rgb("red")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for kind in ("field", "uv-texture"):
                cfg = build_config("standard", prompt="a red torus", model="builtin:shapes", device="cpu", seed=seed)
                resolve(cfg, guidance.family, guidance.recommended)
                cfg = type(cfg).from_json({**cfg.to_json(), **TEXTURE_RECIPE})
                base = _trainer_class()
                cls = base if kind == "field" else _uv_texture_trainer(base, uvs, 256, 0.05)
                tr = cls(cfg, Path(tmp), EventStream(), guidance, dev, verts, torus.faces, progress_bar=False)
                cams = orbit_cameras(4, elevation=20.0, distance=0.5 * (cfg.distance_min + cfg.distance_max),
                                     focal=0.5 * (cfg.focal_min + cfg.focal_max), device=dev)
                t0 = time.monotonic()
                for step in range(1, max(checkpoints) + 1):
                    tr.train_step()
                    if step in checkpoints:
                        with torch.no_grad():
                            out = tr.render(cams, "albedo", None, None, 64, 0.0)
                        m = out.opacity[:, 0] > 0.99
                        px = out.images.permute(0, 2, 3, 1)[m]
                        row = dict(albedo=kind, seed=seed, step=step, colour_error=round(float((px - target).abs().mean()), 4),
                                   spread=round(float(px.std(0).mean()), 4), s=round(time.monotonic() - t0, 1), load=load())
                        rows.append(row)
                        print(json.dumps(row), flush=True)
    return rows


def part_sd15(steps: int = 1) -> list[dict]:
    import torch
    import trimesh

    from bench_sds import Mem, build_model, tight_malloc
    from engine.config import build_config
    from engine.guidance import Guidance
    from engine.protocol import EventStream
    from engine.recipe import resolve
    from engine.texture_run import TEXTURE_RECIPE, _trainer_class
    from engine.train import Trainer

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    dev = torch.device("cpu")
    mem = Mem(dev)
    tight_malloc(mem)
    torus = trimesh.creation.torus(0.4, 0.15, major_sections=100, minor_sections=50)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_model(Path(tmp) / "sd15", "sd15")
        guidance = Guidance(str(folder), dev, torch.float32, offline=True)
        cfg = build_config("draft", prompt="a red torus", model=str(folder), device="cpu", dtype="fp32")
        resolve(cfg, guidance.family, guidance.recommended)
        cfg.albedo_warmup, cfg.start_shape = 0, "ball"
        tex_cfg = type(cfg).from_json({**cfg.to_json(), **TEXTURE_RECIPE})
        gen = Trainer(cfg, Path(tmp), EventStream(), guidance, dev, progress_bar=False)
        tex = _trainer_class()(tex_cfg, Path(tmp), EventStream(), guidance, dev, torus.vertices * 0.6 / 0.55, torus.faces,
                               progress_bar=False)
        # No warm-up step: an SD-1.5 step takes 1-2 min on this CPU; the text embeddings are made in the
        # Trainers' init, so the first step's one-off costs are small against the U-Net and the VAE.
        for i in range(steps):
            for name, tr in (("generate", gen), ("texture", tex)) if i % 2 == 0 else (("texture", tex), ("generate", gen)):
                start = mem.current()
                mem.reset_peak()
                t0 = time.perf_counter()
                tr.train_step()
                dt = time.perf_counter() - t0
                row = dict(step=name, i=i, render=cfg.render_resolution, image=512, seconds=round(dt, 2),
                           peak_above_start_mib=round(mem.peak() - start, 1), rss_mib=round(mem.current(), 1),
                           threads=torch.get_num_threads(), load=load())
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="colours,timing,memory,sd15,albedo")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--meshes", default="", help="comma-separated mesh names for the colour part (default: all)")
    ap.add_argument("--keep", type=Path, help="copy each colour run's asset.glb into this folder")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "texture.json"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(1)
    parts = args.only.split(",")
    result = {"date": time.strftime("%Y-%m-%dT%H:%M"), "cpus": os.cpu_count()}
    if "memory" in parts:
        result["memory"] = part_memory()
    if "albedo" in parts:
        result["albedo"] = part_albedo([int(x) for x in args.seeds.split(",")])
    if "sd15" in parts:
        result["sd15"] = part_sd15()
    if "timing" in parts:
        result["timing"] = part_timing()
    if "colours" in parts:
        result["colours"] = part_colours([int(s) for s in args.seeds.split(",")],
                                         [m for m in args.meshes.split(",") if m] or None, args.keep)
    path = Path(args.json)
    old = json.loads(path.read_text()) if path.exists() else {}
    old.update(result)
    path.write_text(json.dumps(old, indent=1))
    print("wrote", path)


if __name__ == "__main__":
    main()
