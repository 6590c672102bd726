"""build.py: the manifest is checked, the zip has the extension layout, and it installs and enables
in Blender (bpy.ops.extensions.package_install_files into a throw-away user folder)."""

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import build  # noqa: E402


def test_build_zip_validates_and_installs(tmp_path):
    proc = subprocess.run([sys.executable, "build.py", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Blender's validator" in proc.stdout and "installs and enables" in proc.stdout
    zips = list(tmp_path.glob("dreamfusion-*.zip"))
    assert len(zips) == 1
    with zipfile.ZipFile(zips[0]) as zf:
        names = set(zf.namelist())
        manifest = tomllib.loads(zf.read("blender_manifest.toml").decode())
    assert {"__init__.py", "blender_manifest.toml", "worker.py", "engine/__main__.py", "engine/requirements.txt"} <= names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert not any(n.startswith(("dreamfusion_blender/", "tests/")) for n in names)
    assert manifest == tomllib.loads((ROOT / "addon_manifest.toml").read_text())  # one source of metadata
    assert manifest["schema_version"] == "1.0.0" and manifest["blender_version_min"] >= "4.2.0"
    assert set(manifest["permissions"]) >= {"files", "network"}
    shapes = ROOT / "engine" / "priors" / "shapes"
    if shapes.is_dir():  # the builtin prior ships when it has been trained
        weights = [p for p in shapes.rglob("*.safetensors")]
        assert all(f"engine/{p.relative_to(ROOT / 'engine').as_posix()}" in names for p in weights)


def test_manifest_checks_catch_mistakes():
    good = tomllib.loads((ROOT / "addon_manifest.toml").read_text())
    build.check_manifest(good)
    for key, value, needle in [("blender_version_min", "4.1.0", "4.2.0"), ("schema_version", "2", "schema_version"),
                               ("permissions", {"files": "x"}, "network"), ("version", "1.0", "semantic")]:
        bad = dict(good, **{key: value})
        with pytest.raises(build.BuildError, match=needle):
            build.check_manifest(bad)
    with pytest.raises(build.BuildError, match="missing required"):
        build.check_manifest({k: v for k, v in good.items() if k != "license"})


def test_help_lists_what_it_does():
    out = subprocess.run([sys.executable, "build.py", "--help"], cwd=ROOT, capture_output=True, text=True).stdout
    assert "addon_manifest.toml" in out and "package_install_files" in out and "--no-install-check" in out
