"""Add-on preferences: which Python runs the engine (with "Set up engine"), model, device, output folder.

Also resolves those settings for the operators and the batch runner (``settings()``), so a preference
left empty has one documented default everywhere.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import bpy

from . import engine_cli, engine_env, events, worker

PKG = __package__
DEFAULT_MODEL = "stabilityai/stable-diffusion-2-1-base"  # the engine's default (engine/config.py)

# Background tasks started from the preferences; module state, read by draw() and the timer.
SETUP: engine_env.EngineSetup | None = None
CHECK: worker.Worker | None = None


def user_folder() -> Path:
    """The add-on's writable folder: the extension's user directory, or (development checkout) a config subfolder."""
    try:
        path = Path(bpy.utils.extension_path_user(PKG, create=True))
    except ValueError:  # not installed as an extension (e.g. enabled from a repository checkout)
        path = Path(bpy.utils.user_resource("CONFIG")) / "dreamfusion"
    path.mkdir(parents=True, exist_ok=True)
    return path


def managed_venv() -> Path:
    return user_folder() / "engine-venv"


@dataclass
class Settings:
    python: str
    model: str
    device: str
    output_dir: str
    extra: tuple = ()  # engine flags from the "Extra engine settings" preference


def parse_extra(text: str) -> tuple:
    """'preview_every=50 iso=5' -> ('--set', 'preview_every=50', '--set', 'iso=5'); the engine validates them."""
    return tuple(x for item in (text or "").split() for x in ("--set", item))


def get_prefs():
    addon = bpy.context.preferences.addons.get(PKG)
    return addon.preferences if addon is not None else None


def settings() -> Settings:
    """Resolved settings. Interpreter order: $DREAMFUSION_PYTHON, the preference, the managed
    environment if it exists, else this interpreter (right for bpy-as-a-module; in Blender it lacks
    torch, and the engine's own error says so)."""
    p = get_prefs()
    python = os.environ.get("DREAMFUSION_PYTHON") or (p.python_path if p else "")
    if python:
        python = bpy.path.abspath(python)
    else:
        venv_py = engine_cli.venv_python(managed_venv())
        python = str(venv_py) if venv_py.is_file() else sys.executable
    out = bpy.path.abspath(p.output_dir) if p and p.output_dir else str(user_folder() / "runs")
    return Settings(python=python, model=(p.model if p else "") or DEFAULT_MODEL,
                    device=p.device.lower() if p else "auto", output_dir=out,
                    extra=parse_extra(p.extra_settings) if p else ())


def _redraw_prefs() -> None:
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "PREFERENCES":
                area.tag_redraw()


def _tick_background():
    """Timer: follow setup/check tasks; stops itself when both are idle."""
    busy = False
    if CHECK is not None:
        CHECK.poll()
        busy |= CHECK.running
    if SETUP is not None:
        busy |= SETUP.status.running
    try:
        _redraw_prefs()
    except (AttributeError, ReferenceError):
        pass
    return 0.5 if busy else None


class DREAMFUSION_OT_setup_engine(bpy.types.Operator):
    """Create a Python environment for the engine in the add-on's folder and install engine/requirements.txt"""

    bl_idname = "dreamfusion.setup_engine"
    bl_label = "Set up engine"

    def execute(self, context):
        global SETUP
        if SETUP is not None and SETUP.status.running:
            self.report({"WARNING"}, "the engine set-up is already running")
            return {"CANCELLED"}
        venv = managed_venv()
        SETUP = engine_env.EngineSetup(venv).start()
        bpy.app.timers.register(_tick_background, first_interval=0.5)
        self.report({"INFO"}, f"setting up the engine environment in {venv} (see the add-on preferences)")
        return {"FINISHED"}


class DREAMFUSION_OT_check_engine(bpy.types.Operator):
    """Run the engine's self-check (torch, CUDA, model) with the configured interpreter"""

    bl_idname = "dreamfusion.check_engine"
    bl_label = "Check engine"

    wait: bpy.props.BoolProperty(default=False, options={"SKIP_SAVE", "HIDDEN"})

    def execute(self, context):
        global CHECK
        s = settings()
        try:
            env = engine_cli.worker_env()
        except FileNotFoundError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        CHECK = worker.Worker(engine_cli.check_argv(s.python, s.model, s.device), env=env).start()
        if self.wait or bpy.app.background:  # timers do not run in background mode
            CHECK.wait(timeout=600)
            self.report(*check_report())
        else:
            bpy.app.timers.register(_tick_background, first_interval=0.5)
        return {"FINISHED"}


def check_report() -> tuple[set, str]:
    """(report type, message) for the last check."""
    if CHECK is None:
        return {"INFO"}, "not checked yet"
    st = CHECK.state
    if not st.exited:
        return {"INFO"}, "checking..."
    if st.check is not None:
        ok = st.check.get("ok")
        return ({"INFO"} if ok else {"WARNING"}), ("OK: " if ok else "PROBLEM: ") + engine_env.check_summary(st.check)
    return {"ERROR"}, st.message or events.describe_exit(st.returncode or 1)


class DreamFusionPreferences(bpy.types.AddonPreferences):
    bl_idname = PKG

    python_path: bpy.props.StringProperty(
        name="Engine Python", subtype="FILE_PATH",
        description="Python interpreter that runs the engine (needs torch). Empty: the environment made by 'Set up engine'",
    )
    model: bpy.props.StringProperty(
        name="Model", default=DEFAULT_MODEL,
        description="Diffusion model: a Hugging Face hub id, a local diffusers folder, or builtin:shapes (small, offline)",
    )
    device: bpy.props.EnumProperty(
        name="Device",
        items=[("AUTO", "Auto", "CUDA if available, else Apple MPS, else CPU"), ("CUDA", "CUDA", "NVIDIA GPU"),
               ("MPS", "MPS", "Apple GPU"), ("CPU", "CPU", "Very slow with real models")],
        default="AUTO",
    )
    output_dir: bpy.props.StringProperty(
        name="Output folder", subtype="DIR_PATH",
        description="Where run folders are written. Empty: 'runs' in the add-on's user folder",
    )

    extra_settings: bpy.props.StringProperty(
        name="Extra engine settings",
        description="Advanced: KEY=VALUE pairs separated by spaces, passed to the engine as --set (see engine/config.py)",
    )

    def draw(self, context):
        layout = self.layout
        s = settings()
        col = layout.column()
        col.prop(self, "python_path")
        col.label(text=f"Using: {s.python}", icon="CONSOLE")
        row = col.row(align=True)
        row.operator(DREAMFUSION_OT_setup_engine.bl_idname, icon="IMPORT")
        row.operator(DREAMFUSION_OT_check_engine.bl_idname, icon="CHECKMARK")
        if SETUP is not None:
            st = SETUP.status
            box = col.box()
            if st.running:
                box.progress(factor=st.fraction, type="BAR", text=f"step {st.step}/{st.steps}: {st.step_name}")
                box.label(text=st.last_line[-120:])
            else:
                box.label(text=st.message, icon="CHECKMARK" if st.ok else "ERROR")
        if CHECK is not None:
            kind, msg = check_report()
            col.box().label(text=msg[:200], icon="ERROR" if "ERROR" in kind else "INFO")
        layout.prop(self, "model")
        layout.prop(self, "device")
        layout.prop(self, "output_dir")
        layout.label(text=f"Runs go to: {s.output_dir}")
        layout.prop(self, "extra_settings")


classes = (DREAMFUSION_OT_setup_engine, DREAMFUSION_OT_check_engine, DreamFusionPreferences)
