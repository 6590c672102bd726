"""Add-on preferences: which Python runs the engine (with "Set up engine"), model (with the model
manager), hub token, device, output folder.

Also resolves those settings for the operators and the batch runner (``settings()``), so a preference
left empty has one documented default everywhere, and builds the engine's environment
(``engine_environment()``): offline when Blender's "Allow Online Access" is off, the hub token only
through the environment (never on a command line, so never in a run folder, log or event).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import bpy

from . import engine_cli, engine_env, events, known_models, model_store, torch_choice, worker

PKG = __package__
DEFAULT_MODEL = known_models.default_model()  # the engine's default: engine/known_models.json

# Background tasks started from the preferences; module state, read by draw() and the timer.
SETUP: engine_env.EngineSetup | None = None
CHECK: worker.Worker | None = None
TORCH_PLAN: torch_choice.TorchPlan | None = None  # detected once (runs nvidia-smi), shown before set-up

OFFLINE_HELP = ("Blender's online access is off (Preferences > System > Network > Allow Online Access): "
                "no downloads. Needed to proceed: a model already on disk (a downloaded model, a local "
                "diffusers folder or builtin:shapes) and an engine Python that is already set up")


def online() -> bool:
    """Blender's "Allow Online Access" (4.2+); extensions must not touch the network when it is off."""
    return bool(getattr(bpy.app, "online_access", True))


def torch_plan() -> torch_choice.TorchPlan:
    global TORCH_PLAN
    if TORCH_PLAN is None:
        TORCH_PLAN = torch_choice.detect()
    return TORCH_PLAN


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


def models_dir() -> Path:
    """Where the model manager downloads to: the preference, else 'models' in the add-on's user folder."""
    p = get_prefs()
    return Path(bpy.path.abspath(p.models_dir)) if p and p.models_dir else user_folder() / "models"


def engine_environment(base: dict | None = None) -> dict:
    """The engine process's environment: worker_env, offline mode when online access is off, the token."""
    env = engine_cli.worker_env(base)
    p = get_prefs()
    if not online():
        env["HF_HUB_OFFLINE"] = "1"
        env["TRANSFORMERS_OFFLINE"] = "1"
    elif p is not None and p.hub_token.strip():
        env["HF_TOKEN"] = p.hub_token.strip()
    return env


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
    model = model_store.resolve((p.model if p else "") or DEFAULT_MODEL, models_dir())
    return Settings(python=python, model=model,
                    device=p.device.lower() if p else "auto", output_dir=out,
                    extra=parse_extra(p.extra_settings) if p else ())


def _redraw_prefs() -> None:
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "PREFERENCES":
                area.tag_redraw()


def _redraw_prefs_safe() -> None:
    try:
        _redraw_prefs()
    except (AttributeError, ReferenceError):
        pass


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
        if not online():
            self.report({"ERROR"}, "Set up engine needs to download packages. " + OFFLINE_HELP)
            return {"CANCELLED"}
        venv, plan = managed_venv(), torch_plan()
        SETUP = engine_env.EngineSetup(venv, torch_plan=plan).start()
        bpy.app.timers.register(_tick_background, first_interval=0.5)
        self.report({"WARNING" if plan.warning else "INFO"},
                    f"installing {plan.summary} (about {plan.download_gb:.1f} GB) into {venv}"
                    + (f". {plan.warning}" if plan.warning else ""))
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
            env = engine_environment()
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


def _get_model_choice(self) -> int:
    return known_models.choice_index(self.model, self.model_custom)


def _set_model_choice(self, index: int) -> None:
    ident = known_models.enum_items()[index][0]
    self.model_custom = ident == known_models.CUSTOM
    if not self.model_custom:  # a table entry or builtin:shapes; Custom keeps what is typed
        self.model = ident


class DreamFusionPreferences(bpy.types.AddonPreferences):
    bl_idname = PKG

    python_path: bpy.props.StringProperty(
        name="Engine Python", subtype="FILE_PATH",
        description="Python interpreter that runs the engine (needs torch). Empty: the environment made by 'Set up engine'",
    )
    model: bpy.props.StringProperty(
        name="Custom model", default=DEFAULT_MODEL,
        description="Diffusion model: a Hugging Face hub id, a local diffusers folder, or builtin:shapes (small, offline)",
    )
    # The Model list (engine/known_models.json); `model` above stays the one value everything reads.
    model_custom: bpy.props.BoolProperty(default=False, options={"HIDDEN"})
    model_choice: bpy.props.EnumProperty(
        name="Model", items=known_models.enum_items(), get=_get_model_choice, set=_set_model_choice,
        description="A model from the known-model table (size, gated, official or mirror), builtin:shapes, or Custom",
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
    hub_token: bpy.props.StringProperty(
        name="Hub token", subtype="PASSWORD",
        description="Hugging Face access token for gated or rate-limited models. Passed to the engine in its "
                    "environment only; never written to run folders, logs or events",
    )
    models_dir: bpy.props.StringProperty(
        name="Models folder", subtype="DIR_PATH",
        description="Where 'Download model' puts models. Empty: 'models' in the add-on's user folder",
    )

    def draw(self, context):
        layout = self.layout
        s = settings()
        if not online():
            layout.box().label(text=OFFLINE_HELP[:200], icon="INTERNET_OFFLINE")
        col = layout.column()
        col.prop(self, "python_path")
        col.label(text=f"Using: {s.python}", icon="CONSOLE")
        if SETUP is None or not SETUP.status.running:
            plan = torch_plan()
            col.label(text=f"Set up engine installs {plan.summary}, about {plan.download_gb:.1f} GB", icon="INFO")
            if plan.warning:
                col.label(text=plan.warning[:200], icon="ERROR")
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
        _draw_models(self, layout)
        layout.prop(self, "device")
        layout.prop(self, "output_dir")
        layout.label(text=f"Runs go to: {s.output_dir}")
        layout.prop(self, "extra_settings")

def _draw_models(self, layout):
    """The model manager: the model, its download (progress and size), the token, the local models."""
    from .jobs import MANAGER

    box = layout.box()
    box.prop(self, "model_choice")
    if self.model_choice == known_models.CUSTOM:
        box.prop(self, "model")
    known = known_models.entry(self.model)
    if known is not None and known["status"] == "present":
        box.label(text=known_models.summary(known, model_store.downloaded_path(models_dir(), self.model) is not None),
                  icon="INFO")
    row = box.row(align=True)
    row.prop(self, "hub_token")
    row.prop(self, "models_dir")
    job = MANAGER.current
    if job is not None and job.kind == "download" and job.running:
        st = job.state
        box.progress(factor=st.fraction, type="BAR",
                     text=f"downloading {job.label}: {st.step}/{st.total} MB" if st.total else f"downloading {job.label}...")
        box.operator("dreamfusion.cancel", icon="CANCEL")
    elif model_store.is_hub_id(self.model):
        local = model_store.downloaded_path(models_dir(), self.model)
        if local is not None:
            box.label(text=f"downloaded: {local}", icon="CHECKMARK")
        elif online():
            box.operator("dreamfusion.download_model", icon="IMPORT")
        else:
            box.label(text="not downloaded, and online access is off", icon="ERROR")
    elif job is not None and job.kind == "download" and job.state.message:
        box.label(text=job.state.message[:200], icon="INFO")
    for m in model_store.local_models(models_dir()):
        row = box.row()
        row.label(text=f"{m.name}{'' if m.complete else ' (incomplete)'}", icon="FILE_3D")
        row.label(text=m.size_text)
        op = row.operator("dreamfusion.delete_model", text="", icon="TRASH")
        op.path = str(m.path)


class DREAMFUSION_OT_delete_model(bpy.types.Operator):
    """Delete this downloaded model from disk"""

    bl_idname = "dreamfusion.delete_model"
    bl_label = "Delete model"

    path: bpy.props.StringProperty(options={"SKIP_SAVE"})

    def invoke(self, context, event):
        return context.window_manager.invoke_confirm(self, event)

    def execute(self, context):
        from .jobs import MANAGER

        if MANAGER.busy:  # the running job may be reading (or writing) this very folder
            self.report({"ERROR"}, f"a {MANAGER.current.kind} job is running; delete the model when it has finished")
            return {"CANCELLED"}
        try:
            model_store.delete(models_dir(), Path(self.path))
        except (ValueError, OSError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"deleted {self.path}")
        return {"FINISHED"}


classes = (DREAMFUSION_OT_setup_engine, DREAMFUSION_OT_check_engine, DREAMFUSION_OT_delete_model,
           DreamFusionPreferences)
