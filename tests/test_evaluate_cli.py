"""`python -m engine evaluate`: the real CLIP loader on a tiny random CLIP, the protocol's renders,
bad input refused before any work with nothing written into the run folders (docs/EVALUATION.md)."""

import json
from pathlib import Path

import pytest
import torch

from engine import cli, runfolder
from engine.config import build_config
from engine.train import build_field
from tests.tiny_models import make_tiny_clip

CAPTIONS = ["a red cube", "a blue sphere", "a green cylinder"]


def make_run(root, prompt, seed=0):
    """A run folder with an untrained field's checkpoint: enough to render (no training needed)."""
    cfg = build_config("draft", prompt=prompt, model="builtin:shapes", seed=seed)
    run = runfolder.create_run_dir(root, prompt)
    cfg.save(run / runfolder.CONFIG)
    torch.manual_seed(seed)
    field, _ = build_field(cfg)
    runfolder.save_checkpoint(run, {"field": field.state_dict(), "step": 1})
    return run


def snapshot(folder):
    return sorted((p.relative_to(folder).as_posix(), p.stat().st_mtime_ns) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    runs = [make_run(root / "runs", c) for c in CAPTIONS]
    clip = make_tiny_clip(root / "clip")
    prompts = root / "captions.txt"
    prompts.write_text("# test set\n" + "\n".join(CAPTIONS) + "\n")
    return root, runs, clip, prompts


def run_cli(argv):
    return cli.main(["evaluate", *argv])


def test_evaluates_two_clips_both_modes_and_writes_only_the_json(setup, capsys):
    root, runs, clip, prompts = setup
    before = [snapshot(r) for r in runs]
    out = root / "report.json"
    code = run_cli([*map(str, runs), "--clip", str(clip), "--clip", str(clip), "--prompts", str(prompts),
                    "--views", "2", "--resolution", "16", "--device", "cpu", "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert [(r["mode"], r["runs"], r["captions"]) for r in report["results"]] == [
        ("textured", 3, 3), ("textureless", 3, 3)] * 2
    for r in report["results"]:
        assert r["hits"] == sum(p["hit"] for p in r["per_run"])
        assert 0 <= r["ci_low"] <= r["value"] <= r["ci_high"] <= 1
    # The same judge twice gives the same numbers: the renders are deterministic.
    assert report["results"][0]["per_run"] == report["results"][2]["per_run"]
    assert "| textureless |" in capsys.readouterr().out
    assert [snapshot(r) for r in runs] == before


def test_prior_judge_scores_every_caption(setup):
    root, runs, clip, prompts = setup
    out = root / "prior.json"
    assert cli.main(["evaluate", *map(str, runs[:2]), "--prior", "builtin:shapes", "--prompts", str(prompts), "--views", "1",
                     "--modes", "textureless", "--device", "cpu", "--json", str(out)]) == 0
    (r,) = json.loads(out.read_text())["results"]
    assert (r["judge"], r["mode"], r["runs"], r["captions"], r["resolution"]) == ("prior", "textureless", 2, 3, 32)
    assert r["paper"] is None


def test_clip_similarity_matches_transformers_reference(setup):
    root, runs, clip, prompts = setup
    from transformers import CLIPModel, CLIPTokenizer

    from engine.clip_judge import ClipJudge

    judge = ClipJudge(str(clip), torch.device("cpu"))
    images = torch.rand(2, 3, 32, 32)
    ours = judge.similarity(images, judge.text_embeddings(CAPTIONS))
    model, tok = CLIPModel.from_pretrained(clip), CLIPTokenizer.from_pretrained(clip)
    with torch.no_grad():
        out = model(**tok(CAPTIONS, padding=True, return_tensors="pt"), pixel_values=(images - judge.mean) / judge.std)
    ref = torch.nn.functional.normalize(out.image_embeds, dim=-1) @ torch.nn.functional.normalize(out.text_embeds, dim=-1).T
    assert torch.allclose(ours, ref.mean(0), atol=1e-5)


def test_views_differ_by_mode(setup):
    from engine.eval_views import render_views

    root, runs, clip, prompts = setup
    cfg = runfolder.load_run_config(runs[0])
    tex = render_views(runs[0], cfg, "textured", torch.device("cpu"), 2, 16)
    plain = render_views(runs[0], cfg, "textureless", torch.device("cpu"), 2, 16)
    assert tex.shape == plain.shape == (2, 3, 16, 16)
    assert not torch.allclose(tex, plain)


@pytest.mark.parametrize("case, match", [
    ("eval-no-checkpoint", "no trained field"),
    ("eval-blank-line", "line 2 is blank"),
    ("eval-duplicate-line", "line 3 repeats line 1"),
    ("eval-no-safetensors", "no .safetensors"),
    ("eval-bad-mode", "unknown render mode"),
    ("eval-prompt-not-in-set", "not in the caption set"),
])
def test_bad_input_is_refused_before_any_work(setup, tmp_path, capsys, case, match):
    root, runs, clip, prompts = setup
    run_dirs, prompt_file, clip_arg, extra = [str(runs[0])], str(prompts), str(clip), []
    if case == "eval-no-checkpoint":
        bare = make_run(tmp_path, "a red cube")
        (bare / runfolder.CHECKPOINT).unlink()
        run_dirs = [str(bare)]
    elif case in ("eval-blank-line", "eval-duplicate-line"):
        p = tmp_path / "p.txt"
        p.write_text("a red cube\n\na blue sphere\n" if case == "eval-blank-line" else "a red cube\na blue sphere\na red cube\n")
        prompt_file = str(p)
    elif case == "eval-no-safetensors":
        (tmp_path / "clip").mkdir()
        (tmp_path / "clip" / "config.json").write_text("{}")
        (tmp_path / "clip" / "pytorch_model.bin").write_bytes(b"")
        clip_arg = str(tmp_path / "clip")
    elif case == "eval-bad-mode":
        extra = ["--modes", "textured,wireframe"]
    elif case == "eval-prompt-not-in-set":
        run_dirs = [str(make_run(tmp_path, "a yellow cone"))]
    before = snapshot(tmp_path)
    out = tmp_path / "report.json"
    code = run_cli([*run_dirs, "--clip", clip_arg, "--prompts", prompt_file, "--device", "cpu", "--json", str(out), *extra])
    assert code in (2, 3), capsys.readouterr()  # ConfigError / RunFolderError: 2, ModelError: 3
    assert match in capsys.readouterr().err
    assert not out.exists()
    assert snapshot(tmp_path) == before
    assert f"`{case}`" in (Path(__file__).parents[1] / "docs" / "BAD_INPUTS.md").read_text(encoding="utf-8")
