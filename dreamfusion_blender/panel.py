"""View3D > Sidebar > DreamFusion: settings, Generate, live progress with preview, Cancel, Resume / Re-export."""

from __future__ import annotations

import bpy

from . import events, operators, preview
from .jobs import MANAGER


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
        col.enabled = not MANAGER.busy  # the running job's settings are fixed
        col.prop(p, "prompt", text="")
        col.prop(p, "negative_prompt")
        col.prop(p, "preset")
        row = col.row(align=True)
        row.prop(p, "seed")
        row.operator(operators.DREAMFUSION_OT_randomize_seed.bl_idname, text="", icon="FILE_REFRESH")
        col.prop(p, "steps")
        col.prop(p, "guidance_scale")
        col.prop(p, "texture_size")
        col.prop(p, "mesh_resolution")
        col.prop(p, "target_faces")

        if MANAGER.busy:
            st = job.state
            box = layout.box()
            eta = f" · {events.format_seconds(st.eta_s)} left" if st.eta_s is not None else ""
            text = f"{st.stage or 'starting'} {st.step}/{st.total}{eta}" if st.total else "starting the engine..."
            box.progress(factor=st.fraction, type="BAR", text=text)
            icon = preview.icon_id()
            if icon:
                box.template_icon(icon_value=icon, scale=8.0)
                box.label(text=f"preview at step {st.preview_step}")
            box.operator(operators.DREAMFUSION_OT_cancel.bl_idname, icon="CANCEL")
        else:
            layout.operator(operators.DREAMFUSION_OT_generate.bl_idname, icon="SHADERFX")
            if p.last_status:
                failed = " failed" in p.last_status or " cancelled" in p.last_status
                layout.label(text=p.last_status[:180], icon="ERROR" if failed else "INFO")
            if p.last_run_dir:
                row = layout.row(align=True)
                row.operator(operators.DREAMFUSION_OT_resume.bl_idname, icon="PLAY")
                row.operator(operators.DREAMFUSION_OT_reexport.bl_idname, icon="EXPORT")


classes = (VIEW3D_PT_dreamfusion,)
