"""Texture selected, the receiving side: put a finished texture run onto the object it was made for.

A NEW material (image texture of albedo.png, packed into the .blend -> Principled BSDF base colour, a UV
Map node naming the UV map it was baked into) replaces the object's materials in its slots; the old
materials stay in the file (a fake user where nothing else uses them). With "uv": "generated" a new UV
map "DreamFusion" is filled from corner_uvs.npy, per loop; the object, its modifiers and its other UV
maps are not touched. Everything is checked before the first change, and the change is one undo step.
"""

from __future__ import annotations

import bpy
import numpy as np

from . import provenance, texture_io, texture_job


class ApplyFailed(RuntimeError):
    pass


def _material(name: str, image, uv_map: str):
    mat = bpy.data.materials.new(name=name)
    if not getattr(mat, "node_tree", None) or hasattr(mat, "use_nodes") and not mat.use_nodes:
        mat.use_nodes = True  # before Blender 5.0 a new material has no node tree until asked
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = next((n for n in nodes if n.type == "BSDF_PRINCIPLED"), None) or nodes.new("ShaderNodeBsdfPrincipled")
    out = next((n for n in nodes if n.type == "OUTPUT_MATERIAL"), None) or nodes.new("ShaderNodeOutputMaterial")
    if not bsdf.outputs["BSDF"].is_linked:
        links.new(bsdf.outputs["BSDF"], out.inputs["Surface"])
    tex = nodes.new("ShaderNodeTexImage")
    tex.image, tex.location = image, (bsdf.location.x - 350, bsdf.location.y)
    uv = nodes.new("ShaderNodeUVMap")
    uv.uv_map, uv.location = uv_map, (tex.location.x - 250, tex.location.y)
    links.new(uv.outputs["UV"], tex.inputs["Vector"])
    links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    return mat


def _assign(obj, mat) -> list:
    """``mat`` in every slot (so every face's material index still points at a slot); returns the replaced
    materials. A mesh shared with other objects gets object-linked slots, so the others keep theirs."""
    old = []
    if not obj.material_slots:
        obj.data.materials.append(mat)
        return old
    for slot in obj.material_slots:
        if slot.material is not None and slot.material not in old:
            old.append(slot.material)
        if obj.data.users > 1 and slot.link == "DATA":
            slot.link = "OBJECT"
        slot.material = mat
    for m in old:  # "the previous material stays in the .blend": a material nothing uses would be dropped on save
        if m.users == 0:
            m.use_fake_user = True
    return old


def _uv_matches(snap, corner: np.ndarray, tol: float = 1e-4) -> bool:
    if snap.loop_uvs is None:
        return False
    return bool(np.abs(snap.loop_uvs[snap.tri_loops] - corner).max() <= tol)


def apply(context, scene, job) -> tuple[object, str]:
    """Returns (object, message); raises ApplyFailed with nothing changed."""
    st = job.state
    req = job.info.get("request")
    obj = texture_job.find_object(req, scene)
    where = f"the texture is in {texture_io.asset_folder(st.run_dir, st.asset)}"
    if obj is None:
        name = req.object_name if req else "the textured object"
        raise ApplyFailed(f"'{name}' no longer exists, so the texture was not applied; {where}")
    try:
        res = texture_io.read_result(st.run_dir, req.faces if req else None, texture_io.asset_folder(st.run_dir, st.asset))
        snap = texture_job.snapshot(obj, context.evaluated_depsgraph_get())
    except (texture_io.ResultError, texture_job.TargetError) as exc:
        raise ApplyFailed(f"{exc}; the texture was not applied") from None
    n_tris = len(snap.tri_loops)
    if (req is not None and texture_job.snapshot_signature(snap) != req.signature) or res.corner_uvs.shape[0] != n_tris:
        raise ApplyFailed(f"the mesh of '{obj.name}' changed while it was being textured ({res.corner_uvs.shape[0]} "
                          f"triangles sent, {n_tris} now), so its UVs would not fit: the texture was not applied; "
                          f"{where} (press Texture selected again)")
    note = ""
    uv_name = snap.uv_map if res.uv == "input" else None
    if uv_name is not None and not _uv_matches(snap, res.corner_uvs):
        uv_name, note = None, f" (the engine's UVs differ from '{snap.uv_map}', so they went into a new UV map)"
    conflicts = 0
    if uv_name is None:  # the engine's own UVs: a new map on the object's mesh, one UV per loop
        if not snap.same_topology:
            raise ApplyFailed(f"the engine made new UVs, but the modifiers of '{obj.name}' change its topology, so they "
                              f"cannot be stored on its mesh; {where}")
        if len(obj.data.uv_layers) >= 8:
            raise ApplyFailed(f"'{obj.name}' already has 8 UV maps (Blender's limit); remove one; {where}")
        per_loop, conflicts = texture_io.loop_uvs(res.corner_uvs, snap.tri_loops, snap.n_loops)
    try:
        image = bpy.data.images.load(str(res.image), check_existing=False)
        image.pack()  # the .blend is self-contained, like Generate's imported texture
    except RuntimeError as exc:
        raise ApplyFailed(f"cannot load the texture {res.image}: {exc}") from None
    # -- from here on the file changes --------------------------------------------------------------
    props = provenance.collect(st.run_dir, st)  # a resume has no request: its prompt is the run's
    if req is not None:
        props.setdefault("prompt", req.prompt)
    name = provenance.object_name(f"DreamFusion {props.get('prompt') or obj.name}")
    image.name = name
    if uv_name is None:
        mesh = obj.data
        active = mesh.uv_layers.active_index if len(mesh.uv_layers) else None
        layer = mesh.uv_layers.new(name=texture_io.UV_MAP, do_init=False)
        layer.data.foreach_set("uv", per_loop.ravel())
        if active is not None:  # the user's active map stays active
            mesh.uv_layers.active_index = active
        uv_name = layer.name
        mesh.update()
    mat = _material(name, image, uv_name)
    old = _assign(obj, mat)
    if res.glb is not None:
        props["asset"] = str(res.glb)
    props.update(kind="texture", material=mat.name, uv_map=uv_name, texture=str(res.image))
    for target in (obj, mat):
        for key, value in props.items():
            target[provenance.PREFIX + key] = value
    try:  # one undo step for the whole change (the timer that applies it is not an operator)
        bpy.ops.ed.undo_push(message=f"DreamFusion: texture {obj.name}")
    except RuntimeError:
        pass
    if conflicts:
        note += (f"; {conflicts} polygon corners had a seam inside their polygon and took one triangle's UV "
                 "(triangulate the mesh to avoid that)")
    kept = f", previous {', '.join(m.name for m in old)} kept in the file" if old else ""
    return obj, f"textured '{obj.name}' with material '{mat.name}' on UV map '{uv_name}'{kept}{note}"
