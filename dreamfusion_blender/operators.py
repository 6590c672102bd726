"""Operators behind the sidebar buttons: generate, cancel, resume, re-export, randomise seed."""

from __future__ import annotations

import os
import random

import bpy

from . import runner
from .jobs import MANAGER, Busy


def _checkpoint_exists(run_dir: str) -> bool:
    return bool(run_dir) and os.path.isfile(os.path.join(bpy.path.abspath(run_dir), "checkpoints", "last.pt"))


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


class DREAMFUSION_OT_generate(_JobOperator, bpy.types.Operator):
    """Generate a textured 3D object from the prompt (runs the engine in a separate process)"""

    bl_idname = "dreamfusion.generate"
    bl_label = "Generate"

    @classmethod
    def poll(cls, context):
        return not MANAGER.busy and bool(context.scene.dreamfusion.prompt.strip())

    def start(self, context):
        return runner.start_generate(context.scene, runner.request_from_scene(context.scene))


class DREAMFUSION_OT_resume(_JobOperator, bpy.types.Operator):
    """Continue the last run from its checkpoint"""

    bl_idname = "dreamfusion.resume"
    bl_label = "Resume"

    @classmethod
    def poll(cls, context):
        return not MANAGER.busy and _checkpoint_exists(context.scene.dreamfusion.last_run_dir)

    def start(self, context):
        return runner.start_resume(context.scene, bpy.path.abspath(context.scene.dreamfusion.last_run_dir))


class DREAMFUSION_OT_reexport(_JobOperator, bpy.types.Operator):
    """Export the last run's checkpoint again (with the panel's mesh resolution and texture size) and import it"""

    bl_idname = "dreamfusion.reexport"
    bl_label = "Re-export"

    @classmethod
    def poll(cls, context):
        return not MANAGER.busy and _checkpoint_exists(context.scene.dreamfusion.last_run_dir)

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


classes = (DREAMFUSION_OT_generate, DREAMFUSION_OT_resume, DREAMFUSION_OT_reexport, DREAMFUSION_OT_cancel,
           DREAMFUSION_OT_randomize_seed, DREAMFUSION_OT_report)
