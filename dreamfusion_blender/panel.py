"""View3D > Sidebar > DreamFusion: settings, Generate (or queue), live progress with preview, the queue,
Cancel, Resume / Re-export, and warnings (offline, memory fit) before a run."""

from __future__ import annotations

import bpy

from . import events, model_store, operators, prefs, preview
from .jobs import MANAGER


def _draw_warnings(layout, context) -> None:
    """Say what blocks or endangers a run before it starts: offline without the model, too little GPU memory."""
    p = context.scene.dreamfusion
    pr = prefs.get_prefs()
    model = (pr.model if pr else "") or prefs.DEFAULT_MODEL
    if not prefs.online() and model_store.is_hub_id(model) and model_store.downloaded_path(prefs.models_dir(), model) is None:
        box = layout.box()
        box.label(text=f"Offline: {model} is not downloaded", icon="INTERNET_OFFLINE")
        box.label(text="Allow Online Access and download it, or pick a local folder / builtin:shapes")
    fits, msg, smaller = operators.memory_advice(context)
    if fits is False:
        box = layout.box()
        box.label(text=msg[:200], icon="ERROR")
        if smaller:
            op = box.operator(operators.DREAMFUSION_OT_use_preset.bl_idname, text=f"Use {smaller}")
            op.preset = smaller
    elif fits and p.preset:
        layout.label(text=msg[:200], icon="CHECKMARK")


def _draw_queue(layout) -> None:
    if not MANAGER.queue and not MANAGER.history:
        return
    box = layout.box()
    box.label(text=f"Queue: {len(MANAGER.queue)} waiting", icon="SEQUENCE")
    for run in MANAGER.queue:
        row = box.row()
        row.label(text=run.label[:60])
        op = row.operator(operators.DREAMFUSION_OT_queue_remove.bl_idname, text="", icon="X")
        op.run_id = run.id
    for label, outcome in MANAGER.history[-5:]:
        box.label(text=f"{label[:40]}: {outcome[:80]}", icon="CHECKMARK" if outcome == "done" else "ERROR")
    if MANAGER.queue or MANAGER.busy:
        box.operator(operators.DREAMFUSION_OT_queue_clear.bl_idname, icon="CANCEL")


class VIEW3D_PT_dreamfusion(bpy.types.Panel):
    bl_label = "DreamFusion"
    bl_idname = "VIEW3D_PT_dreamfusion"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "DreamFusion"

    def draw(self, context):
        layout = self.layout
        p = context.scene.dreamfusion
        job = MANAGER.current

        col = layout.column()
        col.prop(p, "prompt", text="")
        col.prop(p, "negative_prompt")
        col.prop(p, "preset")
        row = col.row(align=True)
        row.prop(p, "seed")
        row.operator(operators.DREAMFUSION_OT_randomize_seed.bl_idname, text="", icon="FILE_REFRESH")
        col.prop(p, "steps")
        col.prop(p, "guidance_scale")
        col.prop(p, "start_shape")
        col.prop(p, "texture_size")
        col.prop(p, "mesh_resolution")
        col.prop(p, "target_faces")
        col.prop(p, "refine_steps")
        col.prop(p, "size")
        _draw_warnings(layout, context)

        busy = MANAGER.busy
        layout.operator(operators.DREAMFUSION_OT_generate.bl_idname, icon="SHADERFX",
                        text="Add to queue" if busy else "Generate")
        layout.operator("dreamfusion.texture_selected", icon="TEXTURE",
                        text="Queue texture for selected" if busy else "Texture selected")
        row = layout.row(align=True)
        row.prop_search(p, "prompts_text", bpy.data, "texts", text="")
        row.operator(operators.DREAMFUSION_OT_queue_text.bl_idname, text="Queue all", icon="TEXT")

        if busy:
            st = job.state
            box = layout.box()
            eta = f" · {events.format_seconds(st.eta_s)} left" if st.eta_s is not None else ""
            text = f"{st.stage or 'starting'} {st.step}/{st.total}{eta}" if st.total else "starting the engine..."
            box.label(text=f"{job.kind}: {job.label[:60]}")
            box.progress(factor=st.fraction, type="BAR", text=text)
            icon = preview.icon_id()
            if icon:
                box.template_icon(icon_value=icon, scale=8.0)
                box.label(text=f"preview at step {st.preview_step}")
            box.operator(operators.DREAMFUSION_OT_cancel.bl_idname, icon="CANCEL")
        _draw_queue(layout)
        if not busy:
            if p.last_status:
                failed = " failed" in p.last_status or " cancelled" in p.last_status
                layout.label(text=p.last_status[:180], icon="ERROR" if failed else "INFO")
            if p.last_run_dir:
                row = layout.row(align=True)
                row.operator(operators.DREAMFUSION_OT_resume.bl_idname, icon="PLAY")
                row.operator(operators.DREAMFUSION_OT_reexport.bl_idname, icon="EXPORT")
                layout.prop(p, "keep_previous")


classes = (VIEW3D_PT_dreamfusion,)
