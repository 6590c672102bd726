"""Texture selected (issue 28 part 3), in headless Blender: the OBJ the add-on sends, the texture it puts
back, the queue / cancel / resume path, bad selections, and the headless `texture` command.

The engine side is tests/fake_texture_engine.py (the contract's command line, events and run folder, no
torch; xatlas for generated UVs), run through a wrapper "python" so the worker starts it exactly as it
starts `python -m engine texture`. Timers never fire in bpy-as-a-module: tests call runner.tick by hand.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import test_addon_helpers as H

import bpy  # noqa: E402

from dreamfusion_blender import runner, texture_io, texture_job  # noqa: E402
from dreamfusion_blender.jobs import MANAGER  # noqa: E402

FAKE = Path(__file__).resolve().parent / "fake_texture_engine.py"
ENGINE_PYTHON = H.engine_python()  # the interpreter with torch, before the tests point the add-on at the fake


def _wrapper(folder: Path) -> str:
    """A "python" that runs the fake engine in place of `-m engine` (the worker's argv: PY -m engine texture ...)."""
    path = folder / "fake-python"
    path.write_text(f'#!/bin/sh\nshift 2\nexec "{ENGINE_PYTHON}" "{FAKE}" "$@"\n')
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def setup(tmp_path, monkeypatch):
    pr = H.enable_addon()
    pr.device, pr.model, pr.output_dir, pr.extra_settings = "CPU", "builtin:shapes", str(tmp_path / "runs"), ""
    monkeypatch.setenv("DREAMFUSION_PYTHON", _wrapper(tmp_path))
    monkeypatch.setenv("FAKE_STEP_S", "0.01")
    runner.BLOCK_IN_BACKGROUND = False
    bpy.ops.wm.read_homefile(use_empty=True)
    p = bpy.context.scene.dreamfusion
    p.prompt, p.preset, p.seed, p.steps, p.texture_size = "a red apple", "draft", 3, 4, 64
    yield tmp_path
    MANAGER.queue.clear()
    if MANAGER.busy:
        MANAGER.current.worker.kill()
    runner.BLOCK_IN_BACKGROUND = True


def _cube(name="Cube", uv=True, location=(1.0, 2.0, 3.0)):
    bpy.ops.mesh.primitive_cube_add(size=2.0, location=location, rotation=(0.3, 0.0, 0.7))
    obj = bpy.context.active_object
    obj.name = name
    obj.scale = (1.5, 1.0, 0.5)
    if not uv:
        while obj.data.uv_layers:
            obj.data.uv_layers.remove(obj.data.uv_layers[0])
    old = bpy.data.materials.new("Old paint")
    obj.data.materials.append(old)
    return obj


def _world_corners(obj) -> np.ndarray:
    """Loop-triangle corner positions of the evaluated, world-space mesh, as the add-on must send them."""
    ev = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    me = ev.to_mesh()
    me.calc_loop_triangles()
    mw = ev.matrix_world
    out = np.array([[tuple(mw @ me.vertices[v].co) for v in t.vertices] for t in me.loop_triangles])
    ev.to_mesh_clear()
    return out


def _runs(tmp_path) -> list:
    root = tmp_path / "runs"
    return sorted(p for p in root.rglob("*")) if root.exists() else []


# -- what is sent ---------------------------------------------------------------------------------------
def _read_obj(path) -> tuple[np.ndarray, np.ndarray | None]:
    """Corner positions (F, 3, 3) and corner UVs (F, 3, 2) or None, straight from the v / vt / f records."""
    v, vt, f = [], [], []
    for line in Path(path).read_text().splitlines():
        head, *rest = line.split() or [""]
        if head == "v":
            v.append([float(x) for x in rest])
        elif head == "vt":
            vt.append([float(x) for x in rest])
        elif head == "f":
            f.append([[int(i) - 1 for i in c.split("/")] for c in rest])
    f = np.array(f)
    return np.array(v)[f[..., 0]], (np.array(vt)[f[..., 1]] if vt else None)


def _trimesh_corners(path, keep: bool):
    """As the engine loads it (trimesh, process=False); None where trimesh is not installed (the bpy 4.2
    venv has bpy only)."""
    try:
        import trimesh
    except ImportError:
        return None
    mesh = trimesh.load(str(path), process=False, maintain_order=keep, force="mesh")
    return mesh.vertices[mesh.faces]


def test_the_obj_is_the_evaluated_world_space_mesh_in_loop_triangle_order(setup):
    """Modifiers applied (a subdivision: 6 quads -> 24 -> 48 triangles), the world transform applied (and
    turned +Y up, the engine's mesh convention), the active UV map as vt, face f = loop triangle f, corner
    for corner; trimesh (process=False, maintain_order True or False) reads the same triangles."""
    obj = _cube()
    obj.modifiers.new("Subdivision", "SUBSURF").levels = 1
    req = texture_job.prepare(bpy.context, obj, "a red apple", str(setup / "runs"))
    assert req.faces == 48 and req.uv_map == "UVMap" and Path(req.mesh).is_file()
    x, y, z = np.moveaxis(_world_corners(obj), -1, 0)
    expected = np.stack([x, z, -y], axis=-1)  # Blender's +Z up -> the engine's +Y up (glTF), front -Y -> +Z
    corners, uvs = _read_obj(req.mesh)
    np.testing.assert_allclose(corners, expected, atol=1e-5)
    for keep in (True, False):
        got = _trimesh_corners(req.mesh, keep)
        assert got is None or np.allclose(got, expected, atol=1e-5)
    ev = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    me = ev.to_mesh()
    me.calc_loop_triangles()
    want = np.array([[tuple(me.uv_layers.active.data[i].uv) for i in t.loops] for t in me.loop_triangles])
    ev.to_mesh_clear()
    np.testing.assert_allclose(uvs, want, atol=1e-6)
    assert len(obj.modifiers) == 1 and len(obj.data.polygons) == 6  # the object is untouched
    # An edit just made from a script is what is sent (the depsgraph is brought up to date first).
    obj.modifiers.remove(obj.modifiers[0])
    bpy.context.evaluated_depsgraph_get()  # evaluated now; removing a UV map does not tag it again
    obj.data.uv_layers.remove(obj.data.uv_layers[0])
    req = texture_job.prepare(bpy.context, obj, "a red apple", str(setup / "runs"))
    assert req.faces == 12 and req.uv_map is None
    corners, uvs = _read_obj(req.mesh)
    x, y, z = np.moveaxis(_world_corners(obj), -1, 0)
    assert uvs is None and np.allclose(corners, np.stack([x, z, -y], axis=-1), atol=1e-5)


def test_the_texture_command_line_keeps_user_text_as_data():
    req = texture_io.TextureRequest(prompt="--help", out="/r", mesh="/m/mesh.obj", object_name="x",
                                    negative_prompt="-blurry", seed=0, steps=5, device="auto")
    argv = texture_io.texture_argv("py", req)
    assert argv[:4] == ["py", "-m", "engine", "texture"] and argv[-3:] == ["--", "/m/mesh.obj", "--help"]
    assert "--negative-prompt=-blurry" in argv and "--seed=0" in argv and "--steps=5" in argv
    assert not any(a.startswith("--device") for a in argv)  # auto: the engine's default
    assert texture_io.texture_resume_argv("py", "-r", "cpu")[4:6] == ["--resume=-r", "--device=cpu"]


def test_loop_uvs_from_corner_uvs_count_seams_inside_a_polygon():
    # one quad (loops 0..3) as two triangles (0,1,2) and (0,2,3); the second gives loop 2 another UV
    tri_loops = np.array([[0, 1, 2], [0, 2, 3]])
    corner = np.array([[[0, 0], [1, 0], [1, 1]], [[0, 0], [0.5, 0.5], [0, 1]]], np.float32)
    per_loop, conflicts = texture_io.loop_uvs(corner, tri_loops, 4)
    np.testing.assert_allclose(per_loop, [[0, 0], [1, 0], [1, 1], [0, 1]])
    assert conflicts == 1
    corner[1, 1] = (1, 1)
    assert texture_io.loop_uvs(corner, tri_loops, 4)[1] == 0


# -- bad selections: a clear error, nothing written, nothing started ----------------------------------------
@pytest.mark.parametrize("case", ["texture-nothing-selected", "texture-not-a-mesh", "texture-mesh-no-faces", "texture-mesh-nan-vertex",
                                  "texture-modifiers-remove-faces", "texture-no-uv-topology-modifier"])
def test_bad_selection_is_refused_before_any_work(setup, case):
    message = {
        "texture-nothing-selected": "nothing selected",
        "texture-not-a-mesh": "'Camera' is a camera, not a mesh",
        "texture-mesh-no-faces": "'Cube' has no faces (8 vertices, 0 edges)",
        "texture-mesh-nan-vertex": "1 vertices with NaN or infinite coordinates",
        "texture-modifiers-remove-faces": "has no faces after its modifiers",
        "texture-no-uv-topology-modifier": "has no UV map and Subdivision change its topology",
    }[case]
    if case == "texture-not-a-mesh":
        bpy.ops.object.camera_add()
        bpy.context.active_object.name = "Camera"
    else:
        obj = _cube(uv=case != "texture-no-uv-topology-modifier")
        if case == "texture-nothing-selected":
            obj.select_set(False)
        elif case == "texture-mesh-no-faces":
            obj.data.clear_geometry()
            obj.data.vertices.add(8)
        elif case == "texture-mesh-nan-vertex":
            obj.data.vertices[3].co = (float("nan"), 0.0, 0.0)
        elif case == "texture-modifiers-remove-faces":
            mask = obj.modifiers.new("Mask", "MASK")
            mask.vertex_group = obj.vertex_groups.new(name="none").name
        else:
            obj.modifiers.new("Subdivision", "SUBSURF")
    before = {m.name for m in bpy.data.materials}
    with pytest.raises(RuntimeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        bpy.ops.dreamfusion.texture_selected()
    assert MANAGER.current is None or MANAGER.current.handled  # no engine started
    assert _runs(setup) == []  # nothing on disk, not even the runs folder
    assert {m.name for m in bpy.data.materials} == before


# -- the round trip ---------------------------------------------------------------------------------------
def _drive_all(timeout=120):
    return H.drive_queue(timeout=timeout)


def test_texture_selected_gives_a_new_material_and_keeps_everything_else(setup):
    """A cube without UVs under a deform-only modifier: the engine makes UVs (xatlas), the add-on adds the
    "DreamFusion" UV map from corner_uvs per loop, a new material with the packed albedo and a UV Map node;
    the old material stays in the file, the mesh, modifiers and transform are untouched; a second object
    queued behind it (with its own UVs) is textured on its own UV map. Saved and reopened, all of it stays."""
    a = _cube("Plain", uv=False)
    a.modifiers.new("Twist", "SIMPLE_DEFORM")
    bpy.context.view_layer.update()
    co_before = [tuple(v.co) for v in a.data.vertices]
    mw_before = [tuple(r) for r in a.matrix_world]
    assert bpy.ops.dreamfusion.texture_selected() == {"FINISHED"}
    first = MANAGER.current
    assert first.kind == "texture" and first.running
    b = _cube("Mapped", uv=True, location=(-3.0, 0.0, 0.0))
    b.modifiers.new("Subdivision", "SUBSURF").levels = 1  # changes topology: fine, it has UVs
    bpy.context.scene.dreamfusion.prompt = "a blue box"
    assert bpy.ops.dreamfusion.texture_selected() == {"FINISHED"}
    assert [r.label for r in MANAGER.queue] == ["Mapped: a blue box"]  # queued like Generate
    seen = {"preview": False, "steps": set()}

    def watch(job):
        seen["preview"] |= bpy.data.images.get("DreamFusion Preview") is not None
        if job is not None and job.state.stage == "texture":
            seen["steps"].add(job.state.step)

    jobs = H.drive_queue(timeout=120, on_tick=watch)
    assert [j.state.status for j in jobs] == ["done", "done"], [j.state.message for j in jobs]
    assert seen["preview"] and len(seen["steps"]) >= 2
    assert [lbl for lbl, _ in MANAGER.history[-2:]] == ["Plain: a red apple", "Mapped: a blue box"]

    # Plain: a new UV map filled from the engine's corner UVs, per loop.
    run = Path(a["dreamfusion_run_folder"])
    corner = np.load(run / "asset" / "corner_uvs.npy")
    assert [uv.name for uv in a.data.uv_layers] == ["DreamFusion"]
    me = a.data
    me.calc_loop_triangles()
    got = np.array([[tuple(me.uv_layers["DreamFusion"].data[i].uv) for i in t.loops] for t in me.loop_triangles])
    # Every corner gets its triangle's UV except where xatlas cut a seam through a quad (measured: 4 of the
    # cube's 24 loops); there the first triangle's UV wins, and the message says how many.
    wrong = ~np.isclose(got, corner, atol=1e-6).all(axis=2)
    (state_msg,) = [j.state.message for j in jobs if j.label.startswith("Plain")]
    conflicts = int(state_msg.split("; ")[-1].split()[0]) if "seam inside" in state_msg else 0
    assert wrong.sum() <= 2 * conflicts and wrong.mean() < 0.2, (wrong.sum(), state_msg)
    mat = a.material_slots[0].material
    assert len(a.material_slots) == 1 and mat.name.startswith("DreamFusion a red apple")
    nodes = {n.type: n for n in mat.node_tree.nodes}
    assert nodes["UVMAP"].uv_map == "DreamFusion"
    assert nodes["TEX_IMAGE"].image.packed_file is not None and nodes["TEX_IMAGE"].image.size[0] == 64
    assert nodes["TEX_IMAGE"].outputs["Color"].links[0].to_socket.name == "Base Color"
    px = np.array(nodes["TEX_IMAGE"].image.pixels[:4])
    assert px[0] > 0.8 and px[1] < 0.2 and px[2] < 0.2  # the fake engine's red (220, 30, 30), as loaded
    old = bpy.data.materials["Old paint"]
    assert old.use_fake_user and old.users == 1  # kept in the file, used by nothing
    assert [tuple(v.co) for v in a.data.vertices] == co_before and [tuple(r) for r in a.matrix_world] == mw_before
    assert [m.type for m in a.modifiers] == ["SIMPLE_DEFORM"] and len(a.data.polygons) == 6
    assert a["dreamfusion_prompt"] == "a red apple" and a["dreamfusion_seed"] == 3
    assert a["dreamfusion_model"] == "builtin:shapes" and a["dreamfusion_engine_version"] == "fake-texture-0"
    assert a["dreamfusion_kind"] == "texture" and mat["dreamfusion_run_folder"] == str(run.resolve())
    assert not any((setup / "runs" / ".texture-inputs").iterdir())  # the OBJs are gone once the jobs ended

    # Mapped: the engine baked into its own UVs, so no new UV map; the node names the active one.
    assert [uv.name for uv in b.data.uv_layers] == ["UVMap"]
    assert {n.type: n for n in b.material_slots[0].material.node_tree.nodes}["UVMAP"].uv_map == "UVMap"
    assert b["dreamfusion_prompt"] == "a blue box" and len(b.modifiers) == 1

    blend = setup / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    a = bpy.data.objects["Plain"]
    assert "Old paint" in bpy.data.materials and a.material_slots[0].material.name.startswith("DreamFusion")
    assert a.material_slots[0].material.node_tree.nodes["Image Texture"].image.packed_file is not None
    assert bpy.context.scene.dreamfusion.last_run_kind == "texture"
    assert not bpy.ops.dreamfusion.reexport.poll()  # a texture run has no field to re-export


def test_one_undo_step_removes_the_texture(setup):
    """The texture is applied from a timer (no operator around it): it pushes its own undo step, so one
    Ctrl+Z takes it away and keeps the user's change made just before (a second step back would lose it)."""
    obj = _cube("Undoable", uv=False)
    bpy.ops.ed.undo_push(message="cube")
    obj["marker"] = 1
    bpy.ops.ed.undo_push(message="the user's last change")
    bpy.ops.dreamfusion.texture_selected()
    st = H.drive(MANAGER.current, timeout=60)
    assert st.succeeded, st.message
    assert bpy.data.objects["Undoable"].material_slots[0].material.name.startswith("DreamFusion")
    bpy.ops.ed.undo()
    obj = bpy.data.objects["Undoable"]
    assert obj.material_slots[0].material.name == "Old paint" and obj.get("marker") == 1
    assert not [m for m in bpy.data.materials if m.name.startswith("DreamFusion")]
    assert [u.name for u in obj.data.uv_layers] == []
    bpy.ops.ed.redo()
    assert bpy.data.objects["Undoable"].material_slots[0].material.name.startswith("DreamFusion")


def test_cancel_then_resume_textures_the_object(setup, monkeypatch):
    monkeypatch.setenv("FAKE_STEP_S", "0.3")
    p = bpy.context.scene.dreamfusion
    p.steps = 40
    obj = _cube("Slow")
    bpy.ops.dreamfusion.texture_selected()
    job = MANAGER.current

    def cancel_at_2(j):
        if j.state.step >= 2 and not j.info.get("asked"):
            j.info["asked"] = True
            bpy.ops.dreamfusion.cancel()

    st = H.drive(job, timeout=60, on_tick=cancel_at_2)
    assert st.status == "cancelled" and st.returncode == 130, st.message
    assert obj.material_slots[0].material.name == "Old paint"  # nothing applied
    assert p.last_run_kind == "texture" and bpy.ops.dreamfusion.resume.poll()
    monkeypatch.setenv("FAKE_STEP_S", "0.0")
    assert bpy.ops.dreamfusion.resume() == {"FINISHED"}
    st = H.drive(MANAGER.current, timeout=60)
    assert st.succeeded, st.message
    assert obj.material_slots[0].material.name == "DreamFusion a red apple" and obj["dreamfusion_prompt"] == "a red apple"


def test_a_mesh_edited_while_it_is_textured_is_not_touched(setup, monkeypatch):
    """texture-mesh-changed: the run finishes, the texture is not applied, the message says where it is."""
    monkeypatch.setenv("FAKE_STEP_S", "0.1")
    obj = _cube("Edited")
    bpy.ops.dreamfusion.texture_selected()
    job = MANAGER.current
    obj.modifiers.new("Subdivision", "SUBSURF")  # the user keeps working: 12 triangles sent, 48 now
    st = H.drive(job, timeout=60)
    assert st.status == "failed" and "changed while it was being textured" in st.message, st.message
    assert bpy.context.scene.dreamfusion.last_status.startswith("texture failed: the mesh of 'Edited' changed")
    assert obj.material_slots[0].material.name == "Old paint" and [u.name for u in obj.data.uv_layers] == ["UVMap"]


# -- headless --------------------------------------------------------------------------------------------
def test_headless_texture_command(setup):
    """`python -m dreamfusion_blender.batch texture --blend F --object NAME --prompt P --out DIR` (what
    `blender -b F -c dreamfusion texture ...` runs): a new textured .blend and the .glb; the input file unchanged."""
    _cube("Statue")
    scene = setup / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(scene))
    before = scene.read_bytes()
    out = setup / "out"
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(setup / "blender-user"))
    cmd = [sys.executable, "-m", "dreamfusion_blender.batch", "texture", "--blend", str(scene), "--object", "Statue",
           "--prompt", "a green statue", "--out", str(out), "--model", "builtin:shapes", "--steps", "2", "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=H.ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[1/1] ok" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["runs", "scene-textured.blend", "scene-textured.glb"]
    assert scene.read_bytes() == before
    with bpy.data.libraries.load(str(out / "scene-textured.blend")) as (src, dst):
        assert any(m.startswith("DreamFusion a green statue") for m in src.materials) and "Old paint" in src.materials


@pytest.mark.parametrize("case", ["texture-object-missing", "texture-object-not-mesh", "texture-blend-missing"])
def test_headless_texture_refuses_before_any_work(setup, case, capsys):
    from dreamfusion_blender import batch

    bpy.ops.object.camera_add()
    bpy.context.active_object.name = "Camera"
    out = setup / "out"
    args = {"texture-object-missing": ["--object", "Nope"], "texture-object-not-mesh": ["--object", "Camera"],
            "texture-blend-missing": ["--object", "Camera", "--blend", str(setup / "none.blend")]}[case]
    code = batch.main(["texture", *args, "--prompt", "a red cube", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert {"texture-object-missing": "no object named 'Nope'", "texture-object-not-mesh": "'Camera' is a camera, not a mesh",
            "texture-blend-missing": "no such file"}[case] in err
    assert not out.exists() and _runs(setup) == []


def test_the_bad_inputs_are_in_the_catalogue():
    """docs/BAD_INPUTS.md has a row for each refusal tested here (by id)."""
    doc = (H.ROOT / "docs" / "BAD_INPUTS.md").read_text(encoding="utf-8")
    ids = ["texture-nothing-selected", "texture-not-a-mesh", "texture-mesh-no-faces", "texture-mesh-nan-vertex",
           "texture-modifiers-remove-faces", "texture-no-uv-topology-modifier", "texture-mesh-changed",
           "texture-object-missing", "texture-object-not-mesh", "texture-blend-missing"]
    assert not [i for i in ids if f"`{i}`" not in doc]


def test_the_real_engine_end_to_end(setup, monkeypatch):
    """The same button against `python -m engine texture` itself (builtin:shapes, 4 steps, CPU: about 6 s):
    the engine reads the add-on's OBJ, makes UVs for a cube without any, and the add-on puts them back per
    loop, exactly (no seam inside a quad here), with the engine's albedo and provenance."""
    monkeypatch.setenv("DREAMFUSION_PYTHON", ENGINE_PYTHON)
    obj = _cube("Real", uv=False)
    bpy.context.scene.dreamfusion.prompt = "a red cube"
    assert bpy.ops.dreamfusion.texture_selected() == {"FINISHED"}
    assert MANAGER.current.worker.argv[:4] == [ENGINE_PYTHON, "-m", "engine", "texture"]
    st = H.drive(MANAGER.current, timeout=300)
    assert st.succeeded, (st.message, MANAGER.current.worker.stderr_tail()[-2000:])
    asset = Path(st.asset["json"]).parent
    corner = np.load(asset / "corner_uvs.npy")
    me = obj.data
    me.calc_loop_triangles()
    got = np.array([[tuple(me.uv_layers["DreamFusion"].data[i].uv) for i in t.loops] for t in me.loop_triangles])
    np.testing.assert_allclose(got, corner, atol=1e-6)
    mat = obj.material_slots[0].material
    image = mat.node_tree.nodes["Image Texture"].image
    assert image.packed_file is not None and tuple(image.size) == (64, 64)
    assert obj["dreamfusion_model"] == "builtin:shapes" and obj["dreamfusion_prompt"] == "a red cube"
    assert obj["dreamfusion_engine_version"] and obj["dreamfusion_asset"] == str(asset / "asset.glb")
    assert bpy.data.materials["Old paint"].use_fake_user and len(obj.data.polygons) == 6
