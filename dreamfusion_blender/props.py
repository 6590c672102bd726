"""The panel's settings, stored per scene (so they are saved with the .blend and seen by the batch runner)."""

from __future__ import annotations

import bpy

PRESETS = [
    ("draft", "Draft", "About 1500 steps, 128³ mesh, 512 px texture: a quick look"),
    ("standard", "Standard", "About 5000 steps, 256³ mesh, 1024 px texture"),
    ("high", "High", "The paper's 15000 steps, 384³ mesh, 2048 px texture"),
]


# DEFAULT = the model's own choice (the builtin prior: auto; Stable Diffusion and IF: ball); engine/start_shape.py.
START_SHAPES = [
    ("DEFAULT", "Model default", "What the model recommends (the builtin prior tries both; hub models start from a ball)"),
    ("auto", "Auto", "Train a ball and a ring for a few steps each and keep the one the model prefers for the prompt"),
    ("ball", "Ball", "Start from a ball at the centre (the DreamFusion papers' start): solid objects"),
    ("ring", "Ring", "Start from a ring about the up axis: objects with a hole (a donut, a ring, a tyre)"),
]


class DreamFusionSettings(bpy.types.PropertyGroup):
    prompt: bpy.props.StringProperty(name="Prompt", description="What to make, e.g. 'a ceramic mug'")
    negative_prompt: bpy.props.StringProperty(name="Negative", description="What to avoid (optional)")
    preset: bpy.props.EnumProperty(name="Preset", items=PRESETS, default="draft")
    seed: bpy.props.IntProperty(name="Seed", default=0, min=0, max=2**31 - 1)
    # 0 = "the preset's value": the engine resolves presets, the add-on does not duplicate them.
    steps: bpy.props.IntProperty(name="Steps", default=0, min=0, max=1_000_000, description="0: the preset's number")
    guidance_scale: bpy.props.FloatProperty(name="Guidance", default=0.0, min=0.0, max=1000.0,
                                            description="Classifier-free guidance weight; 0: the model's default (paper: 100)")
    start_shape: bpy.props.EnumProperty(name="Start shape", items=START_SHAPES, default="DEFAULT",
                                        description="What the 3D field starts from; a short run does not change its topology")
    texture_size: bpy.props.IntProperty(name="Texture", default=0, min=0, max=8192, description="Texture size in pixels; 0: preset")
    mesh_resolution: bpy.props.IntProperty(name="Mesh resolution", default=0, min=0, max=1024,
                                           description="Marching-cubes grid size; 0: preset")
    target_faces: bpy.props.IntProperty(name="Max faces", default=0, min=0, max=10_000_000,
                                        description="Polygon budget of the mesh (decimation target); 0: preset (20k/40k/100k)")
    refine_steps: bpy.props.IntProperty(name="Refine steps", default=0, min=0, max=1_000_000,
                                        description="Refine the exported mesh with this many SDS steps (docs/SDS_SHAPES.md); 0: off")
    size: bpy.props.FloatProperty(name="Size", default=1.0, min=0.0, soft_max=100.0, subtype="DISTANCE",
                                  description="Longest side of the imported object, in scene units (0: as generated). "
                                              "The object's base sits on the 3D cursor")
    keep_previous: bpy.props.BoolProperty(name="Keep previous", default=False,
                                          description="Re-export adds a new object instead of replacing the run's object in place")
    prompts_text: bpy.props.StringProperty(name="Prompts", description="A text block with one prompt per line, to queue them all")
    # Outcome of the last run, kept in the file so Resume / Re-export work after a reload.
    last_run_dir: bpy.props.StringProperty(name="Last run folder", subtype="DIR_PATH")
    last_status: bpy.props.StringProperty(name="Last status")
    last_prompt: bpy.props.StringProperty()
    last_run_kind: bpy.props.StringProperty()  # generate | texture: what Resume continues
    texture_object: bpy.props.PointerProperty(type=bpy.types.Object)  # a texture run's object (for its Resume)


classes = (DreamFusionSettings,)


def register_props() -> None:
    bpy.types.Scene.dreamfusion = bpy.props.PointerProperty(type=DreamFusionSettings)


def unregister_props() -> None:
    del bpy.types.Scene.dreamfusion
