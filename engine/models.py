"""The known-model table (engine/known_models.json): loading, validating, looking up, and the sentences
that name a removed model's replacement and the alternatives. ``python -m engine models [--json]``.

The table is data, not code, so that the add-on (which never imports the engine) reads the very same
file (dreamfusion_blender/known_models.py) and scripts can ask ``python -m engine models --default``.
No torch here: the CLI's model errors and the add-on's helpers must stay cheap.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

TABLE = Path(__file__).with_name("known_models.json")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # the engine's rule (guidance.py, download.py)
FAMILIES = ("latent", "pixel")
ROLES = ("guidance", "latent_encoder")
PROVENANCE = ("official", "mirror")
GPU_SIZES = ("8", "12", "24")
PRESENT_FIELDS = ("id", "label", "status", "role", "family", "provenance", "provenance_note", "gated", "download_gb",
                  "download_note", "native_resolution", "prediction_type", "guidance_scale", "memory_gib",
                  "fits_preset", "sources", "checked")
JUDGE_FIELDS = ("short", "id", "label", "provenance", "gated", "use", "sources", "checked")
REMOVED_FIELDS = ("id", "label", "status", "removed", "replaced_by", "replaced_note", "alternatives", "sources", "checked")


class TableError(ValueError):
    """The shipped table is malformed: a bug in this repository, caught by tests/test_known_models.py."""


def validate(table: dict) -> None:
    models = table.get("models")
    if not isinstance(models, list) or not models:
        raise TableError("known_models.json: 'models' must be a non-empty list")
    ids = [m.get("id") for m in models]
    if len(set(ids)) != len(ids):
        raise TableError(f"known_models.json: duplicate ids: {sorted({i for i in ids if ids.count(i) > 1})}")
    present = {m["id"] for m in models if m.get("status") == "present"}
    for m in models:
        mid = m.get("id")
        if not isinstance(mid, str) or not HUB_ID.match(mid):
            raise TableError(f"known_models.json: {mid!r} is not a hub id (owner/name)")
        status = m.get("status")
        need = {"present": PRESENT_FIELDS, "removed": REMOVED_FIELDS}.get(status)
        if need is None:
            raise TableError(f"known_models.json: {mid}: status must be present or removed, got {status!r}")
        missing = [k for k in need if k not in m]
        if missing:
            raise TableError(f"known_models.json: {mid}: missing {', '.join(missing)}")
        if not m["sources"] or not str(m["checked"]).startswith("20"):
            raise TableError(f"known_models.json: {mid}: every entry names its sources and the date they were checked")
        if status == "present":
            if m["role"] not in ROLES or m["family"] not in FAMILIES or m["provenance"] not in PROVENANCE:
                raise TableError(f"known_models.json: {mid}: role/family/provenance out of range")
            if m["role"] == "guidance":
                if m["prediction_type"] not in ("epsilon", "v_prediction") or not m["guidance_scale"]:
                    raise TableError(f"known_models.json: {mid}: a guidance model needs prediction_type and guidance_scale")
                if set(m["fits_preset"]) != set(GPU_SIZES) or set(m["memory_gib"]) != {"weights", "activations"}:
                    raise TableError(f"known_models.json: {mid}: memory_gib and fits_preset for 8/12/24 GB")
        else:
            refs = ([m["replaced_by"]] if m["replaced_by"] else []) + list(m["alternatives"])
            bad = [r for r in refs if r not in present and not r.startswith("builtin:")]
            if bad:
                raise TableError(f"known_models.json: {mid}: replaced_by/alternatives must be present entries: {bad}")
    for j in table.get("judges", []):
        missing = [k for k in JUDGE_FIELDS if k not in j]
        if missing or not HUB_ID.match(str(j.get("id"))) or not j.get("sources"):
            raise TableError(f"known_models.json: judge {j.get('id')!r}: needs {', '.join(JUDGE_FIELDS)} (a hub id, sources)")
    default = table.get("default")
    if default not in present or next(m for m in models if m["id"] == default)["role"] != "guidance":
        raise TableError(f"known_models.json: the default {default!r} must be a present guidance model")


@lru_cache(maxsize=1)
def load() -> dict:
    table = json.loads(TABLE.read_text(encoding="utf-8"))
    validate(table)
    return table


def clip_judges() -> dict[str, str]:
    """Short name (B/32, B/16, L/14) -> hub id of the CLIP models ``evaluate --clip`` knows."""
    return {j["short"]: j["id"] for j in load().get("judges", [])}


def default_model() -> str:
    return load()["default"]


def entry(model_id: str) -> dict | None:
    """The table's entry for a hub id (exact, or differing only in case as the hub ignores it)."""
    key = (model_id or "").strip().lower()
    return next((m for m in load()["models"] if m["id"].lower() == key), None)


def guidance_models() -> list[dict]:
    return [m for m in load()["models"] if m["status"] == "present" and m["role"] == "guidance"]


def latent_encoders() -> list[str]:
    """Hub ids of the tiny latent encoders the table knows (for examples in messages)."""
    return [m["id"] for m in load()["models"] if m["status"] == "present" and m["role"] == "latent_encoder"]


def describe(m: dict) -> str:
    """'id (mirror, 2.1 GB, default)' for lists in messages."""
    bits = [m["provenance"], format_gb(m["download_gb"])]
    if m.get("gated"):
        bits.append("gated: licence + token")
    if m["id"] == default_model():
        bits.append("default")
    return f"{m['id']} ({', '.join(bits)})"


def format_gb(gb: float) -> str:
    return f"{gb * 1000:.0f} MB" if gb < 1 else f"{gb:.1f} GB"


def alternatives_text(exclude: str = "") -> str:
    """The known models one could use instead of ``exclude``, and the offline prior."""
    others = [describe(m) for m in guidance_models() if m["id"].lower() != exclude.strip().lower()]
    return "known models: " + "; ".join(others + ["builtin:shapes (bundled, offline)"])


def removed_message(model_id: str) -> str | None:
    """For a removed id: what happened, what replaced it, the alternatives. None if not a removed entry."""
    m = entry(model_id)
    if m is None or m["status"] != "removed":
        return None
    text = f"{m['id']} no longer exists on the model hub: removed {m['removed']}."
    if m["replaced_by"]:
        text += f" Replaced by {describe(entry(m['replaced_by']))}: {m['replaced_note']}."
    else:
        text += f" {m['replaced_note'][0].upper()}{m['replaced_note'][1:]}."
    alts = [describe(entry(a)) if entry(a) else f"{a} (bundled, offline)" for a in m["alternatives"]]
    text += f" Alternatives: {'; '.join(alts)}."
    return text + " Choose one with --model (in Blender: the Model list); the engine never substitutes weights on its own"


def markdown_table() -> str:
    """The present entries as docs/MODELS.md shows them (a test keeps that block equal to this)."""
    rows = ["| id | family | official / mirror | gated | download (SDS files) | native px | prediction | guidance "
            "| preset for 8 / 12 / 24 GB | checked |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for m in load()["models"]:
        if m["status"] != "present":
            continue
        fits = " / ".join(m["fits_preset"][gb] or "none" for gb in GPU_SIZES) if m["fits_preset"] else "-"
        name = f"`{m['id']}`" + (" (default)" if m["id"] == default_model() else "")
        rows.append(f"| {name} | {m['family']}{'' if m['role'] == 'guidance' else ' encoder'} | {m['provenance']} "
                    f"| {'yes' if m['gated'] else 'no'} | {format_gb(m['download_gb'])} | {m['native_resolution']} "
                    f"| {m['prediction_type'] or '-'} | {m['guidance_scale'] or '-'} | {fits} | {m['checked']} |")
    return "\n".join(rows)


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list the known hub models (engine/known_models.json)")
    p.add_argument("--json", action="store_true", help="the whole table as JSON (what the add-on reads)")
    p.add_argument("--default", action="store_true", help="print only the default model's id")
    p.add_argument("--all", action="store_true", help="also list removed ids and the latent encoder")
    p.set_defaults(json_events=False)  # prints the table itself, never events


def cmd_models(args, events) -> int:
    table = load()
    if args.json:
        print(json.dumps(table, indent=2))
    elif args.default:
        print(table["default"])
    else:
        for m in table["models"]:
            if m["status"] == "removed":
                if args.all:
                    print(f"{m['id']}  REMOVED {m['removed']}; replaced by {m['replaced_by'] or '-'}; "
                          f"alternatives {', '.join(m['alternatives'])}")
                continue
            if m["role"] != "guidance" and not args.all:
                continue
            fits = ", ".join(f"{gb} GB: {m['fits_preset'][gb] or 'none'}" for gb in GPU_SIZES) if m["fits_preset"] else ""
            print(f"{describe(m)}  {m['family']}, {m['native_resolution']} px, {m['prediction_type'] or '-'}, "
                  f"guidance {m['guidance_scale'] or '-'}" + (f"; presets {fits}" if fits else ""))
        print("builtin:shapes (bundled, offline): the project's small prior, five shapes in four colours")
    return 0
