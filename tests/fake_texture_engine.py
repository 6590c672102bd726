"""A stand-in for `python -m engine texture` (docs/TEXTURE_CONTRACT: OBJ in, run folder out) for the add-on's
texture tests, until and beside the real one: the same command line, events, run folder, cancel (CANCEL
file / SIGINT -> checkpoint, `cancelled`, exit 130) and `--resume`. No torch: the "texture" is the colour
named in the prompt, and the UVs are the OBJ's own (uv "input") or xatlas's (uv "generated"), as the real
engine chooses them.

Run through a wrapper "python" that drops `-m engine` (tests/test_addon_texture.py). FAKE_STEP_S slows the
steps down so a test can cancel one mid-run; FAKE_UV=generated makes UVs even when the OBJ has some.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 60, 220), "yellow": (230, 220, 30)}
STOP = {"now": False}


def emit(stream, log, event: str, **fields) -> None:
    line = json.dumps({"event": event, "time": time.time(), **fields})
    stream.write(line + "\n")
    stream.flush()
    if log is not None:
        with open(log, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def read_obj(path: Path):
    verts, uvs, faces, corners = [], [], [], []
    for line in path.read_text(encoding="ascii").splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "v":
            verts.append([float(x) for x in parts[1:4]])
        elif parts[0] == "vt":
            uvs.append([float(x) for x in parts[1:3]])
        elif parts[0] == "f":
            idx = [p.split("/") for p in parts[1:]]
            assert len(idx) == 3, "the add-on sends triangles only"
            faces.append([int(i[0]) - 1 for i in idx])
            if len(idx[0]) > 1:
                corners.append([int(i[1]) - 1 for i in idx])
    return (np.array(verts, np.float32), np.array(faces, np.int64),
            np.array(uvs, np.float32) if uvs else None, np.array(corners, np.int64) if corners else None)


def write_png(path: Path, rgb: tuple, size: int) -> None:
    from PIL import Image

    img = np.zeros((size, size, 3), np.uint8)
    img[:] = rgb
    Image.fromarray(img).save(path)


def main(argv: list[str]) -> int:
    out_stream = sys.stdout
    parser = argparse.ArgumentParser(prog="fake-engine")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("texture")
    t.add_argument("mesh", nargs="?")
    t.add_argument("prompt", nargs="?")
    t.add_argument("--out")
    t.add_argument("--resume")
    for flag in ("--model", "--preset", "--device", "--negative-prompt"):
        t.add_argument(flag)
    for flag in ("--steps", "--seed", "--texture-size"):
        t.add_argument(flag, type=int)
    t.add_argument("--json-events", action="store_true")
    t.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, lambda *a: STOP.update(now=True))
    signal.signal(signal.SIGTERM, lambda *a: STOP.update(now=True))

    if args.resume:
        run = Path(args.resume)
        config = json.loads((run / "config.json").read_text())
        start_step = json.loads((run / "checkpoints" / "last.pt").read_text())["step"]
    else:
        mesh = Path(args.mesh)
        if not mesh.is_file():
            emit(out_stream, None, "error", kind="input", message=f"mesh file not found: {mesh}", run_dir=None)
            return 2
        run = Path(args.out) / f"{int(time.time() * 1000)}-texture"
        (run / "checkpoints").mkdir(parents=True)
        import shutil

        shutil.copy2(mesh, run / "input.obj")  # as the engine: the run keeps its own copy for --resume
        config = {"command": "texture", "prompt": args.prompt, "mesh": str(run / "input.obj"), "model": args.model or "builtin:shapes",
                  "seed": args.seed or 0, "preset": args.preset, "steps": args.steps or 6,
                  "texture_size": args.texture_size or 64}
        (run / "config.json").write_text(json.dumps(config))
        start_step = 0
    log = run / "events.jsonl"
    emit(out_stream, log, "start", run_dir=str(run), engine_version="fake-texture-0", device="cpu", config=config)
    verts, faces, uvs, corners = read_obj(Path(config["mesh"]))
    total, step_s = config["steps"], float(os.environ.get("FAKE_STEP_S", "0.02"))
    (run / "previews").mkdir(exist_ok=True)
    rgb = next((c for w, c in COLOURS.items() if w in config["prompt"]), (128, 128, 128))
    for step in range(start_step + 1, total + 1):
        if STOP["now"] or (run / "CANCEL").exists():
            (run / "checkpoints" / "last.pt").write_text(json.dumps({"step": step - 1}))
            (run / "CANCEL").unlink(missing_ok=True)
            emit(out_stream, log, "cancelled", run_dir=str(run), step=step - 1, checkpoint=str(run / "checkpoints" / "last.pt"))
            return 130
        time.sleep(step_s)
        emit(out_stream, log, "progress", stage="texture", step=step, total=total, loss=1.0 / step, elapsed_s=step * step_s,
             eta_s=(total - step) * step_s)
        if step % 2 == 0:
            preview = run / "previews" / f"step-{step:06d}.png"
            write_png(preview, rgb, 16)
            emit(out_stream, log, "preview", step=step, path=str(preview))
            (run / "checkpoints" / "last.pt").write_text(json.dumps({"step": step}))
    asset = run / "asset"
    asset.mkdir(exist_ok=True)
    if uvs is not None and os.environ.get("FAKE_UV") != "generated":
        kind, corner_uvs = "input", uvs[corners]
    else:
        import xatlas

        vmapping, indices, xuvs = xatlas.parametrize(verts, faces)
        kind, corner_uvs = "generated", xuvs[indices]
    np.save(asset / "corner_uvs.npy", corner_uvs.astype(np.float32))
    write_png(asset / "albedo.png", rgb, config["texture_size"])
    (asset / "asset.json").write_text(json.dumps({"kind": "texture", "uv": kind, "texture": "albedo.png",
                                                  "faces": int(len(faces)), "vertices": int(len(verts))}))
    (asset / "asset.glb").write_bytes(b"glTF-fake")
    emit(out_stream, log, "done", run_dir=str(run), asset={"glb": str(asset / "asset.glb"), "texture": str(asset / "albedo.png"),
                                                "corner_uvs": str(asset / "corner_uvs.npy"), "json": str(asset / "asset.json")},
         checkpoint=str(run / "checkpoints" / "last.pt"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
