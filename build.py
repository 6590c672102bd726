#!/usr/bin/env python3
"""Build the installable Blender extension zip: dist/dreamfusion-<version>.zip.

What it does, in order:
  1. reads addon_manifest.toml (the one source of the extension's metadata) and checks the fields
     Blender requires (schema 1.0.0, id, version, Blender 4.2+, license, permissions with reasons);
  2. writes a zip whose root is the add-on package: __init__.py, blender_manifest.toml (a copy of
     addon_manifest.toml), the add-on modules from dreamfusion_blender/, and the engine source as
     engine/ (no __pycache__, no training caches; engine/priors/shapes/ weights when present);
  3. validates the zip: layout and manifest; Blender's own validator (bl_pkg's blender_ext.py
     validate) when bpy is importable; and, unless --no-install-check, installs and enables it
     with bpy.ops.extensions.package_install_files in a throw-away Blender user folder
     (a subprocess with BLENDER_USER_RESOURCES set), checking the operators register.

Only the standard library is needed for steps 1-2; step 3 uses bpy (Blender as a module) if found.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
ADDON_DIR = ROOT / "dreamfusion_blender"
ENGINE_DIR = ROOT / "engine"
MANIFEST = ROOT / "addon_manifest.toml"

EXCLUDE_ANYWHERE = ["__pycache__", "*.pyc", "*.pyo", ".DS_Store", "*.tmp", "*.swp", ".pytest_cache"]
# engine/priors holds the training code of the builtin prior; its data caches and training
# checkpoints are not part of the product. Only the finished model folders (weights + configs) ship.
PRIOR_WEIGHT_SUFFIXES = {".safetensors", ".json", ".txt", ".md"}
REQUIRED = ["schema_version", "id", "version", "name", "tagline", "maintainer", "type", "blender_version_min", "license"]
MIN_BLENDER = (4, 2, 0)
INSTALL_TIMEOUT_S = 300


class BuildError(Exception):
    pass


def _version_tuple(text: str) -> tuple:
    return tuple(int(x) for x in text.split("."))


def load_manifest(path: Path = MANIFEST) -> dict:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BuildError(f"{path}: {exc}") from exc
    check_manifest(data)
    return data


def check_manifest(m: dict) -> None:
    missing = [k for k in REQUIRED if not m.get(k)]
    if missing:
        raise BuildError(f"manifest: missing required field(s): {', '.join(missing)}")
    problems = []
    if m["schema_version"] != "1.0.0":
        problems.append(f"schema_version must be \"1.0.0\", got {m['schema_version']!r}")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", m["id"]):
        problems.append(f"id {m['id']!r} must be a Python identifier")
    if not re.fullmatch(r"\d+\.\d+\.\d+", m["version"]):
        problems.append(f"version {m['version']!r} must be semantic (X.Y.Z)")
    if m["type"] != "add-on":
        problems.append("type must be \"add-on\"")
    try:
        if _version_tuple(m["blender_version_min"]) < MIN_BLENDER:
            problems.append("blender_version_min must be 4.2.0 or later (extensions need 4.2)")
    except ValueError:
        problems.append(f"blender_version_min {m['blender_version_min']!r} is not X.Y.Z")
    if len(m["tagline"]) > 64 or m["tagline"][-1] in ".!?,;:":
        problems.append("tagline: at most 64 characters, no trailing punctuation")
    if not isinstance(m["license"], list) or not all(str(x).startswith("SPDX:") for x in m["license"]):
        problems.append("license must be a list of \"SPDX:...\" identifiers")
    perms = m.get("permissions") or {}
    for key in ("files", "network"):
        if not str(perms.get(key, "")).strip():
            problems.append(f"permissions.{key} needs a reason (the add-on writes files; the engine downloads models)")
        elif len(str(perms[key])) > 64 or str(perms[key]).rstrip()[-1] in ".!?":
            problems.append(f"permissions.{key}: at most 64 characters, no trailing punctuation (Blender's rule)")
    if problems:
        raise BuildError("manifest: " + "; ".join(problems))


def _excluded(rel: Path) -> bool:
    return any(fnmatch.fnmatch(part, pat) for part in rel.parts for pat in EXCLUDE_ANYWHERE)


def _engine_file_wanted(rel: Path) -> bool:
    """rel is relative to engine/. Source everywhere; under priors/ only code and shipped model folders."""
    if rel.parts[0] != "priors":
        return True
    if len(rel.parts) == 2:  # engine/priors/*.py: the prior's code
        return rel.suffix == ".py"
    return rel.suffix in PRIOR_WEIGHT_SUFFIXES and "cache" not in rel.as_posix().lower()


def collect_files() -> list[tuple[Path, str]]:
    """(source path, name inside the zip) for every file that ships."""
    if not (ADDON_DIR / "__init__.py").is_file():
        raise BuildError(f"{ADDON_DIR}/__init__.py is missing")
    if not (ENGINE_DIR / "__main__.py").is_file():
        raise BuildError(f"{ENGINE_DIR}/__main__.py is missing")
    files = []
    for path in sorted(ADDON_DIR.rglob("*")):
        rel = path.relative_to(ADDON_DIR)
        if path.is_file() and not _excluded(rel) and rel.parts[0] not in ("engine", "blender_manifest.toml"):
            files.append((path, rel.as_posix()))
    for path in sorted(ENGINE_DIR.rglob("*")):
        rel = path.relative_to(ENGINE_DIR)
        if path.is_file() and not _excluded(rel) and _engine_file_wanted(rel):
            files.append((path, "engine/" + rel.as_posix()))
    return files


def build(out_dir: Path) -> Path:
    manifest = load_manifest()
    out_dir.mkdir(parents=True, exist_ok=True)
    zip_path = out_dir / f"{manifest['id']}-{manifest['version']}.zip"
    header = "# Generated by build.py from addon_manifest.toml; edit that file, not this one.\n"
    tmp = zip_path.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("blender_manifest.toml", header + MANIFEST.read_text(encoding="utf-8"))
        for src, name in collect_files():
            zf.write(src, name)
    os.replace(tmp, zip_path)
    return zip_path


def validate_zip(zip_path: Path) -> list[str]:
    """Layout and manifest checks that need nothing but the standard library. Returns what was checked."""
    with zipfile.ZipFile(zip_path) as zf:
        names = set(zf.namelist())
        bad = zf.testzip()
        if bad:
            raise BuildError(f"{zip_path}: corrupt member {bad}")
        for required in ("blender_manifest.toml", "__init__.py", "engine/__init__.py", "engine/__main__.py",
                         "engine/requirements.txt"):
            if required not in names:
                raise BuildError(f"{zip_path}: {required} missing from the zip root")
        junk = [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".npz", ".tmp"))]
        if junk:
            raise BuildError(f"{zip_path}: build junk in the zip: {junk[:5]}")
        if any(n.startswith("dreamfusion_blender/") for n in names):
            raise BuildError(f"{zip_path}: the add-on must be at the zip root, not in a subfolder")
        check_manifest(tomllib.loads(zf.read("blender_manifest.toml").decode("utf-8")))
        init = zf.read("__init__.py").decode("utf-8")
        if "def register" not in init or "def unregister" not in init:
            raise BuildError(f"{zip_path}: __init__.py defines no register()/unregister()")
    return ["zip layout", "manifest fields"]


def _bpy_available() -> bool:
    return importlib.util.find_spec("bpy") is not None


def blender_validate(zip_path: Path) -> str:
    """Blender's own manifest/package validator (the code behind `blender -c extension validate`)."""
    import bpy  # noqa: F401  (only to find Blender's scripts folder)

    spec = importlib.util.find_spec("bpy")
    candidates = list(Path(spec.origin).parent.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    if not candidates:
        raise BuildError("Blender's extension validator (bl_pkg/cli/blender_ext.py) was not found next to bpy")
    proc = subprocess.run([sys.executable, str(candidates[0]), "validate", str(zip_path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"Blender's validator rejected {zip_path}:\n{proc.stdout}{proc.stderr}")
    return proc.stdout.strip()


INSTALL_CHECK = r"""
import json, sys
import bpy, addon_utils
zip_path, ext_id = sys.argv[-2], sys.argv[-1]
res = bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
module = "bl_ext.user_default." + ext_id
mod = sys.modules.get(module)
from importlib import import_module
engine_cli = import_module(module + ".engine_cli")
out = {
    "result": sorted(res),
    "enabled": module in bpy.context.preferences.addons,
    "operators": all(hasattr(bpy.ops.dreamfusion, n) for n in ("generate", "cancel", "resume", "reexport", "setup_engine", "check_engine")),
    "panel": hasattr(bpy.types, "VIEW3D_PT_dreamfusion"),
    "scene_props": hasattr(bpy.context.scene, "dreamfusion"),
    "engine_root": str(engine_cli.engine_root()),
    "addon_dir": str(engine_cli.PACKAGE_DIR),
    "known_default": import_module(module + ".known_models").default_model(),  # the bundled model table, read
}
addon_utils.disable(module, default_set=True)
out["disabled_clean"] = not hasattr(bpy.types, "VIEW3D_PT_dreamfusion")
print("INSTALL_CHECK " + json.dumps(out))
"""


def install_check(zip_path: Path, ext_id: str) -> dict:
    """Install + enable in a fresh Blender user folder (subprocess: bpy state is per process)."""
    with tempfile.TemporaryDirectory(prefix="dreamfusion-install-") as tmp:
        env = dict(os.environ, BLENDER_USER_RESOURCES=tmp)
        proc = subprocess.run([sys.executable, "-c", INSTALL_CHECK, str(zip_path.resolve()), ext_id],
                              capture_output=True, text=True, env=env, timeout=INSTALL_TIMEOUT_S, cwd=tmp)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("INSTALL_CHECK ")]
        if proc.returncode != 0 or not lines:
            raise BuildError(f"installing {zip_path} in Blender failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        info = json.loads(lines[-1][len("INSTALL_CHECK "):])
        ok = (info["result"] == ["FINISHED"] and info["enabled"] and info["operators"] and info["panel"]
              and info["scene_props"] and info["engine_root"] == info["addon_dir"] and info["disabled_clean"]
              and info["known_default"] == json.loads((ROOT / "engine" / "known_models.json").read_text())["default"])
        if not ok:
            raise BuildError(f"the installed extension is incomplete: {info}")
        return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n", 1)[1].split("Only the standard")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="output folder (default: dist/)")
    parser.add_argument("--no-validate", action="store_true", help="only build the zip")
    parser.add_argument("--no-install-check", action="store_true",
                        help="skip installing the zip into a throw-away Blender user folder (needs bpy)")
    parser.add_argument("--list", action="store_true", help="print the files that would ship and exit")
    args = parser.parse_args(argv)
    try:
        if args.list:
            load_manifest()
            for _, name in collect_files():
                print(name)
            return 0
        zip_path = build(args.out)
        print(f"built {zip_path} ({zip_path.stat().st_size / 1e6:.2f} MB)")
        if args.no_validate:
            return 0
        print("ok: " + ", ".join(validate_zip(zip_path)))
        if not _bpy_available():
            print("skipped: Blender's validator and the install check (bpy is not importable here)")
            return 0
        print("ok: Blender's validator: " + blender_validate(zip_path).splitlines()[-1])
        if not args.no_install_check:
            info = install_check(zip_path, load_manifest()["id"])
            print(f"ok: installs and enables in Blender (package_install_files): engine bundled at {info['engine_root']}")
        return 0
    except BuildError as exc:
        print(f"build.py: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
