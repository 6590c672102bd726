"""Render exported .glb files to small PNGs with Blender, headless (bpy as a module; no GPU needed).

    .venv/bin/python scripts/render_glb.py OUT.png A.glb [B.glb ...] [--labels "a" "b" ...] [--size 200]

Each mesh is imported as the add-on imports it (glTF, baked albedo texture), lit by a sun and a fill
light, and rendered with Cycles on the CPU at 3/4 view (elevation 25°, the front face towards the
camera), so terraces and lumps show in the shading; several meshes are put side by side in one image,
each with its label underneath. Used for the pictures in docs/SDS_SHAPES.md.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path


def render_one(glb: Path, png: Path, size: int, samples: int) -> None:
    import bpy
    from mathutils import Vector

    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=str(glb))
    meshes = [o for o in bpy.context.scene.objects if o.type == "MESH"]
    if not meshes:
        raise SystemExit(f"{glb}: no mesh in the file")
    scene = bpy.context.scene
    # Frame the unit bounding sphere the engine works in (not the mesh), so sizes compare across images.
    cam_data = bpy.data.cameras.new("cam")
    cam_data.lens_unit = "FOV"
    cam_data.angle = math.radians(34)
    cam = bpy.data.objects.new("cam", cam_data)
    scene.collection.objects.link(cam)
    elev, azim, dist = math.radians(25), math.radians(-35), 3.0
    cam.location = (dist * math.cos(elev) * math.sin(-azim), -dist * math.cos(elev) * math.cos(azim), dist * math.sin(elev))
    cam.rotation_euler = (Vector((0, 0, 0)) - cam.location).to_track_quat("-Z", "Y").to_euler()
    scene.camera = cam
    for name, energy, rot in (("key", 3.5, (math.radians(40), 0, math.radians(-50))), ("fill", 1.0, (math.radians(70), 0, math.radians(120)))):
        light = bpy.data.lights.new(name, "SUN")
        light.energy = energy
        obj = bpy.data.objects.new(name, light)
        obj.rotation_euler = rot
        scene.collection.objects.link(obj)
    world = bpy.data.worlds.new("w")
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs[0].default_value = (1, 1, 1, 1)
    world.node_tree.nodes["Background"].inputs[1].default_value = 0.35
    scene.world = world
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.film_transparent = False
    scene.view_settings.view_transform = "Standard"
    scene.render.image_settings.file_format = "PNG"
    scene.render.filepath = str(png)
    bpy.ops.render.render(write_still=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("glbs", type=Path, nargs="+")
    ap.add_argument("--labels", nargs="+")
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--columns", type=int, default=0, help="tiles per row (default: all in one row)")
    ap.add_argument("--samples", type=int, default=16)
    args = ap.parse_args(argv)
    if args.labels and len(args.labels) != len(args.glbs):
        ap.error("give one label per .glb")
    from PIL import Image, ImageDraw

    tiles = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, glb in enumerate(args.glbs):
            png = Path(tmp) / f"{i}.png"
            render_one(glb, png, args.size, args.samples)
            tiles.append(Image.open(png).convert("RGB"))
    label_h = 16 if args.labels else 0
    cols = args.columns or len(tiles)
    rows = (len(tiles) + cols - 1) // cols
    cell_h = args.size + label_h
    sheet = Image.new("RGB", (args.size * min(cols, len(tiles)), cell_h * rows), "white")
    draw = ImageDraw.Draw(sheet)
    for i, tile in enumerate(tiles):
        x, y = (i % cols) * args.size, (i // cols) * cell_h
        sheet.paste(tile, (x, y))
        if args.labels:
            draw.text((x + 4, y + args.size + 2), args.labels[i], fill=(0, 0, 0))
    sheet = sheet.quantize(colors=128).convert("RGB") if sheet.width > 800 else sheet
    sheet.save(args.out, optimize=True)
    print(f"{args.out}: {sheet.width}x{sheet.height}, {args.out.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
