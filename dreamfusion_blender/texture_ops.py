"""The "Texture selected" button: the active mesh object, the panel's prompt and settings -> an engine
texture job, started now or queued behind the running one like Generate (texture_job.py, texture_apply.py)."""

from __future__ import annotations

import bpy

from . import engine_cli, runner, texture_job
from .jobs import Busy, Job


class DREAMFUSION_OT_texture_selected(bpy.types.Operator):
    """Paint a texture for the selected mesh from the prompt (its modifiers applied; the object, its
    modifiers and UV maps stay as they are): a new material, the old one kept in the file; queued while
    another run goes"""

    bl_idname = "dreamfusion.texture_selected"
    bl_label = "Texture selected"

    wait: bpy.props.BoolProperty(name="Wait", default=False, options={"SKIP_SAVE"},
                                 description="Block until the run (and the queue) ends (scripts; always on in background mode)")

    @classmethod
    def poll(cls, context):
        return bool(context.scene.dreamfusion.prompt.strip())

    def execute(self, context):
        try:
            engine_cli.engine_root()  # a missing engine is said before the mesh is written
            obj = texture_job.target_object(context)
            item = runner.queue_texture(context.scene, texture_job.request_from_scene(context, obj))
        except (Busy, FileNotFoundError, ValueError) as exc:  # TargetError is a ValueError
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if self.wait or (bpy.app.background and runner.BLOCK_IN_BACKGROUND):
            results = runner.run_queue()
            return {"FINISHED"} if results and all(ok for _, ok, _ in results) else {"CANCELLED"}
        runner.ensure_timer()
        started = isinstance(item, Job)
        self.report({"INFO"}, f"DreamFusion: texture {'started' if started else 'queued'} for '{obj.name}'")
        return {"FINISHED"}


classes = (DREAMFUSION_OT_texture_selected,)
