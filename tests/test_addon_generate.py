"""End to end in headless Blender with a real engine worker on CPU and the tiny random-weight model.

The UI path is exercised: the operators start a real `python -m engine` subprocess, and the timer
callback (runner.tick) is called by hand, because bpy.app.timers never fire in bpy-as-a-module.
"""

import os
import signal
from pathlib import Path

import pytest

import test_addon_helpers as H

import bpy  # noqa: E402

from dreamfusion_blender import importer, runner  # noqa: E402
from dreamfusion_blender.jobs import MANAGER, Busy  # noqa: E402

TOKEN = "hf_FAKEgenerateToken13579"


@pytest.fixture
def setup(tmp_path):
    pr = H.enable_addon()
    pr.python_path, pr.device, pr.output_dir = "", "CPU", str(tmp_path / "runs")
    pr.model = str(H.tiny_model())
    pr.extra_settings = H.FAST_SETTINGS
    runner.BLOCK_IN_BACKGROUND = False
    bpy.ops.wm.read_homefile(use_empty=True)
    p = bpy.context.scene.dreamfusion
    p.prompt, p.preset, p.seed, p.steps, p.mesh_resolution, p.texture_size = "a red cube", "draft", 7, 4, 64, 128
    yield pr
    MANAGER.queue.clear()
    if MANAGER.busy:
        MANAGER.current.worker.kill()
    runner.BLOCK_IN_BACKGROUND = True
    pr.hub_token = ""
    bpy.context.preferences.system.use_online_access = False


def _df_objects():
    coll = bpy.data.collections.get(importer.COLLECTION)
    return list(coll.objects) if coll else []


def _world_bounds(obj):
    from mathutils import Vector

    pts = [obj.matrix_world @ Vector(c) for c in obj.bound_box]
    return [min(p[i] for p in pts) for i in range(3)], [max(p[i] for p in pts) for i in range(3)]


def test_generate_queue_import_and_reexport_in_place(setup, tmp_path):
    """One run started, two queued behind it (one with a missing model): every run is handled in order,
    each result imported as it finishes, the failed one reported without stopping the queue; objects
    stand on the cursor at the size setting; Re-export replaces the object's mesh in place."""
    scene = bpy.context.scene
    p = scene.dreamfusion
    scene.cursor.location = (1.0, 2.0, 3.0)
    p.size = 2.0
    setup.hub_token = TOKEN  # online: the engine gets it in its environment, and nowhere else
    bpy.context.preferences.system.use_online_access = True
    assert bpy.ops.dreamfusion.generate() == {"FINISHED"}
    job = MANAGER.current
    assert job.running and job.worker.pid
    assert job.worker.env["HF_TOKEN"] == TOKEN and not any(TOKEN in a for a in job.worker.argv)
    with pytest.raises(Busy):  # the engine itself never runs twice
        runner.start_generate(scene, runner.request_from_scene(scene))
    # While it runs, Generate queues (the request is fixed when queued: this one gets a missing model).
    good_model = setup.model
    setup.model = str(tmp_path / "no-such-model")
    p.prompt = "a broken one"
    assert bpy.ops.dreamfusion.generate.poll() and bpy.ops.dreamfusion.generate() == {"FINISHED"}
    setup.model = good_model
    p.prompt = "a second cube"
    bpy.ops.dreamfusion.generate()
    p.prompt = "never started"
    bpy.ops.dreamfusion.generate()
    assert [r.label for r in MANAGER.queue] == ["a broken one", "a second cube", "never started"]
    assert bpy.ops.dreamfusion.queue_remove(run_id=MANAGER.queue[-1].id) == {"FINISHED"}  # cancel one

    seen = {"train_steps": set(), "preview": False, "objects_when_second_started": None}

    def watch(j):
        if j is job and j.state.stage == "train":
            seen["train_steps"].add(j.state.step)
        seen["preview"] |= bpy.data.images.get("DreamFusion Preview") is not None
        if j is not None and j.label == "a second cube" and seen["objects_when_second_started"] is None:
            seen["objects_when_second_started"] = len(_df_objects())

    jobs = H.drive_queue(on_tick=watch)
    assert [j.label for j in jobs] == ["a red cube", "a broken one", "a second cube"]
    assert [j.state.status for j in jobs] == ["done", "failed", "done"], [j.state.message for j in jobs]
    assert jobs[1].state.error_kind == "model" and "no-such-model" in jobs[1].state.message
    assert seen["train_steps"] >= {4} and len(seen["train_steps"]) >= 2  # progress arrived while it ran
    assert seen["preview"]  # the preview PNG was loaded into bpy.data.images
    assert seen["objects_when_second_started"] == 1  # imported as it finished, not at the end
    assert [o for o, _ in MANAGER.history[-3:]] == ["a red cube", "a broken one", "a second cube"]

    objs = sorted(_df_objects(), key=lambda o: o.name)
    assert [o.name for o in objs] == ["a red cube", "a second cube"]
    obj = objs[0]
    assert obj.type == "MESH" and len(obj.data.polygons) > 0
    # Placement: origin on the cursor, the base (lowest point) on the cursor's height, centred over it,
    # and the longest side equal to the size setting.
    assert tuple(round(v, 4) for v in obj.location) == (1.0, 2.0, 3.0)
    lo, hi = _world_bounds(obj)
    assert abs(lo[2] - 3.0) < 1e-4 and abs((lo[0] + hi[0]) / 2 - 1.0) < 1e-4 and abs((lo[1] + hi[1]) / 2 - 2.0) < 1e-4
    assert abs(max(h - l for h, l in zip(hi, lo)) - 2.0) < 1e-4
    assert importer.has_textured_material(obj)
    assert obj["dreamfusion_prompt"] == "a red cube" and obj["dreamfusion_seed"] == 7
    assert obj["dreamfusion_steps"] == 4 and obj["dreamfusion_preset"] == "draft"
    assert obj["dreamfusion_model"] == str(H.tiny_model()) and obj["dreamfusion_engine_version"]
    run_dir = Path(obj["dreamfusion_run_folder"])
    assert (run_dir / "asset" / "asset.glb").is_file()
    written = [f for f in (tmp_path / "runs").rglob("*") if f.is_file()]
    assert len(written) > 5 and not [f for f in written if TOKEN.encode() in f.read_bytes()]  # no run file has it

    # The .blend keeps the object, its texture (packed by the glTF importer) and provenance.
    p.last_run_dir = str(run_dir)
    blend = tmp_path / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    obj = bpy.data.objects["a red cube"]
    assert importer.has_textured_material(obj) and obj["dreamfusion_prompt"] == "a red cube"
    assert bpy.context.scene.dreamfusion.last_run_dir == str(run_dir)

    # Re-export from the reloaded file's run folder replaces the mesh and material in place: same
    # object, name, transform (the user moved and rotated it), a new mesh from the export folder.
    obj.location, obj.rotation_euler = (5.0, 0.0, 0.0), (0.0, 0.0, 1.0)
    old_mesh = obj.data.name_full
    old_pointer = obj.data.as_pointer()
    bpy.context.scene.dreamfusion.mesh_resolution = 48  # a visibly different mesh
    old_faces = len(obj.data.polygons)
    assert bpy.ops.dreamfusion.reexport.poll()
    bpy.ops.dreamfusion.reexport()
    st = H.drive(MANAGER.current)
    assert st.succeeded, st.message
    obj = bpy.data.objects["a red cube"]
    assert sorted(o.name for o in _df_objects()) == ["a red cube", "a second cube"]
    assert tuple(obj.location) == (5.0, 0.0, 0.0) and abs(obj.rotation_euler[2] - 1.0) < 1e-6
    assert obj.data.as_pointer() != old_pointer and obj.data.name_full == old_mesh
    assert len(obj.data.polygons) != old_faces and importer.has_textured_material(obj)
    assert "export-" in obj["dreamfusion_asset"] and "export-" in st.asset["glb"]
    assert len(bpy.data.meshes) == 2  # the replaced mesh was freed
    # Keeping the previous one is on request: then a second object comes in.
    bpy.context.scene.dreamfusion.keep_previous = True
    bpy.ops.dreamfusion.reexport()
    assert H.drive(MANAGER.current).succeeded
    assert len(_df_objects()) == 3 and tuple(bpy.data.objects["a red cube"].location) == (5.0, 0.0, 0.0)


def test_cancel_all_mid_run_leaves_no_object_and_a_resumable_run(setup):
    """Cancel all: the running job saves a checkpoint and stops, the queued prompts (here from a text
    block) never start."""
    bpy.context.scene.dreamfusion.steps = 400
    bpy.ops.dreamfusion.generate()
    job = MANAGER.current
    text = bpy.data.texts.new("prompts")
    text.write("a green cone\n# a comment\n\na blue torus\n")
    bpy.context.scene.dreamfusion.prompts_text = text.name
    assert bpy.ops.dreamfusion.queue_text() == {"FINISHED"}
    assert [r.label for r in MANAGER.queue] == ["a green cone", "a blue torus"]

    def cancel_when_training(j):
        if j.state.stage == "train" and j.state.step >= 2 and not j.info.get("asked"):
            j.info["asked"] = True
            assert bpy.ops.dreamfusion.queue_clear() == {"FINISHED"}

    jobs = H.drive_queue(on_tick=cancel_when_training)
    st = job.state
    assert jobs == [job] and MANAGER.queue == []
    assert st.status == "cancelled" and st.returncode == 130, (st.message, job.worker.stderr_tail())
    assert _df_objects() == [] and len(bpy.data.objects) == 0
    assert (Path(st.run_dir) / "checkpoints" / "last.pt").is_file()
    assert "cancelled" in bpy.context.scene.dreamfusion.last_status
    assert bpy.ops.dreamfusion.resume.poll()  # Resume is offered for the kept run folder


def test_killed_worker_is_an_error_not_a_hang(setup):
    bpy.context.scene.dreamfusion.steps = 400
    bpy.ops.dreamfusion.generate()
    job = MANAGER.current

    def kill_when_started(j):
        if j.state.stage and not j.info.get("killed"):
            j.info["killed"] = True
            os.kill(j.worker.pid, signal.SIGKILL)

    st = H.drive(job, timeout=120, on_tick=kill_when_started)
    assert st.status == "failed" and "SIGKILL" in st.message
    assert _df_objects() == []
    assert "failed" in bpy.context.scene.dreamfusion.last_status
    assert not MANAGER.busy and bpy.ops.dreamfusion.generate.poll()  # the next run can start


def test_bad_model_path_reports_the_engines_message(setup, tmp_path):
    missing = tmp_path / "no-such-model"
    setup.model = str(missing)
    bpy.ops.dreamfusion.generate()
    st = H.drive(MANAGER.current, timeout=120)
    assert st.status == "failed" and st.error_kind == "model", (st.message, MANAGER.current.worker.stderr_tail())
    assert "no-such-model" in st.message
    assert st.message in bpy.context.scene.dreamfusion.last_status
    assert _df_objects() == []


def test_the_start_shape_setting_reaches_the_engine(setup):
    """The panel's Start shape: "Model default" passes nothing (the model's dreamfusion.json decides);
    a choice becomes the engine's --set start_shape, before the user's advanced settings (which win)."""
    from dreamfusion_blender import engine_cli

    scene = bpy.context.scene
    req = runner.request_from_scene(scene)
    assert scene.dreamfusion.start_shape == "DEFAULT" and req.start_shape is None
    assert not any("start_shape=" in a for a in engine_cli.generate_argv("py", req))
    scene.dreamfusion.start_shape = "ring"
    argv = engine_cli.generate_argv("py", runner.request_from_scene(scene))
    assert "--set=start_shape=ring" in argv
    extra = engine_cli.GenerateRequest(prompt="x", out="o", start_shape="ring", extra=("--set", "start_shape=ball"))
    argv = engine_cli.generate_argv("py", extra)
    assert argv.index("--set=start_shape=ring") < argv.index("start_shape=ball")  # the later --set wins


def test_resume_is_offered_for_a_run_stopped_while_choosing_its_start_shape(setup, tmp_path):
    """No checkpoint yet, config.json still "auto": the engine's --resume starts it again, so the panel
    offers Resume; a run without a checkpoint otherwise has nothing to resume."""
    import json

    run = tmp_path / "a-torus-run"
    run.mkdir()
    p = bpy.context.scene.dreamfusion
    p.last_run_dir = str(run)
    (run / "config.json").write_text(json.dumps({"prompt": "a red torus", "start_shape": "auto"}))
    assert bpy.ops.dreamfusion.resume.poll()
    (run / "config.json").write_text(json.dumps({"prompt": "a red torus", "start_shape": "ring"}))
    assert not bpy.ops.dreamfusion.resume.poll()
    (run / "config.json").write_text("not json")
    assert not bpy.ops.dreamfusion.resume.poll()
