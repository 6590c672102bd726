"""How the add-on calls the engine: where its source is, the command lines, the environment.

No bpy here. The engine is run as ``<python> -m engine ...`` with PYTHONPATH pointing at the folder
that contains ``engine/``: inside the installed extension (build.py bundles it) or, in a development
checkout, the repository root next to this package.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def engine_root() -> Path:
    """The folder that contains the ``engine`` package (bundled copy first, then the dev checkout)."""
    for candidate in (PACKAGE_DIR, PACKAGE_DIR.parent):
        if (candidate / "engine" / "__main__.py").is_file():
            return candidate
    raise FileNotFoundError(
        f"the engine source is missing: expected {PACKAGE_DIR / 'engine'} (installed extension) "
        f"or {PACKAGE_DIR.parent / 'engine'} (development checkout); reinstall the extension"
    )


def requirements_file() -> Path:
    return engine_root() / "engine" / "requirements.txt"


def venv_python(venv_dir: Path) -> Path:
    """The interpreter inside a virtual environment, on this platform."""
    venv_dir = Path(venv_dir)
    if sys.platform == "win32":
        return venv_dir / "Scripts" / "python.exe"
    return venv_dir / "bin" / "python"


def worker_env(base: dict | None = None) -> dict:
    """The worker's environment: the engine importable, unbuffered output, Blender's Python paths removed."""
    env = dict(os.environ if base is None else base)
    root = str(engine_root())
    # Blender sets PYTHONHOME/PYTHONPATH for its own bundled Python; a different interpreter must not
    # inherit them, or it would import Blender's stdlib.
    env.pop("PYTHONHOME", None)
    env["PYTHONPATH"] = root
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


@dataclass
class GenerateRequest:
    """What the panel (or the batch runner) asks for. None / 0 means: the preset's default."""

    prompt: str
    out: str
    model: str | None = None
    preset: str = "standard"
    negative_prompt: str = ""
    seed: int | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    start_shape: str | None = None  # ball | ring | auto (engine config start_shape); None: the model's default
    texture_size: int | None = None
    mesh_resolution: int | None = None
    target_faces: int | None = None
    refine_steps: int | None = None  # mesh refinement steps (engine/refine.py); None / 0: the preset's (off)
    device: str | None = None
    extra: tuple = ()  # further engine flags, e.g. ("--set", "preview_every=10")


def _opt(argv: list, flag: str, value) -> None:
    # FLAG=VALUE, one argv item: a value that starts with "-" (a prompt "--help", a folder "-x") stays a
    # value; as two items argparse would read it as an option. User text is data, never an option.
    if value not in (None, "", 0):
        argv.append(f"{flag}={value}")


def generate_argv(python: str, req: GenerateRequest) -> list[str]:
    argv = [str(python), "-m", "engine", "generate", f"--prompt={req.prompt}", f"--out={req.out}"]
    return argv + asset_options(req) + ["--json-events", "--no-progress"]


def batch_argv(python: str, prompts_file: str, req: GenerateRequest, workers: int | None = None,
               ray: str | None = None) -> list[str]:
    """The engine's ``batch`` over a prompts file (docs/CLUSTER.md), with generate's options; req.prompt is unused."""
    argv = [str(python), "-m", "engine", "batch", f"--out={req.out}", *asset_options(req)]
    if workers is not None:  # 0 too: the engine refuses it with a clear message
        argv.append(f"--workers={workers}")
    _opt(argv, "--ray", ray)
    return argv + ["--json-events", "--no-progress", "--", str(prompts_file)]  # after "--": a path, never an option


def asset_options(req: GenerateRequest) -> list[str]:
    """The engine options that describe the asset and where it runs: the same for generate and batch."""
    argv = [f"--preset={req.preset}"]
    _opt(argv, "--model", req.model)
    _opt(argv, "--negative-prompt", req.negative_prompt)
    if req.seed is not None:  # 0 is a real seed
        argv.append(f"--seed={req.seed}")
    _opt(argv, "--steps", req.steps)
    if req.guidance_scale is not None and req.guidance_scale > 0:
        argv.append(f"--guidance-scale={req.guidance_scale}")
    _opt(argv, "--set", req.start_shape and f"start_shape={req.start_shape}")
    _opt(argv, "--texture-size", req.texture_size)
    _opt(argv, "--mesh-resolution", req.mesh_resolution)
    _opt(argv, "--target-faces", req.target_faces)
    _opt(argv, "--refine-steps", req.refine_steps)
    _opt(argv, "--device", req.device if req.device != "auto" else None)
    return argv + list(req.extra)


def resume_argv(python: str, run_dir: str, device: str | None = None) -> list[str]:
    argv = [str(python), "-m", "engine", "generate", f"--resume={run_dir}"]
    _opt(argv, "--device", device if device != "auto" else None)
    return argv + ["--json-events", "--no-progress"]


def export_argv(python: str, run_dir: str, mesh_resolution: int | None = None, texture_size: int | None = None,
                device: str | None = None, target_faces: int | None = None) -> list[str]:
    argv = [str(python), "-m", "engine", "export"]
    _opt(argv, "--mesh-resolution", mesh_resolution)
    _opt(argv, "--target-faces", target_faces)
    _opt(argv, "--texture-size", texture_size)
    _opt(argv, "--device", device if device != "auto" else None)
    return argv + ["--json-events", "--no-progress", "--", str(run_dir)]  # after "--": a path, never an option


def check_argv(python: str, model: str | None = None, device: str | None = None) -> list[str]:
    argv = [str(python), "-m", "engine", "check"]
    _opt(argv, "--model", model)
    _opt(argv, "--device", device)
    return argv + ["--json-events", "--no-progress"]
