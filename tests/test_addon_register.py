"""The add-on registers and unregisters cleanly in real (headless) Blender, and its settings resolve."""

import test_addon_helpers as H  # noqa: F401  (isolates Blender's user folder before bpy is imported)

import bpy  # noqa: I001  (first: bpy puts addon_utils on sys.path)
import addon_utils

from dreamfusion_blender import prefs


def _present():
    return {
        "panel": hasattr(bpy.types, "VIEW3D_PT_dreamfusion"),
        "prefs": getattr(bpy.context.preferences.addons.get("dreamfusion_blender"), "preferences", None) is not None,
        "scene_props": "dreamfusion" in bpy.types.Scene.bl_rna.properties,
        "operators": all(hasattr(bpy.types, f"DREAMFUSION_OT_{n}") for n in
                         ("generate", "cancel", "resume", "reexport", "randomize_seed", "setup_engine", "check_engine")),
    }


def test_register_and_unregister_cleanly():
    H.enable_addon()
    assert all(_present().values()), _present()
    import dreamfusion_blender

    assert dreamfusion_blender._CLI_HANDLE is not None  # `blender -c dreamfusion` is registered
    addon_utils.disable("dreamfusion_blender", default_set=True, handle_error=None)
    assert not any(_present().values()), _present()
    assert dreamfusion_blender._CLI_HANDLE is None
    H.enable_addon()  # and again: no leftovers break a second registration
    assert all(_present().values())


def test_panel_settings_and_operators():
    H.enable_addon()
    bpy.ops.wm.read_homefile(use_empty=True)  # fresh scene settings, whatever ran before
    scene = bpy.context.scene
    p = scene.dreamfusion
    assert p.preset == "draft" and p.steps == 0 and p.texture_size == 0
    p.prompt = ""
    assert not bpy.ops.dreamfusion.generate.poll()  # nothing to generate without a prompt
    p.prompt = "a red cube"
    assert bpy.ops.dreamfusion.generate.poll()
    assert not bpy.ops.dreamfusion.cancel.poll()  # nothing running
    assert not bpy.ops.dreamfusion.resume.poll()  # no run folder yet
    seeds = set()
    for _ in range(3):
        bpy.ops.dreamfusion.randomize_seed()
        seeds.add(p.seed)
    assert len(seeds) > 1


def test_settings_resolution(tmp_path):
    pr = H.enable_addon()
    pr.python_path, pr.model, pr.device, pr.output_dir = "", "builtin:shapes", "CPU", str(tmp_path)
    pr.extra_settings = "iso=5 preview_every=10"
    s = prefs.settings()
    assert s.model == "builtin:shapes" and s.device == "cpu" and s.output_dir == str(tmp_path)
    assert s.extra == ("--set", "iso=5", "--set", "preview_every=10")
    assert s.python  # the managed venv if it exists, else this interpreter
    pr.extra_settings, pr.output_dir = "", ""
    assert prefs.settings().output_dir.endswith("runs")


def test_check_engine_reports_torch_and_model():
    pr = H.enable_addon()
    pr.python_path, pr.device, pr.model = "", "CPU", str(H.tiny_model())
    assert bpy.ops.dreamfusion.check_engine(wait=True) == {"FINISHED"}
    kind, msg = prefs.check_report()
    assert kind == {"INFO"} and msg.startswith("OK:") and "torch" in msg and "ok" in msg, msg
    pr.model = "/no/such/model"
    bpy.ops.dreamfusion.check_engine(wait=True)
    kind, msg = prefs.check_report()
    assert kind == {"WARNING"} and "/no/such/model" in msg


class _FakeLayout:
    """Stands in for UILayout (bpy-as-a-module has no window to draw in): records what draw() asks for."""

    def __init__(self, calls):
        self.calls, self.enabled = calls, True

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return self if name in ("column", "row", "box", "split") else None

        return call


def test_panel_and_preferences_draw_without_errors():
    from dreamfusion_blender import panel
    from dreamfusion_blender.jobs import MANAGER, Job
    from dreamfusion_blender.worker import Worker

    pr = H.enable_addon()
    scene = bpy.context.scene
    scene.dreamfusion.last_run_dir, scene.dreamfusion.last_status = "/tmp/x", "generate failed: boom"

    def draw(cls, data):
        calls = []
        holder = type("Holder", (), {"layout": _FakeLayout(calls)})()
        cls.draw(holder if data is None else type("P", (), {"layout": _FakeLayout(calls), **{
            k: getattr(data, k) for k in ("python_path", "model", "model_choice", "device", "output_dir", "extra_settings",
                                         "hub_token", "models_dir")}})(),
            bpy.context)
        return [c[0] for c in calls], calls

    names, _ = draw(panel.VIEW3D_PT_dreamfusion, None)
    assert "operator" in names and "progress" not in names
    saved = MANAGER.current
    job = Job("generate", Worker(["never-started"]), label="a red cube")  # not started: counts as running
    job.state.stage, job.state.step, job.state.total, job.state.eta_s = "train", 5, 10, 70
    MANAGER.current = job
    try:
        names, calls = draw(panel.VIEW3D_PT_dreamfusion, None)
    finally:
        MANAGER.current = saved
    progress = [c for c in calls if c[0] == "progress"]
    assert progress and progress[0][2]["factor"] == 0.5 and "5/10" in progress[0][2]["text"]
    names, _ = draw(type(pr), pr)
    assert names.count("operator") >= 2  # Set up engine, Check engine (+ Download model for a hub id)
