"""Bring a finished run's asset.glb into the scene: its own collection, base on the 3D cursor, scaled to
the size setting, with provenance; or swap a re-export's mesh into the object it replaces."""

from __future__ import annotations

import os

import bpy
from mathutils import Matrix, Vector

from . import provenance

COLLECTION = "DreamFusion"


class ImportFailed(RuntimeError):
    pass


def _collection(scene) -> bpy.types.Collection:
    coll = bpy.data.collections.get(COLLECTION)
    if coll is None:
        coll = bpy.data.collections.new(COLLECTION)
    if scene.collection.children.get(coll.name) is None and coll not in scene.collection.children_recursive:
        scene.collection.children.link(coll)
    return coll


def _import_objects(glb: str) -> tuple[list, list]:
    """Run Blender's glTF importer; returns (new objects, new mesh objects). On failure nothing stays."""
    before = set(bpy.data.objects)
    try:
        result = bpy.ops.import_scene.gltf(filepath=str(glb))
    except RuntimeError as exc:
        result, err = None, exc
    else:
        err = None
    new = [o for o in bpy.data.objects if o not in before]
    meshes = [o for o in new if o.type == "MESH"]
    if err is not None or result != {"FINISHED"} or not meshes:
        for obj in new:  # never leave half an import behind
            bpy.data.objects.remove(obj, do_unlink=True)
        raise ImportFailed(f"could not import {glb}: {err or 'the file contains no mesh'}")
    return new, meshes


def normalize_mesh(obj, size: float) -> None:
    """Bake the importer's transform into the mesh, then put the origin at the centre of the mesh's base
    (so the object stands on the point it is placed at) and scale its longest side to ``size`` (0: keep)."""
    mesh = obj.data
    mesh.transform(obj.matrix_world)
    obj.parent = None
    obj.matrix_world = Matrix.Identity(4)
    if not mesh.vertices:
        return
    co = [v.co for v in mesh.vertices]
    lo = Vector((min(c.x for c in co), min(c.y for c in co), min(c.z for c in co)))
    hi = Vector((max(c.x for c in co), max(c.y for c in co), max(c.z for c in co)))
    longest = max(hi - lo)
    scale = size / longest if size > 0 and longest > 0 else 1.0
    base = Vector(((lo.x + hi.x) / 2, (lo.y + hi.y) / 2, lo.z))
    mesh.transform(Matrix.Scale(scale, 4) @ Matrix.Translation(-base))
    mesh.update()


def _tag(obj, props: dict) -> None:
    for key, value in props.items():
        obj[provenance.PREFIX + key] = value


def _select(context, obj) -> None:
    for other in context.view_layer.objects:
        other.select_set(False)
    obj.select_set(True)
    context.view_layer.objects.active = obj


def import_glb(context, glb: str, prompt: str, props: dict, size: float = 1.0) -> bpy.types.Object:
    """Import ``glb`` as one mesh object standing on the 3D cursor; returns it."""
    scene = context.scene
    new, meshes = _import_objects(glb)
    main = meshes[0]
    for obj in new:  # the engine writes one mesh; anything else the importer made (empties) goes
        if obj is not main:
            bpy.data.objects.remove(obj, do_unlink=True)
    normalize_mesh(main, size)
    coll = _collection(scene)
    for c in list(main.users_collection):
        c.objects.unlink(main)
    coll.objects.link(main)
    main.location = scene.cursor.location.copy()
    name = provenance.object_name(prompt)
    main.name = name
    main.data.name = name
    _tag(main, props)
    _select(context, main)
    return main


def replace_mesh(context, target, glb: str, props: dict, size: float = 1.0) -> bpy.types.Object:
    """Re-export in place: ``target`` keeps its name, transform, collections and modifiers; its mesh and
    material become the new export's (normalised like a first import). The old mesh is freed if unused."""
    new, meshes = _import_objects(glb)
    src = meshes[0]
    normalize_mesh(src, size)
    old_mesh, new_mesh = target.data, src.data
    for obj in new:
        bpy.data.objects.remove(obj, do_unlink=True)
    target.data = new_mesh
    name = old_mesh.name
    if old_mesh.users == 0:  # still used elsewhere (a linked duplicate): kept, and the new name gets a suffix
        bpy.data.meshes.remove(old_mesh)
    new_mesh.name = name
    _tag(target, props)
    _select(context, target)
    return target


def find_result(scene, run_dir: str):
    """The object in ``scene`` imported from ``run_dir`` (the last one if several)."""
    want = os.path.realpath(run_dir)
    found = [o for o in scene.objects if o.type == "MESH"
             and os.path.realpath(str(o.get(provenance.PREFIX + "run_folder", ""))) == want]
    return found[-1] if found else None


def has_textured_material(obj) -> bool:
    """True when some material slot uses an image texture that has pixels (the engine's baked albedo)."""
    for slot in obj.material_slots:
        mat = slot.material
        if mat is None or mat.node_tree is None:
            continue
        for node in mat.node_tree.nodes:
            if node.type == "TEX_IMAGE" and node.image is not None and node.image.size[0] > 0:
                return True
    return False
