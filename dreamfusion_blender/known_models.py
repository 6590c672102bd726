"""The known-model table for the add-on: the engine's engine/known_models.json, read as data.

No bpy, and never the engine package (the add-on does not import it): the file is found next to the
engine source the add-on runs (engine_cli.engine_root(): bundled in the extension by build.py, or the
development checkout). The Model list in the preferences and the memory-fit advice both come from here.
"""

from __future__ import annotations

import json
from functools import lru_cache

from . import engine_cli

CUSTOM = "CUSTOM"  # the drop-down's last item: the typed-in id / folder / builtin:shapes
BUILTIN = "builtin:shapes"


@lru_cache(maxsize=1)
def load() -> dict:
    path = engine_cli.engine_root() / "engine" / "known_models.json"
    return json.loads(path.read_text(encoding="utf-8"))


def default_model() -> str:
    return load()["default"]


def entry(model_id: str) -> dict | None:
    key = (model_id or "").strip().lower()
    return next((m for m in load()["models"] if m["id"].lower() == key), None)


def guidance_models() -> list[dict]:
    return [m for m in load()["models"] if m["status"] == "present" and m["role"] == "guidance"]


def format_gb(gb: float) -> str:
    return f"{gb * 1000:.0f} MB" if gb < 1 else f"{gb:.1f} GB"


def summary(m: dict, downloaded: bool | None = None) -> str:
    """'official · 18.1 GB · gated (licence + token) · downloaded' for the preferences."""
    bits = [m["provenance"], format_gb(m["download_gb"])]
    bits.append("gated (licence + token)" if m["gated"] else "not gated")
    if downloaded is not None:
        bits.append("downloaded" if downloaded else "not downloaded")
    return " · ".join(bits)


def enum_items() -> list[tuple[str, str, str]]:
    """EnumProperty items: one per present guidance model (identifier = hub id), then builtin and custom."""
    # The label carries size, gated and official/mirror, so the open list already compares them.
    items = [(m["id"], f"{m['label']} ({m['provenance']}, {format_gb(m['download_gb'])}{', gated' if m['gated'] else ''})",
              f"{m['id']}: {summary(m)}. {m['provenance_note']}") for m in guidance_models()]
    items.append((BUILTIN, "Builtin shapes (offline)", "The project's small bundled prior: five shapes in four colours"))
    items.append((CUSTOM, "Custom...", "Another hub id or a local diffusers folder, typed below"))
    return items


def choice_for(model: str) -> str:
    """Which drop-down item a model string corresponds to."""
    m = entry(model)
    if m is not None and m["status"] == "present" and m["role"] == "guidance":
        return m["id"]
    return BUILTIN if (model or "").strip() == BUILTIN else CUSTOM


def choice_index(model: str, custom: bool) -> int:
    """The drop-down's item index for the typed model (EnumProperty get): Custom while the user chose it."""
    ids = [i[0] for i in enum_items()]
    return ids.index(CUSTOM if custom else choice_for(model))
