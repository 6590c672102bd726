"""Texture selected, the sending side: check the object, write its evaluated mesh as an OBJ, and start (or
queue) the engine's ``texture`` job through the same runner and queue as Generate.

Every check happens before anything is written: nothing selected, not a mesh, no faces, non-finite
vertices, or modifiers that change the topology of a mesh without UVs (a new UV map on the object's own
mesh could not describe the modified mesh's corners).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import bpy
import numpy as np

from . import texture_io
from .texture_io import TextureRequest


class TargetError(ValueError):
    """The object cannot be textured; the message says what to do (the operators report it as an error)."""


@dataclass
class MeshSnapshot:
    verts: np.ndarray  # (V, 3) world space
    tri_verts: np.ndarray  # (F, 3)
    tri_loops: np.ndarray  # (F, 3)
    n_loops: int
    uv_map: str | None
    loop_uvs: np.ndarray | None  # (L, 2)
    same_topology: bool  # the evaluated mesh's loops are the object's own mesh's loops (deform-only modifiers)


def _kind_name(obj) -> str:
    return {"CURVE": "curve", "SURFACE": "surface", "META": "metaball", "FONT": "text", "EMPTY": "empty",
            "CAMERA": "camera", "LIGHT": "light", "ARMATURE": "armature", "GPENCIL": "grease pencil",
            "GREASEPENCIL": "grease pencil", "CURVES": "hair curves", "POINTCLOUD": "point cloud",
            "VOLUME": "volume", "LATTICE": "lattice"}.get(obj.type, obj.type.lower())


def target_object(context):
    """The active object, if it is selected (what "Texture selected" means)."""
    obj = context.view_layer.objects.active
    if obj is None or not obj.select_get(view_layer=context.view_layer):
        raise TargetError("nothing selected: click a mesh object in the viewport (it becomes the active object), "
                          "then press Texture selected")
    return obj


def snapshot(obj, depsgraph) -> MeshSnapshot:
    """The mesh as it renders: modifiers applied (the evaluated depsgraph), world transform applied,
    triangulated as Blender triangulates it (loop_triangles). Raises TargetError for unusable input."""
    if obj.type != "MESH":
        convert = " (Object > Convert > Mesh makes a mesh of it)" if obj.type in ("CURVE", "SURFACE", "META", "FONT") else ""
        raise TargetError(f"'{obj.name}' is a {_kind_name(obj)}, not a mesh: select a mesh object{convert}")
    base = obj.data
    # An edit made from Python (a UV map removed, a vertex moved) does not always tag the object for
    # re-evaluation; without this the evaluated mesh can be the one from before the edit.
    base.update_tag()
    depsgraph.update()
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    try:
        mesh.calc_loop_triangles()
        nv, nt, nl = len(mesh.vertices), len(mesh.loop_triangles), len(mesh.loops)
        if nt == 0 and len(base.polygons) == 0:
            raise TargetError(f"'{obj.name}' has no faces ({len(base.vertices)} vertices, {len(base.edges)} edges): "
                              "a texture needs a surface; fill it (Edit Mode > F) or pick another object")
        if nt == 0:
            raise TargetError(f"'{obj.name}' has no faces after its modifiers ({', '.join(m.name for m in obj.modifiers)}): "
                              "disable the modifier that removes them, or pick another object")
        co = np.empty(nv * 3, dtype=np.float32)
        mesh.vertices.foreach_get("co", co)
        co = co.reshape(-1, 3)
        if not np.isfinite(co).all():
            bad = int((~np.isfinite(co).all(axis=1)).sum())
            raise TargetError(f"'{obj.name}' has {bad} vertices with NaN or infinite coordinates: fix them "
                              "(Mesh > Clean Up, or delete them) before texturing")
        world = np.array(evaluated.matrix_world, dtype=np.float64)
        verts = (co.astype(np.float64) @ world[:3, :3].T + world[:3, 3]).astype(np.float32)
        tri_verts = np.empty(nt * 3, dtype=np.int32)
        tri_loops = np.empty(nt * 3, dtype=np.int32)
        mesh.loop_triangles.foreach_get("vertices", tri_verts)
        mesh.loop_triangles.foreach_get("loops", tri_loops)
        uv_layer = mesh.uv_layers.active
        uvs = None
        if uv_layer is not None:
            uvs = np.empty(nl * 2, dtype=np.float32)
            uv_layer.data.foreach_get("uv", uvs)
            uvs = uvs.reshape(-1, 2)
        same = nl == len(base.loops) and len(mesh.polygons) == len(base.polygons)
        if same:
            a = np.empty(nl, dtype=np.int32)
            b = np.empty(nl, dtype=np.int32)
            mesh.loops.foreach_get("vertex_index", a)
            base.loops.foreach_get("vertex_index", b)
            same = bool((a == b).all())
        snap = MeshSnapshot(verts, tri_verts.reshape(-1, 3), tri_loops.reshape(-1, 3), nl,
                            uv_layer.name if uv_layer is not None else None, uvs, same)
    finally:
        evaluated.to_mesh_clear()
    if snap.uv_map is None and not snap.same_topology:
        mods = ", ".join(m.name for m in obj.modifiers if m.show_viewport) or "its modifiers"
        raise TargetError(f"'{obj.name}' has no UV map and {mods} change its topology, so a new UV map on its own mesh "
                          "could not follow the modified surface: add a UV map (Edit Mode > U > Smart UV Project) "
                          "or apply the modifiers first")
    return snap


def snapshot_signature(snap: MeshSnapshot) -> str:
    return texture_io.signature(len(snap.verts), snap.n_loops, snap.tri_loops, snap.tri_verts)


def check_view_layer(context, obj) -> None:
    if context.view_layer.objects.get(obj.name) is None:
        raise TargetError(f"'{obj.name}' is not in the view layer '{context.view_layer.name}' of scene "
                          f"'{context.scene.name}', so its modifiers cannot be evaluated: link it into the scene")


def prepare(context, obj, prompt: str, runs_dir: str, **options) -> TextureRequest:
    """Check ``obj`` and the prompt (nothing written yet), then write the OBJ into a fresh folder under the
    runs folder (removed when the job ends: the engine keeps its own copy in the run folder for --resume)."""
    if not prompt.strip():
        raise TargetError("the prompt is empty: describe the surface, e.g. 'a weathered bronze statue'")
    check_view_layer(context, obj)
    snap = snapshot(obj, context.evaluated_depsgraph_get())
    runs = Path(bpy.path.abspath(runs_dir)).expanduser()
    try:
        (runs / ".texture-inputs").mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="texture-", dir=runs / ".texture-inputs"))
    except OSError as exc:
        raise TargetError(f"cannot write the mesh into the output folder {runs}: {exc.strerror or exc}; "
                          "choose another Output folder in the add-on preferences") from None
    path = folder / "mesh.obj"
    texture_io.write_obj(path, texture_io.y_up(snap.verts), snap.tri_verts, snap.tri_loops, snap.loop_uvs)
    return TextureRequest(prompt=prompt.strip(), out=str(runs), mesh=str(path), object_name=obj.name,
                          session_uid=obj.session_uid, signature=snapshot_signature(snap), faces=len(snap.tri_verts),
                          uv_map=snap.uv_map, **options)


def request_from_scene(context, obj) -> TextureRequest:
    """The panel's prompt, negative prompt, preset, seed, steps and texture size (not its guidance, start
    shape, mesh resolution or size: the mesh is the user's)."""
    from .prefs import settings

    p, s = context.scene.dreamfusion, settings()
    return prepare(context, obj, p.prompt, s.output_dir, model=s.model, negative_prompt=p.negative_prompt.strip(),
                   preset=p.preset, seed=p.seed,
                   steps=p.steps or None, texture_size=p.texture_size or None, device=s.device)


def find_object(req: TextureRequest | None, scene=None):
    """The object a texture run belongs to: by session id (survives a rename), then by name, then (a resume
    after a reload) the scene's last texture object."""
    if req is not None:
        for obj in bpy.data.objects:
            if req.session_uid and obj.session_uid == req.session_uid:
                return obj
        obj = bpy.data.objects.get(req.object_name)
        if obj is not None:
            return obj
    return scene.dreamfusion.texture_object if scene is not None else None


def discard_input(req: TextureRequest | None) -> None:
    """The OBJ folder is only needed until the engine has read it (it copies the mesh into its run folder)."""
    import shutil

    if req is not None and req.mesh:
        folder = Path(req.mesh).parent
        if folder.parent.name == ".texture-inputs":
            shutil.rmtree(folder, ignore_errors=True)
