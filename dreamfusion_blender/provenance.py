"""What gets stored on an imported object so a result can be traced back to its run (no bpy here)."""

from __future__ import annotations

import json
from pathlib import Path

PREFIX = "dreamfusion_"
FIELDS = ("prompt", "negative_prompt", "seed", "model", "preset", "steps", "guidance_scale")


def _engine_version(run_dir: Path) -> str | None:
    """The engine version from the run's last ``start`` event (config.json does not carry it)."""
    path = run_dir / "events.jsonl"
    version = None
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            if '"start"' in line:
                try:
                    version = json.loads(line).get("engine_version") or version
                except json.JSONDecodeError:
                    pass
    except OSError:
        pass
    return version


def collect(run_dir: str, state=None) -> dict:
    """Provenance from the run folder's config.json, the start event and the finished RunState."""
    run = Path(run_dir)
    try:
        config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        config = dict(getattr(state, "config", None) or {})
    out = {k: config.get(k) for k in FIELDS}
    out["engine_version"] = getattr(state, "engine_version", None) or _engine_version(run)
    out["run_folder"] = str(run.resolve())
    if state is not None and state.asset.get("glb"):
        out["asset"] = str(state.asset["glb"])
    # ID properties cannot hold None; an absent value is simply not stored.
    return {k: v for k, v in out.items() if v is not None}


def object_name(prompt: str, limit: int = 60) -> str:
    """Blender names are at most 63 bytes; keep whole characters and collapse whitespace."""
    name = " ".join((prompt or "DreamFusion").split()) or "DreamFusion"
    while len(name.encode("utf-8")) > limit:
        name = name[:-1]
    return name.rstrip()
