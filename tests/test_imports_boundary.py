"""The two-process contract: the add-on never imports torch, the engine never imports bpy (AST scan),
and the add-on's protocol/process modules import without Blender at all."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BPY_FREE = ["events", "worker", "jobs", "engine_cli", "engine_env", "provenance"]


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in ("import_module", "__import__"):
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                roots.add(node.args[0].value.split(".")[0])
    return roots


def _py_files(folder: str):
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, f"no Python files under {folder}/"
    return files


def test_addon_never_imports_torch():
    offenders = [str(p) for p in _py_files("dreamfusion_blender") if _imported_roots(p) & {"torch", "diffusers", "transformers"}]
    assert not offenders, f"these add-on files import torch/diffusers/transformers: {offenders}"


def test_engine_never_imports_bpy():
    offenders = [str(p) for p in _py_files("engine") if _imported_roots(p) & {"bpy", "bmesh", "mathutils", "addon_utils"}]
    assert not offenders, f"these engine files import Blender modules: {offenders}"


def test_protocol_modules_are_bpy_free():
    for name in BPY_FREE:
        assert "bpy" not in _imported_roots(ROOT / "dreamfusion_blender" / f"{name}.py"), name
    code = ("import sys; " + "; ".join(f"import dreamfusion_blender.{n}" for n in BPY_FREE)
            + "; assert 'bpy' not in sys.modules, 'bpy was imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
