"""The engine end to end through its CLI: run folder, previews, events, export, cancel/resume,
reproducibility, and a clear error (and nothing half-written) for each kind of bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine import cli
from engine.protocol import read_events

ROOT = Path(__file__).resolve().parent.parent
EXPORT_ARGS = ["--set", "iso=5"]  # a few steps leave the initial blob (peak density ~10): export below it


def engine_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "engine", *args]


def run_engine(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    return subprocess.run(engine_cmd(*args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def stdout_events(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def only_run_dir(out: Path) -> Path:
    dirs = [p for p in out.iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def test_generate_writes_a_complete_run_folder(tmp_path, tiny_pixel_model, fast_args):
    out = tmp_path / "runs"
    proc = run_engine("generate", "a red cube", "--out", str(out), "--model", str(tiny_pixel_model), "--seed", "3",
                      "--json-events", *fast_args, *EXPORT_ARGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = stdout_events(proc.stdout)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "progress" and "start" in kinds and kinds[-1] == "done"
    train = [e for e in events if e["event"] == "progress" and e["stage"] == "train"]
    assert train[-1]["step"] == train[-1]["total"] == 4 and all("eta_s" in e and "loss" in e for e in train)
    run = only_run_dir(out)
    assert run.name.startswith("a-red-cube-")
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["prompt"] == "a red cube" and cfg["seed"] == 3 and cfg["steps"] == 4
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "log.txt").read_text()
    previews = sorted((run / "previews").glob("step_*.png"))
    assert [p.name for p in previews] == ["step_000001.png", "step_000002.png", "step_000004.png"]
    from PIL import Image

    import numpy as np

    img = np.asarray(Image.open(previews[-1]), dtype=np.float32)
    assert img.shape[0] == img.shape[1]  # 2 views wide, 2 rows high: textured over textureless
    top, bottom = img[: img.shape[0] // 2], img[img.shape[0] // 2:]
    assert np.abs(top - bottom).mean() > 1.0  # the textureless row is not a copy of the textured one
    assert read_events(run / "events.jsonl")[-1]["event"] == "done"  # the file mirrors stdout
    done = events[-1]
    glb = Path(done["asset"]["glb"])
    assert glb.is_file() and glb.parent == run / "asset" and glb.stat().st_size > 1000
    assert not list(run.glob("*.partial"))


def test_export_command_reexports_without_overwriting(tmp_path, tiny_pixel_model, fast_args):
    out = tmp_path / "runs"
    proc = run_engine("generate", "a blue sphere", "--out", str(out), "--model", str(tiny_pixel_model), "--no-export",
                      *fast_args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run_dir(out)
    assert not (run / "asset").exists()
    first = run_engine("export", str(run), "--iso", "5", "--mesh-resolution", "40", "--texture-size", "64", "--obj", "--json-events", "--no-progress")
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_engine("export", str(run), "--iso", "4", "--mesh-resolution", "40", "--texture-size", "64", "--no-progress")
    assert second.returncode == 0, second.stderr[-3000:]
    assert (run / "asset" / "asset.glb").is_file() and (run / "asset" / "asset.obj").is_file()
    reexports = list(run.glob("export-*/asset.glb"))
    assert len(reexports) == 1
    # An empty field is refused with advice, and leaves nothing behind.
    bad = run_engine("export", str(run), "--iso", "500", "--mesh-resolution", "40", "--texture-size", "64", "--json-events", "--no-progress")
    assert bad.returncode == 5
    err = stdout_events(bad.stdout)[-1]
    assert err["event"] == "error" and err["kind"] == "export" and "iso" in err["message"]
    assert len(list(run.glob("export-*"))) == 1


def test_cancel_then_resume_continues_from_the_checkpoint(tmp_path, tiny_pixel_model, fast_args):
    out = tmp_path / "runs"
    args = [a for a in fast_args]
    args[args.index("--steps") + 1] = "200"
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(engine_cmd("generate", "a green cone", "--out", str(out), "--model", str(tiny_pixel_model),
                                       "--json-events", *args, *EXPORT_ARGS),
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    run_dir = None
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "start":
            run_dir = Path(event["run_dir"])
        if event["event"] == "progress" and event["stage"] == "train" and event["step"] >= 3:
            (run_dir / "CANCEL").touch()
            break
    rest = [json.loads(line) for line in proc.stdout]
    assert proc.wait(timeout=120) == 130
    cancelled = [e for e in rest if e["event"] == "cancelled"]
    assert len(cancelled) == 1
    step = cancelled[0]["step"]
    assert 3 <= step < 200
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == step
    assert not (run_dir / "asset").exists()

    resumed = run_engine("generate", "--resume", str(run_dir), "--steps", str(step + 2), "--json-events", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    events = stdout_events(resumed.stdout)
    start = next(e for e in events if e["event"] == "start")
    assert start["resumed_from"] == step
    train = [e["step"] for e in events if e["event"] == "progress" and e["stage"] == "train"]
    assert train[0] == step + 1 and train[-1] == step + 2
    assert events[-1]["event"] == "done" and Path(events[-1]["asset"]["glb"]).is_file()
    assert not (run_dir / "CANCEL").exists()


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path, tiny_pixel_model, fast_args):
    args = list(fast_args)
    args[args.index("--steps") + 1] = "200"
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(engine_cmd("generate", "a red torus", "--out", str(tmp_path), "--model", str(tiny_pixel_model),
                                       "--json-events", *args), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "progress" and event["stage"] == "train":
            proc.send_signal(signal.SIGTERM)
            break
    rest = [json.loads(line) for line in proc.stdout]
    assert proc.wait(timeout=120) == 130
    assert rest[-1]["event"] == "cancelled" and Path(rest[-1]["checkpoint"]).is_file()


def test_same_seed_gives_the_same_run_on_cpu(tmp_path, tiny_pixel_model, fast_args):
    common = ["--model", str(tiny_pixel_model), "--no-export", "--seed", "11", *fast_args]
    common[common.index("--steps") + 1] = "3"
    a = cli.main(["generate", "a red cube", "--out", str(tmp_path / "a"), *common])
    b = cli.main(["generate", "a red cube", "--out", str(tmp_path / "b"), *common])
    assert a == b == 0
    sa = torch.load(only_run_dir(tmp_path / "a") / "checkpoints" / "last.pt", weights_only=True)
    sb = torch.load(only_run_dir(tmp_path / "b") / "checkpoints" / "last.pt", weights_only=True)
    for key in sa["field"]:
        assert torch.equal(sa["field"][key], sb["field"][key]), key
    c = cli.main(["generate", "a red cube", "--out", str(tmp_path / "c"), *[x if x != "11" else "12" for x in common]])
    assert c == 0
    sc = torch.load(only_run_dir(tmp_path / "c") / "checkpoints" / "last.pt", weights_only=True)
    assert not torch.equal(sa["field"]["encoding.table"], sc["field"]["encoding.table"])


def _main_error(capsys, argv):
    code = cli.main(argv + ["--json-events"])
    out = capsys.readouterr().out
    return code, stdout_events(out)[-1]


@pytest.mark.parametrize("prompt, match", [("", "empty"), ("x" * 400, "characters long")])
def test_bad_prompt(tmp_path, capsys, tiny_pixel_model, prompt, match):
    code, err = _main_error(capsys, ["generate", prompt, "--out", str(tmp_path), "--model", str(tiny_pixel_model)])
    assert code == 2 and err["event"] == "error" and err["kind"] == "input" and match in err["message"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("extra, code, kind, match", [
    (["--steps", "0"], 2, "input", "positive"),
    (["--set", "bogus=1"], 2, "input", "unknown setting"),
    (["--model", "/no/such/model"], 3, "model", "not found"),
    (["--device", "cuda"], 4, "device", "--device cpu"),
])
def test_bad_inputs_give_clear_errors_and_write_nothing(tmp_path, capsys, tiny_pixel_model, extra, code, kind, match):
    if kind == "device" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    argv = ["generate", "a mug", "--out", str(tmp_path / "runs"), "--model", str(tiny_pixel_model), *extra]
    got, err = _main_error(capsys, argv)
    assert got == code and err["kind"] == kind and match in err["message"], err
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").iterdir()) == []


def test_unknown_preset_is_rejected(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["generate", "a mug", "--preset", "ultra"])
    assert exc.value.code == 2 and "draft" in capsys.readouterr().err


def test_folder_that_is_not_a_model(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"\xff\xd8")
    code, err = _main_error(capsys, ["generate", "a mug", "--out", str(tmp_path / "runs"), "--model", str(tmp_path / "photos")])
    assert code == 3 and "not a diffusers" in err["message"]


def test_out_of_memory_suggests_the_draft_preset(tmp_path, capsys, tiny_pixel_model, fast_args, monkeypatch):
    from engine.train import Trainer

    calls = {"n": 0}
    real_step = Trainer.train_step

    def step_then_oom(self):
        calls["n"] += 1
        if calls["n"] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step(self)

    monkeypatch.setattr(Trainer, "train_step", step_then_oom)
    code, err = _main_error(capsys, ["generate", "a mug", "--out", str(tmp_path), "--model", str(tiny_pixel_model), *fast_args])
    assert code == 4 and err["kind"] == "oom" and "--preset draft" in err["message"]
    run = only_run_dir(tmp_path)
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"] == 2  # the last periodic checkpoint


def test_resume_of_a_folder_without_checkpoint(tmp_path, capsys):
    code, err = _main_error(capsys, ["generate", "--resume", str(tmp_path)])
    assert code == 2 and "not a run folder" in err["message"]


def test_check_reports_torch_and_model(capsys, tiny_pixel_model):
    assert cli.main(["check", "--model", str(tiny_pixel_model), "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["torch"] == torch.__version__ and report["model"]["ok"] and report["device"] == "cpu"
    assert cli.main(["check", "--model", "/nope"]) == 2


def test_model_folder_recommendations_apply_unless_set_explicitly(tmp_path, tiny_pixel_model, fast_args):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_pixel_model, model)
    (model / "dreamfusion.json").write_text(json.dumps({"guidance_scale": 7.0, "defaults": {"render_resolution": 24, "steps": 99,
                                                                                          "ambient": 0.25}}))
    args = ["generate", "a red cube", "--out", str(tmp_path / "runs"), "--model", str(model), "--no-export", *fast_args]
    args[args.index("--steps") + 1] = "2"
    assert cli.main(args) == 0
    cfg = json.loads((only_run_dir(tmp_path / "runs") / "config.json").read_text())
    # The CLI's --render-resolution 32 and --steps 2 are explicit and win; ambient comes from the model.
    assert cfg["render_resolution"] == 32 and cfg["steps"] == 2 and cfg["ambient"] == 0.25
    from engine.guidance import Guidance

    assert Guidance(str(model), torch.device("cpu"), torch.float32).default_guidance_scale() == 7.0
