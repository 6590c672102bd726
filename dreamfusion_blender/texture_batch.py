"""Headless texture: ``blender -b scene.blend -c dreamfusion texture --object NAME --prompt P [--out DIR]``
(and ``python -m dreamfusion_blender.batch texture --blend scene.blend ...`` with bpy from PyPI).

The object is checked before anything is written (exit 2 with one line on stderr); the run goes through
the same runner as the button, and the textured scene is saved as a NEW file: OUT/<blend>-textured.blend
(-2, -3... never overwriting, the opened .blend included) with the engine's .glb next to it. Exit codes
as ``generate``: 0 done, 1 the run failed, 2 bad input.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path


def add_parser(sub) -> None:
    t = sub.add_parser("texture", help="texture one mesh object of the open .blend from a prompt")
    t.add_argument("--object", required=True, metavar="NAME", help="the mesh object to texture")
    t.add_argument("--prompt", required=True, help="what its surface should look like")
    t.add_argument("--blend", help="open this .blend first (when Blender was not started with it)")
    t.add_argument("--out", help="folder for the textured .blend and .glb (default: the .blend's folder)")
    t.add_argument("--runs", help="folder for the engine's run folders (default: OUT/runs)")
    t.add_argument("--model", help="hub id, local diffusers folder or builtin:shapes (default: the preferences')")
    t.add_argument("--preset", choices=["draft", "standard", "high"], default="draft")
    t.add_argument("--steps", type=int)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--negative-prompt", default="")
    t.add_argument("--texture-size", type=int)
    t.add_argument("--device", help="auto | cpu | cuda | mps (default: the preferences')")
    t.add_argument("--python", help="interpreter that runs the engine (default: the preferences')")
    t.add_argument("--timeout", type=float, help="seconds before the run is cancelled")


def _fail(msg: str) -> int:
    print(f"dreamfusion: {msg}", file=sys.stderr, flush=True)
    return 2


def main(args) -> int:
    import bpy

    from . import runner, texture_job
    from .batch_names import free_stem
    from .prefs import settings

    if args.blend:
        blend = Path(args.blend).expanduser()
        if not blend.is_file():
            return _fail(f"--blend {blend}: no such file")
        try:
            bpy.ops.wm.open_mainfile(filepath=str(blend))
        except RuntimeError as exc:
            return _fail(f"cannot open {blend}: {exc}")
    current = bpy.data.filepath
    obj = bpy.data.objects.get(args.object)
    if obj is None:
        names = ", ".join(sorted(o.name for o in bpy.data.objects if o.type == "MESH")[:10]) or "none"
        return _fail(f"no object named '{args.object}' in {current or 'the open file'} (mesh objects: {names})")
    if args.out is None and not current:
        return _fail("give --out: the open scene has no file to save the textured copy next to")
    out = Path(args.out).expanduser().resolve() if args.out else Path(current).parent
    s = settings()
    context = bpy.context
    try:
        texture_job.check_view_layer(context, obj)
        texture_job.snapshot(obj, context.evaluated_depsgraph_get())  # every object check, nothing written yet
        if not args.prompt.strip():
            raise texture_job.TargetError("the prompt is empty: describe the surface, e.g. 'a weathered bronze statue'")
        out.mkdir(parents=True, exist_ok=True)
    except texture_job.TargetError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot create --out {out}: {exc.strerror or exc}; choose a folder you can write to")
    t0 = time.monotonic()
    try:
        req = texture_job.prepare(context, obj, args.prompt, args.runs or str(out / "runs"), model=args.model or s.model,
                                  negative_prompt=args.negative_prompt, preset=args.preset, seed=args.seed, steps=args.steps, texture_size=args.texture_size,
                                  device=args.device or s.device)
        job = runner.start_texture(context.scene, req, python=args.python or s.python)
    except (ValueError, FileNotFoundError) as exc:
        return _fail(str(exc))
    ok, msg, _ = runner.wait(job, timeout=args.timeout)
    label = f"texture \"{args.object}\" \"{args.prompt[:40]}\" ({time.monotonic() - t0:.0f}s)"
    if not ok:
        print(f"[1/1] FAILED {label}: {msg}", flush=True)
        return 1
    stem = free_stem(out, f"{Path(current).stem if current else 'untitled'}-textured")
    blend_out, glb = stem.with_suffix(".blend"), stem.with_suffix(".glb")
    bpy.ops.wm.save_as_mainfile(filepath=str(blend_out), copy=True)  # the opened .blend is never overwritten
    src = job.state.asset.get("glb")
    files = f"{blend_out}"
    if src and Path(src).is_file():
        shutil.copy2(src, glb)
        files += f", {glb}"
    print(f"[1/1] ok {label}: {files} | {msg}", flush=True)
    return 0
