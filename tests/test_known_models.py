"""The known-model table (engine/known_models.json) is the one source of hub ids (issue 27):

- it is well formed, every entry names its sources and the date checked, the default is present;
- its derived columns agree with the code: the recipe's guidance per family, and the preset that fits
  8 / 12 / 24 GB recomputed by the add-on's memory estimate;
- the engine and the add-on (which reads the file itself, never the engine package) see the same table,
  and the bundled extension ships it;
- no file outside the table names a removed id (owner/name or the model manager's owner--name folder),
  every hub-style id of a diffusion model in code, tests, scripts and docs is a present table entry, and
  the engine's and add-on's Python names none literally (they ask the table).
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dreamfusion_blender import known_models as addon_table  # noqa: E402
from dreamfusion_blender import memory_fit  # noqa: E402
from engine import models  # noqa: E402

TABLE_FILE = ROOT / "engine" / "known_models.json"
TEXT_SUFFIXES = {".py", ".md", ".sh", ".txt", ".toml", ".json", ".yml", ".yaml", ".cfg", ".ini", ".bat", ".ps1"}
# Hub organisations that host Stable Diffusion / IF copies (the table's own owners are added below), and
# names that only a diffusion model has: a string like these must be a present table entry.
MIRROR_OWNERS = {"Manojb", "benjamin-paine", "botp", "Comfy-Org", "sd-legacy", "CompVis", "lzyvegetable", "ckpt",
                 "AI-ModelScope"}
MODEL_NAME = re.compile(r"stable-diffusion|^sd[-_]?\d|^IF-I|taesd|sdxl", re.I)
CANDIDATE = re.compile(r"(?<![\w./-])([A-Za-z0-9][\w.-]*)/([A-Za-z0-9][\w.-]*[A-Za-z0-9])")


def _scanned_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    return [ROOT / f for f in listed if Path(f).suffix in TEXT_SUFFIXES and (ROOT / f).is_file()
            and ROOT / f != TABLE_FILE]


def test_table_is_valid_sourced_and_dated():
    table = models.load()
    assert models.entry(table["default"])["status"] == "present"
    for m in table["models"]:
        assert m["sources"] and m["checked"].startswith("2026-12-07"), m["id"]
        if m["status"] == "present" and m["role"] == "guidance":
            assert m["download_gb"] > 0.5 and m["native_resolution"] in (64, 512) and m["download_note"]
            assert isinstance(m["gated"], bool)
    assert models.entry("DeepFloyd/IF-I-XL-v1.0")["gated"] is True


@pytest.mark.parametrize("breakage", ["default-removed", "dangling-replacement", "no-sources", "bad-id", "duplicate"])
def test_a_malformed_table_is_refused(breakage):
    table = copy.deepcopy(models.load())
    removed = next(m for m in table["models"] if m["status"] == "removed")
    if breakage == "default-removed":
        table["default"] = removed["id"]
    elif breakage == "dangling-replacement":
        removed["replaced_by"] = "nobody/not-in-the-table"
    elif breakage == "no-sources":
        table["models"][0]["sources"] = []
    elif breakage == "bad-id":
        table["models"][0]["id"] = "not a hub id"
    else:
        table["models"].append(copy.deepcopy(table["models"][0]))
    with pytest.raises(models.TableError):
        models.validate(table)


def test_derived_columns_agree_with_the_code():
    from engine.guidance import DEFAULT_GUIDANCE

    for m in models.guidance_models():
        assert m["guidance_scale"] == DEFAULT_GUIDANCE[m["family"]], m["id"]
        for gb in models.GPU_SIZES:
            assert m["fits_preset"][gb] == memory_fit.preset_for(float(gb), m["id"]), (m["id"], gb)
    # The default fits the high preset on an 8 GB card; the SD 2.1 mirror's larger text encoder does not.
    assert memory_fit.estimate_gb("high", models.default_model()) == 7.6


def test_engine_and_addon_read_the_same_table_and_the_extension_ships_it():
    assert addon_table.load() == models.load() == json.loads(TABLE_FILE.read_text(encoding="utf-8"))
    assert addon_table.default_model() == models.default_model()
    import build

    assert ("engine/known_models.json" in {name for _, name in build.collect_files()})


def test_models_command_prints_the_table(capsys):
    from engine import cli

    assert cli.main(["models", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == models.load()
    assert cli.main(["models", "--default"]) == 0
    assert capsys.readouterr().out.strip() == models.default_model()
    assert cli.main(["models"]) == 0
    listing = capsys.readouterr().out
    assert all(m["id"] in listing for m in models.guidance_models()) and "REMOVED" not in listing


def test_no_removed_id_outside_the_table():
    removed = [m["id"] for m in models.load()["models"] if m["status"] == "removed"]
    # owner/name as typed, or owner--name as the model manager names its folder; case-insensitive like the hub
    forms = {r: re.compile("|".join(re.escape(f) + r"(?![\w.-])" for f in (r, r.replace("/", "--"))), re.I)
             for r in removed}
    hits = []
    for path in _scanned_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        hits += [f"{path.relative_to(ROOT)}: {r}" for r, pattern in forms.items() if pattern.search(text)]
    assert not hits, "removed model ids outside engine/known_models.json:\n" + "\n".join(hits)


def test_every_diffusion_hub_id_is_a_present_table_entry():
    table = models.load()["models"]
    present = {m["id"] for m in table if m["status"] == "present"}
    owners = MIRROR_OWNERS | {m["id"].split("/")[0] for m in table}
    unknown = []
    for path in _scanned_files():
        for match in CANDIDATE.finditer(path.read_text(encoding="utf-8", errors="replace")):
            owner, name = match.groups()
            if (owner in owners or MODEL_NAME.search(name)) and f"{owner}/{name}" not in present:
                unknown.append(f"{path.relative_to(ROOT)}: {owner}/{name}")
    assert not unknown, "hub ids not in engine/known_models.json as present:\n" + "\n".join(unknown)


def test_clip_judges_come_from_the_table_and_only_from_it():
    from engine.clip_judge import known_clip_models

    judges = models.load()["judges"]
    assert known_clip_models() == {j["short"]: j["id"] for j in judges} and {"B/32", "B/16", "L/14"} <= set(known_clip_models())
    owners = {j["id"].split("/")[0] for j in judges}
    outside = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in _scanned_files()
               for m in CANDIDATE.finditer(p.read_text(encoding="utf-8", errors="replace"))
               if m.group(1) in owners and "clip" in m.group(2).lower()]
    assert not outside, "CLIP ids outside engine/known_models.json:\n" + "\n".join(outside)


def test_engine_and_addon_code_take_ids_from_the_table():
    ids = [m["id"] for m in models.load()["models"]]
    literal = [f"{p.relative_to(ROOT)}: {i}" for folder in ("engine", "dreamfusion_blender")
               for p in (ROOT / folder).rglob("*.py") for i in ids
               if re.search(re.escape(i) + r"(?![\w.-])", p.read_text(encoding="utf-8"))]
    assert not literal, literal


def test_models_doc_shows_the_table():
    doc = (ROOT / "docs" / "MODELS.md").read_text(encoding="utf-8")
    block = doc.split("<!-- table:known-models -->\n", 1)[1].split("\n<!-- /table:known-models -->", 1)[0]
    assert block == models.markdown_table(), "docs/MODELS.md's table is stale: regenerate it (see that page)"
    assert f"The default is `{models.default_model()}`" in doc
