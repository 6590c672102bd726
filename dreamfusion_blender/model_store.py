"""Models downloaded by the add-on's model manager: where they live, which exist, how big, deleting one.

No bpy here. ``python -m engine download`` (engine/download.py, run with the engine's Python, which has
huggingface_hub) writes each hub model into ``<models>/<owner>--<name>/`` as a plain diffusers folder
and marks it complete with ``dreamfusion-download.json``; a folder still being fetched ends in
``.partial`` (kept after a cancel or failure so the next try resumes). The add-on then passes the folder
to the engine instead of the hub id, so a downloaded model needs no hub access at all.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

MARKER = "dreamfusion-download.json"  # written last by engine/download.py
PARTIAL = ".partial"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # the engine's rule (engine/guidance.py)


def is_hub_id(name: str) -> bool:
    name = (name or "").strip()
    return bool(_HUB_ID.match(name)) and not os.path.exists(os.path.expanduser(name))


def folder_name(repo_id: str) -> str:
    return repo_id.strip().replace("/", "--")


@dataclass
class LocalModel:
    name: str  # the hub id
    path: Path
    size_bytes: int
    complete: bool

    @property
    def size_text(self) -> str:
        return format_size(self.size_bytes)


def format_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit in ("B", "KB") else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def folder_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def downloaded_path(models_dir: Path, repo_id: str) -> Path | None:
    """The complete local copy of ``repo_id``, if the model manager has one."""
    path = Path(models_dir) / folder_name(repo_id)
    return path if (path / MARKER).is_file() else None


def resolve(model: str, models_dir: Path) -> str:
    """What to pass to the engine: a downloaded copy's folder for a hub id that has one, else ``model``."""
    if is_hub_id(model):
        local = downloaded_path(models_dir, model.strip())
        if local is not None:
            return str(local)
    return model


def local_models(models_dir: Path) -> list[LocalModel]:
    out = []
    root = Path(models_dir)
    if not root.is_dir():
        return out
    for path in sorted(root.iterdir()):
        if not path.is_dir():
            continue
        complete = (path / MARKER).is_file()
        base = path.name[: -len(PARTIAL)] if path.name.endswith(PARTIAL) else path.name
        name = base.replace("--", "/", 1)
        if complete:
            try:
                name = json.loads((path / MARKER).read_text(encoding="utf-8")).get("repo_id", name)
            except (OSError, json.JSONDecodeError):
                pass
        elif not path.name.endswith(PARTIAL):
            continue  # not ours: never listed, never deleted
        out.append(LocalModel(name=name, path=path, size_bytes=folder_size(path), complete=complete))
    return out


def delete(models_dir: Path, path: Path) -> None:
    """Delete one model folder the manager made (complete or partial); anything else is refused."""
    root, path = Path(models_dir).resolve(), Path(path).resolve()
    ours = (path / MARKER).is_file() or path.name.endswith(PARTIAL)
    if path.parent != root or not ours:
        raise ValueError(f"{path} is not a model downloaded by DreamFusion into {root}; not deleted")
    shutil.rmtree(path)


def download_argv(python: str, repo_id: str, models_dir: Path, revision: str | None = None) -> list[str]:
    argv = [str(python), "-m", "engine", "download", repo_id.strip(), "--out", str(models_dir)]
    if revision:
        argv += ["--revision", revision]
    return argv + ["--json-events", "--no-progress"]
