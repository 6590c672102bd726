"""Bring a finished run's asset.glb into the scene: its own collection, at the 3D cursor, with provenance."""

from __future__ import annotations

import bpy

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


def import_glb(context, glb: str, prompt: str, props: dict) -> bpy.types.Object:
    """Import ``glb``; returns the main (mesh) object. On any failure nothing stays in the file."""
    scene = context.scene
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

    coll = _collection(scene)
    for obj in new:
        for c in list(obj.users_collection):
            c.objects.unlink(obj)
        coll.objects.link(obj)
    roots = [o for o in new if o.parent is None]
    for root in roots:
        root.location = scene.cursor.location.copy()

    main = meshes[0] if len(meshes) == 1 else roots[0]
    name = provenance.object_name(prompt)
    main.name = name
    if main.type == "MESH":
        main.data.name = name
    for key, value in props.items():
        main[provenance.PREFIX + key] = value
    for obj in context.view_layer.objects:
        obj.select_set(False)
    main.select_set(True)
    context.view_layer.objects.active = main
    return main


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
