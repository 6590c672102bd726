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
    if MANAGER.busy:
        MANAGER.current.worker.kill()
    runner.BLOCK_IN_BACKGROUND = True


def _df_objects():
    coll = bpy.data.collections.get(importer.COLLECTION)
    return list(coll.objects) if coll else []


def test_generate_imports_textured_object_with_provenance(setup, tmp_path):
    scene = bpy.context.scene
    scene.cursor.location = (1.0, 2.0, 3.0)
    assert bpy.ops.dreamfusion.generate() == {"FINISHED"}
    job = MANAGER.current
    assert job.running and job.worker.pid
    # A second generation is refused while this one runs, never interleaved.
    assert not bpy.ops.dreamfusion.generate.poll()
    with pytest.raises(Busy):
        runner.start_generate(scene, runner.request_from_scene(scene))

    seen = {"train_steps": set(), "preview": False}

    def watch(j):
        if j.state.stage == "train":
            seen["train_steps"].add(j.state.step)
        seen["preview"] |= bpy.data.images.get("DreamFusion Preview") is not None

    st = H.drive(job, on_tick=watch)
    assert st.succeeded, (st.message, job.worker.stderr_tail())
    assert seen["train_steps"] >= {4} and len(seen["train_steps"]) >= 2  # progress arrived while it ran
    assert seen["preview"]  # the preview PNG was loaded into bpy.data.images

    objs = _df_objects()
    assert len(objs) == 1
    obj = objs[0]
    assert obj.name == "a red cube" and obj.type == "MESH" and len(obj.data.polygons) > 0
    assert tuple(round(v, 4) for v in obj.location) == (1.0, 2.0, 3.0)
    assert importer.has_textured_material(obj)
    assert obj["dreamfusion_prompt"] == "a red cube" and obj["dreamfusion_seed"] == 7
    assert obj["dreamfusion_steps"] == 4 and obj["dreamfusion_preset"] == "draft"
    assert obj["dreamfusion_model"] == str(H.tiny_model()) and obj["dreamfusion_engine_version"]
    run_dir = Path(obj["dreamfusion_run_folder"])
    assert (run_dir / "asset" / "asset.glb").is_file()
    assert scene.dreamfusion.last_run_dir == str(run_dir) and "done" in scene.dreamfusion.last_status

    # The .blend keeps the object, its texture (packed by the glTF importer) and provenance.
    blend = tmp_path / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    obj = bpy.data.objects["a red cube"]
    assert importer.has_textured_material(obj) and obj["dreamfusion_prompt"] == "a red cube"
    assert bpy.context.scene.dreamfusion.last_run_dir == str(run_dir)

    # Re-export from the reloaded file's run folder imports a second object.
    assert bpy.ops.dreamfusion.reexport.poll()
    bpy.ops.dreamfusion.reexport()
    st = H.drive(MANAGER.current)
    assert st.succeeded, st.message
    assert len(_df_objects()) == 2 and "export-" in st.asset["glb"]


def test_cancel_mid_run_leaves_no_object_and_a_resumable_run(setup):
    bpy.context.scene.dreamfusion.steps = 400
    bpy.ops.dreamfusion.generate()
    job = MANAGER.current

    def cancel_when_training(j):
        if j.state.stage == "train" and j.state.step >= 2 and bpy.ops.dreamfusion.cancel.poll() and not j.info.get("asked"):
            j.info["asked"] = True
            assert bpy.ops.dreamfusion.cancel() == {"FINISHED"}

    st = H.drive(job, on_tick=cancel_when_training)
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
