"""Operators behind the sidebar buttons: generate (or queue), the queue, cancel, resume, re-export,
randomise seed, memory-fit preset, and the model manager's download."""

from __future__ import annotations

import json
import os
import random

import bpy

from . import engine_cli, model_store, prefs, runner
from .jobs import MANAGER, Busy, Job


def _checkpoint_exists(run_dir: str) -> bool:
    return bool(run_dir) and os.path.isfile(os.path.join(bpy.path.abspath(run_dir), "checkpoints", "last.pt"))


def _resumable(run_dir: str) -> bool:
    """A checkpoint, or a run stopped while choosing its start shape (config still "auto", nothing
    trained yet), which --resume starts again in its folder."""
    if _checkpoint_exists(run_dir):
        return True
    config = os.path.join(bpy.path.abspath(run_dir), "config.json") if run_dir else ""
    try:
        with open(config, encoding="utf-8") as f:
            return json.load(f).get("start_shape") == "auto"
    except (OSError, ValueError, AttributeError):
        return False


class _JobOperator:
    """Shared: refuse while busy, start, then follow with a timer (UI) or block (background / wait=True)."""

    wait: bpy.props.BoolProperty(name="Wait", default=False, options={"SKIP_SAVE"},
                                 description="Block until the run ends (scripts; always on in background mode)")

    @classmethod
    def poll(cls, context):
        return not MANAGER.busy

    def start(self, context):
        raise NotImplementedError

    def execute(self, context):
        try:
            job = self.start(context)
        except Busy as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        except (FileNotFoundError, ValueError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if self.wait or (bpy.app.background and runner.BLOCK_IN_BACKGROUND):  # no timers after a background script
            ok, msg, _ = runner.wait(job)
            return {"FINISHED"} if ok else {"CANCELLED"}
        runner.ensure_timer()
        self.report({"INFO"}, f"DreamFusion: {job.kind} started ({job.label})")
        return {"FINISHED"}


def _blocking(op) -> bool:
    return op.wait or (bpy.app.background and runner.BLOCK_IN_BACKGROUND)


def _queue_prompts(op, context, prompts: list[str]) -> set:
    """Generate now or queue behind the running job, each prompt with the panel's current settings."""
    scene = context.scene
    base = runner.request_from_scene(scene)
    try:
        items = [runner.queue_generate(scene, engine_cli.GenerateRequest(**{**vars(base), "prompt": p})) for p in prompts]
    except (Busy, FileNotFoundError, ValueError) as exc:
        op.report({"ERROR"}, str(exc))
        return {"CANCELLED"}
    if _blocking(op):
        results = runner.run_queue()
        return {"FINISHED"} if results and all(ok for _, ok, _ in results) else {"CANCELLED"}
    runner.ensure_timer()
    queued = sum(not isinstance(i, Job) for i in items)
    op.report({"INFO"}, f"DreamFusion: {len(items) - queued} started, {queued} queued")
    return {"FINISHED"}


class DREAMFUSION_OT_generate(bpy.types.Operator):
    """Generate a textured 3D object from the prompt (runs the engine in a separate process); while a run
    goes, the prompt is queued and starts when the engine is free"""

    bl_idname = "dreamfusion.generate"
    bl_label = "Generate"

    wait: bpy.props.BoolProperty(name="Wait", default=False, options={"SKIP_SAVE"},
                                 description="Block until the run (and the queue) ends (scripts; always on in background mode)")

    @classmethod
    def poll(cls, context):
        return bool(context.scene.dreamfusion.prompt.strip())

    def execute(self, context):
        p = context.scene.dreamfusion
        fits, msg, _ = memory_advice(context)
        if fits is False:
            self.report({"WARNING"}, msg)
        return _queue_prompts(self, context, [p.prompt.strip()])


class DREAMFUSION_OT_queue_text(bpy.types.Operator):
    """Queue every line of a text block as a prompt (blank lines and lines starting with # are skipped)"""

    bl_idname = "dreamfusion.queue_text"
    bl_label = "Queue prompts from text"

    wait: bpy.props.BoolProperty(default=False, options={"SKIP_SAVE"})

    @classmethod
    def poll(cls, context):
        return bpy.data.texts.get(context.scene.dreamfusion.prompts_text) is not None

    def execute(self, context):
        text = bpy.data.texts.get(context.scene.dreamfusion.prompts_text)
        prompts = [ln.body.strip() for ln in text.lines if ln.body.strip() and not ln.body.lstrip().startswith("#")]
        if not prompts:
            self.report({"ERROR"}, f"the text block '{text.name}' has no prompts (one per line)")
            return {"CANCELLED"}
        return _queue_prompts(self, context, prompts)


class DREAMFUSION_OT_queue_remove(bpy.types.Operator):
    """Cancel this queued run (it never starts), or the running one"""

    bl_idname = "dreamfusion.queue_remove"
    bl_label = "Cancel this run"

    run_id: bpy.props.IntProperty(default=0, options={"SKIP_SAVE"})  # 0: the running job

    def execute(self, context):
        if self.run_id == 0:
            ok = MANAGER.cancel()
        else:
            ok = MANAGER.remove(self.run_id)
        if not ok:
            self.report({"WARNING"}, "nothing to cancel: it has already finished")
            return {"CANCELLED"}
        return {"FINISHED"}


class DREAMFUSION_OT_queue_clear(bpy.types.Operator):
    """Cancel the running job and every queued run"""

    bl_idname = "dreamfusion.queue_clear"
    bl_label = "Cancel all"

    @classmethod
    def poll(cls, context):
        return MANAGER.busy or bool(MANAGER.queue)

    def execute(self, context):
        n = MANAGER.cancel_all()
        self.report({"INFO"}, f"DreamFusion: cancelled {n} run(s)")
        return {"FINISHED"}


def memory_advice(context) -> tuple:
    """memory_fit.advice for the panel's preset, from the last engine check (set-up or Check engine)."""
    from . import memory_fit

    check = None
    if prefs.CHECK is not None and prefs.CHECK.state.check:
        check = prefs.CHECK.state.check
    elif prefs.SETUP is not None and prefs.SETUP.status.check:
        check = prefs.SETUP.status.check
    return memory_fit.advice(check, context.scene.dreamfusion.preset, prefs.settings().model)


class DREAMFUSION_OT_use_preset(bpy.types.Operator):
    """Switch to a preset that fits the GPU's memory"""

    bl_idname = "dreamfusion.use_preset"
    bl_label = "Use preset"
    bl_options = {"REGISTER", "UNDO"}

    preset: bpy.props.StringProperty(options={"SKIP_SAVE"})

    def execute(self, context):
        context.scene.dreamfusion.preset = self.preset
        return {"FINISHED"}


class DREAMFUSION_OT_download_model(_JobOperator, bpy.types.Operator):
    """Download the chosen hub model (only what SDS needs; fp16 weights where the repository has them)
    into the models folder, with progress"""

    bl_idname = "dreamfusion.download_model"
    bl_label = "Download model"

    @classmethod
    def poll(cls, context):
        p = prefs.get_prefs()
        return not MANAGER.busy and p is not None and model_store.is_hub_id(p.model)

    def start(self, context):
        if not prefs.online():
            raise ValueError("Download model needs the model hub. " + prefs.OFFLINE_HELP)
        return runner.start_download(prefs.get_prefs().model.strip())


class DREAMFUSION_OT_resume(_JobOperator, bpy.types.Operator):
    """Continue the last run from its checkpoint"""

    bl_idname = "dreamfusion.resume"
    bl_label = "Resume"

    @classmethod
    def poll(cls, context):
        return not MANAGER.busy and _resumable(context.scene.dreamfusion.last_run_dir)

    def start(self, context):
        run_dir = bpy.path.abspath(context.scene.dreamfusion.last_run_dir)
        if context.scene.dreamfusion.last_run_kind == "texture":
            return runner.start_texture_resume(context.scene, run_dir)
        return runner.start_resume(context.scene, run_dir)


class DREAMFUSION_OT_reexport(_JobOperator, bpy.types.Operator):
    """Export the last run's checkpoint again (with the panel's mesh resolution and texture size) and put it in
    place of the run's object (or next to it, with Keep previous)"""

    bl_idname = "dreamfusion.reexport"
    bl_label = "Re-export"

    @classmethod
    def poll(cls, context):
        p = context.scene.dreamfusion  # a texture run has no field to export again
        return not MANAGER.busy and p.last_run_kind != "texture" and _checkpoint_exists(p.last_run_dir)

    def start(self, context):
        return runner.start_export(context.scene, bpy.path.abspath(context.scene.dreamfusion.last_run_dir))


class DREAMFUSION_OT_cancel(bpy.types.Operator):
    """Stop the running job; it saves a checkpoint first, so it can be resumed"""

    bl_idname = "dreamfusion.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context):
        return MANAGER.busy

    def execute(self, context):
        MANAGER.cancel()
        context.scene.dreamfusion.last_status = "cancelling: waiting for the engine to save a checkpoint..."
        self.report({"INFO"}, "DreamFusion: cancelling (saving a checkpoint)")
        return {"FINISHED"}


class DREAMFUSION_OT_randomize_seed(bpy.types.Operator):
    """Pick a new random seed"""

    bl_idname = "dreamfusion.randomize_seed"
    bl_label = "Randomise seed"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        context.scene.dreamfusion.seed = random.randint(0, 2**31 - 1)
        return {"FINISHED"}


class DREAMFUSION_OT_report(bpy.types.Operator):
    """Internal: put a message into the Info log from a timer callback"""

    bl_idname = "dreamfusion.report"
    bl_label = "DreamFusion report"
    bl_options = {"INTERNAL"}

    type: bpy.props.StringProperty(default="INFO")
    message: bpy.props.StringProperty()

    def execute(self, context):
        self.report({self.type}, self.message)
        return {"FINISHED"}


classes = (DREAMFUSION_OT_generate, DREAMFUSION_OT_queue_text, DREAMFUSION_OT_queue_remove, DREAMFUSION_OT_queue_clear,
           DREAMFUSION_OT_use_preset, DREAMFUSION_OT_download_model, DREAMFUSION_OT_resume, DREAMFUSION_OT_reexport,
           DREAMFUSION_OT_cancel, DREAMFUSION_OT_randomize_seed, DREAMFUSION_OT_report)
