"""The run folder: one per job, never reused, holding everything to inspect, resume or re-export.

Checkpoints are written to a temporary file and renamed, so a crash, a kill or a full disk while
saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import datetime as _dt
import errno
import os
import re
from pathlib import Path

import torch

from .cancel import CANCEL
from .config import JobConfig
from .errors import ConfigError, DiskFull, RunFolderError

CONFIG = "config.json"
LOG = "log.txt"
EVENTS = "events.jsonl"
CHECKPOINT = Path("checkpoints") / "last.pt"


def slugify(prompt: str, max_len: int = 40) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")
    return (slug[:max_len].rstrip("-")) or "run"


def check_writable_parent(path: Path, flag: str = "--out") -> None:
    """Before any work: ``path`` (to be created, or an existing folder) must be writable, i.e. its
    nearest existing ancestor is a folder we may write in. Raises ConfigError naming the flag."""
    path = Path(path).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path} is a file, not a folder; choose a folder")
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{flag} {path} cannot be created: {probe} is a file, not a folder; choose another {flag}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: {probe} is not writable; choose a folder you can write to")


def create_run_dir(runs_root: Path, prompt: str) -> Path:
    """A fresh folder ``<slug>-<timestamp>[-n]``; existing folders are never touched."""
    runs_root = Path(runs_root).expanduser()
    check_writable_parent(runs_root)
    try:
        runs_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"cannot create the output folder {runs_root}: {exc.strerror}; choose a writable --out") from exc
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = f"{slugify(prompt)}-{stamp}"
    for n in range(1000):
        path = runs_root / (base if n == 0 else f"{base}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunFolderError(f"cannot create a run folder in {runs_root}: {exc.strerror}; choose a writable --out") from exc
        (path / "checkpoints").mkdir()
        (path / "previews").mkdir()
        return path
    raise RunFolderError(f"could not find a free run folder name under {runs_root}")


def load_run_config(run_dir: Path) -> JobConfig:
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise RunFolderError(f"{run_dir} is not a run folder: {CONFIG} is missing")
    import json

    try:
        data = json.loads((run_dir / CONFIG).read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        return JobConfig.from_json(data)
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"{run_dir / CONFIG} is unreadable: {exc}") from exc


def save_run_config(run_dir: Path, cfg: JobConfig) -> None:
    """Rewrite config.json atomically (a resume records what it changed)."""
    path = Path(run_dir) / CONFIG
    tmp = path.with_suffix(".tmp")
    cfg.save(tmp)
    os.replace(tmp, path)


def checkpoint_step(run_dir: Path) -> int | None:
    """The step of the run's checkpoint, or None if it has none or it is unreadable."""
    try:
        return int(load_checkpoint(run_dir)["step"])
    except (RunFolderError, KeyError, TypeError, ValueError):
        return None


def save_checkpoint(run_dir: Path, state: dict) -> Path:
    path = Path(run_dir) / CHECKPOINT
    tmp = path.with_suffix(".tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise DiskFull(
                f"the disk is full while saving a checkpoint in {run_dir}; the previous checkpoint is kept. "
                "Free some space and resume with --resume"
            ) from exc
        raise
    return path


def load_checkpoint(run_dir: Path, map_location="cpu") -> dict:
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise RunFolderError(f"no checkpoint in {run_dir} ({CHECKPOINT} is missing): nothing to resume or export")
    try:
        # weights_only: a checkpoint is data; loading it must never run code.
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise RunFolderError(f"the checkpoint {path} is unreadable ({type(exc).__name__}: {exc})") from exc


def clear_cancel(run_dir: Path) -> None:
    """Resuming means the user wants the run to go on: forget an earlier cancel request."""
    (Path(run_dir) / CANCEL).unlink(missing_ok=True)
