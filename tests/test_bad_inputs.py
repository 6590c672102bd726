"""The bad-input catalogue (docs/BAD_INPUTS.md): each entry gets a clear error with the right exit code,
and no existing file changes (hashes of the --out tree, the model folder and any run folder given,
before and after). Then one test per hole found with bad input (issue 12): model code never runs,
stdout carries only events, exports never delete what they did not create, cancel holds in every stage,
non-finite steps are really skipped, validation comes first, prompts are data, resume refuses what it
would ignore, unknown words are reported.

Everything runs in-process with builtin:shapes at tiny settings, except where a separate process is the
point (signals, the worker's stdout)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine import cli, models
from engine.protocol import read_events

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "BAD_INPUTS.md"
# builtin:shapes at the smallest settings validation allows: a step is a few ms, a run a few seconds.
TINY = ["--model", "builtin:shapes", "--steps", "2", "--render-resolution", "16", "--samples-per-ray", "8",
        "--mesh-resolution", "32", "--texture-size", "64", "--device", "cpu", "--no-progress",
        "--set", "preview_views=1", "--set", "hash_log2_table=10", "--set", "iso=0.5"]


def tree_hash(path: Path) -> dict[str, str]:
    """Every file and folder under ``path`` (or ``path`` itself) -> content hash ("dir" for folders)."""
    path = Path(path)
    if not path.exists():
        return {}
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    out = {}
    for p in sorted(path.rglob("*")):
        out[str(p.relative_to(path))] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def stdout_events(text: str) -> list[dict]:
    """Strict: every stdout line must be one JSON event (no NaN, no stray library output)."""
    def no_constants(name):
        raise ValueError(f"non-standard JSON constant {name}")

    events = [json.loads(line, parse_constant=no_constants) for line in text.splitlines()]
    assert all(isinstance(e, dict) and "event" in e for e in events), text[:500]
    return events


def run_cli(capsys, argv: list[str]) -> tuple[int, list[dict], str]:
    code = cli.main(argv + ["--json-events"])
    cap = capsys.readouterr()
    return code, stdout_events(cap.out), cap.err


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory) -> Path:
    """One finished 2-step builtin:shapes run (no export), copied by tests that need a run folder."""
    out = tmp_path_factory.mktemp("shared") / "runs"
    assert cli.main(["generate", "a red cube", "--out", str(out), "--no-export", *TINY]) == 0
    (run,) = out.iterdir()
    return run


@pytest.fixture
def run_copy(shapes_run, tmp_path) -> Path:
    dst = tmp_path / "runs" / shapes_run.name
    shutil.copytree(shapes_run, dst)
    return dst


@pytest.fixture(scope="module")
def custom_code_model(tmp_path_factory) -> Path:
    """A model folder whose tokenizer config points at Python code that would leave a marker if it ran."""
    from tiny_models import make_tiny_pixel_model

    folder = make_tiny_pixel_model(tmp_path_factory.mktemp("models") / "custom-code")
    cfg_path = folder / "tokenizer" / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("tokenizer_class", None)
    cfg["auto_map"] = {"AutoTokenizer": ["evil.EvilTokenizer", None]}
    cfg_path.write_text(json.dumps(cfg))
    marker = folder.parent / "CODE-RAN"
    (folder / "tokenizer" / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\nfrom transformers import CLIPTokenizer as EvilTokenizer\n")
    return folder


REMOVED_ID = next(m["id"] for m in models.load()["models"] if m["status"] == "removed" and m["replaced_by"])

# --- the catalogue -----------------------------------------------------------------------------------
# (id, argv with {out} {run} {model} {file} {dir} placeholders, set-up, exit code, kind, message fragment)
# Set-ups prepare the run copy / files: see _setup.
CLI_CASES = [
    ("empty-prompt", ["generate", "", "--out", "{out}"], None, 2, "input", "empty"),
    ("blank-prompt", ["generate", "   ", "--out", "{out}"], None, 2, "input", "empty"),
    ("long-prompt", ["generate", "x" * 400, "--out", "{out}"], None, 2, "input", "characters long"),
    ("control-char-prompt", ["generate", "a red\x1b[2J cube", "--out", "{out}"], None, 2, "input", "control characters"),
    ("no-prompt", ["generate", "--out", "{out}"], None, 2, "input", "give a prompt"),
    ("prompt-twice", ["generate", "a cube", "--prompt=a cone", "--out", "{out}"], None, 2, "input", "once"),
    ("steps-0", ["generate", "a cube", "--out", "{out}", "--steps", "0"], None, 2, "input", "positive"),
    ("steps-negative", ["generate", "a cube", "--out", "{out}", "--steps", "-5"], None, 2, "input", "positive"),
    ("steps-huge", ["generate", "a cube", "--out", "{out}", "--steps", "10000000"], None, 2, "input", "far beyond"),
    ("guidance-inf", ["generate", "a cube", "--out", "{out}", "--guidance-scale", "inf"], None, 2, "input", "finite"),
    ("guidance-nan", ["generate", "a cube", "--out", "{out}", "--guidance-scale", "nan"], None, 2, "input", "finite"),
    ("guidance-negative", ["generate", "a cube", "--out", "{out}", "--guidance-scale", "-1"], None, 2, "input", "guidance"),
    ("seed-2**70", ["generate", "a cube", "--out", "{out}", "--seed", str(2**70)], None, 2, "input", "seed"),
    ("seed-negative", ["generate", "a cube", "--out", "{out}", "--seed", "-1"], None, 2, "input", "seed"),
    ("iso-negative", ["generate", "a cube", "--out", "{out}", "--set", "iso=-1"], None, 2, "input", "iso"),
    ("iso-nan", ["generate", "a cube", "--out", "{out}", "--set", "iso=nan"], None, 2, "input", "finite"),
    ("lr-inf", ["generate", "a cube", "--out", "{out}", "--set", "lr=inf"], None, 2, "input", "finite"),
    ("set-unknown", ["generate", "a cube", "--out", "{out}", "--set", "bogus=1"], None, 2, "input", "unknown setting"),
    ("set-bad-number", ["generate", "a cube", "--out", "{out}", "--set", "steps=many"], None, 2, "input", "cannot read"),
    ("set-no-equals", ["generate", "a cube", "--out", "{out}", "--set", "steps"], None, 2, "input", "KEY=VALUE"),
    ("start-shape-unknown", ["generate", "a cube", "--out", "{out}", "--set", "start_shape=cube"], None, 2, "input",
     "start_shape must be one of ball, ring, auto"),
    ("start-auto-too-short", ["generate", "a cube", "--out", "{out}", "--steps", "40", "--set", "start_shape=auto"], None, 2,
     "input", "fewer than steps=40"),
    ("render-too-small", ["generate", "a cube", "--out", "{out}", "--render-resolution", "8"], None, 2, "input", "render resolution"),
    ("mesh-too-small", ["generate", "a cube", "--out", "{out}", "--mesh-resolution", "16"], None, 2, "input", "mesh resolution"),
    ("texture-too-small", ["generate", "a cube", "--out", "{out}", "--texture-size", "10"], None, 2, "input", "texture size"),
    ("device-banana", ["generate", "a cube", "--out", "{out}", "--device", "banana"], None, 2, "input", "device"),
    ("dtype-fp16-cpu", ["generate", "a cube", "--out", "{out}", "--device", "cpu", "--dtype", "fp16"], None, 4, "device", "fp16"),
    ("model-missing", ["generate", "a cube", "--out", "{out}", "--model", "/no/such/model"], None, 3, "model", "not found"),
    ("model-is-file", ["generate", "a cube", "--out", "{out}", "--model", "{file}"], "file", 3, "model", "is a file"),
    ("model-not-diffusers", ["generate", "a cube", "--out", "{out}", "--model", "{dir}"], "dir", 3, "model", "not a diffusers"),
    ("model-custom-code", ["generate", "a cube", "--out", "{out}", "--model", "{custom}"], None, 3, "model", "custom Python code"),
    ("model-hub-offline", ["generate", "a cube", "--out", "{out}", "--model", "nobody/no-such-model", "--offline"], None, 3,
     "model", "offline mode is on"),
    # {removed}: an id engine/known_models.json lists as removed (named nowhere else; tests/test_known_models.py)
    ("model-removed", ["generate", "a cube", "--out", "{out}", "--model", "{removed}"], None, 3, "model", "no longer exists"),
    ("out-is-file", ["generate", "a cube", "--out", "{file}"], "file", 2, "input", "is a file"),
    ("out-under-file", ["generate", "a cube", "--out", "{file}/runs"], "file", 2, "input", "is a file"),
    # resume
    ("resume-not-run", ["generate", "--resume", "{dir}"], "dir", 2, "input", "not a run folder"),
    ("resume-no-checkpoint", ["generate", "--resume", "{run}"], "no-checkpoint", 2, "input", "no checkpoint"),
    ("resume-truncated-checkpoint", ["generate", "--resume", "{run}"], "truncate-checkpoint", 2, "input", "unreadable"),
    ("resume-garbage-config", ["generate", "--resume", "{run}"], "garbage-config", 2, "input", "unreadable"),
    ("resume-config-wrong-type", ["generate", "--resume", "{run}"], "config-steps-text", 2, "input", "whole number"),
    ("resume-other-seed", ["generate", "--resume", "{run}", "--seed", "5"], None, 2, "input", "seed"),
    ("resume-other-prompt", ["generate", "a blue cone", "--resume", "{run}"], None, 2, "input", "prompt"),
    ("resume-other-guidance", ["generate", "--resume", "{run}", "--guidance-scale", "3"], None, 2, "input", "guidance_scale"),
    ("resume-other-model", ["generate", "--resume", "{run}", "--model", "{custom}"], None, 2, "input", "model"),
    ("resume-other-render", ["generate", "--resume", "{run}", "--set", "render_resolution=64"], None, 2, "input", "render_resolution"),
    ("resume-steps-below", ["generate", "--resume", "{run}", "--steps", "1"], None, 2, "input", "below the checkpoint"),
    ("resume-with-out", ["generate", "--resume", "{run}", "--out", "{out}"], None, 2, "input", "--out"),
    # export / re-export
    ("export-not-run", ["export", "{dir}"], "dir", 2, "input", "not a run folder"),
    ("export-no-checkpoint", ["export", "{run}"], "no-checkpoint", 2, "input", "no checkpoint"),
    ("export-out-not-empty", ["export", "{run}", "--out", "{dir}"], "dir", 2, "input", "not empty"),
    ("export-out-is-file", ["export", "{run}", "--out", "{file}"], "file", 2, "input", "is a file"),
    ("export-out-under-file", ["export", "{run}", "--out", "{file}/x"], "file", 2, "input", "is a file"),
    ("export-iso-negative", ["export", "{run}", "--iso", "-1"], None, 2, "input", "iso"),
    ("export-iso-inf", ["export", "{run}", "--iso", "inf"], None, 2, "input", "finite"),
    ("export-mesh-too-small", ["export", "{run}", "--mesh-resolution", "8"], None, 2, "input", "mesh resolution"),
    ("export-device-banana", ["export", "{run}", "--device", "banana"], None, 2, "input", "device"),
    # check
    ("check-device-banana", ["check", "--device", "banana"], None, 2, None, "device"),
    ("check-model-missing", ["check", "--model", "/no/such/model"], None, 2, None, "not found"),
    ("check-model-removed", ["check", "--model", "{removed}"], None, 2, None, "Replaced by"),
]


def _setup(kind: str | None, tmp_path: Path, run: Path) -> dict:
    spots = {"file": tmp_path / "a-file.txt", "dir": tmp_path / "photos"}
    spots["file"].write_text("not a folder\n")
    spots["dir"].mkdir()
    (spots["dir"] / "cat.jpg").write_bytes(b"\xff\xd8\xff")
    if kind == "no-checkpoint":
        (run / "checkpoints" / "last.pt").unlink()
    elif kind == "truncate-checkpoint":
        ckpt = run / "checkpoints" / "last.pt"
        ckpt.write_bytes(ckpt.read_bytes()[:1000])
    elif kind == "garbage-config":
        (run / "config.json").write_bytes(b"\x00\xff{not json")
    elif kind == "config-steps-text":
        cfg = json.loads((run / "config.json").read_text())
        cfg["steps"] = "many"
        (run / "config.json").write_text(json.dumps(cfg))
    return spots


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_bad_input_catalogue(case, tmp_path, capsys, run_copy, custom_code_model):
    name, argv, setup, code, kind, fragment = case
    spots = _setup(setup, tmp_path, run_copy)
    out = tmp_path / "runs-out"
    subs = {"{out}": str(out), "{run}": str(run_copy), "{model}": "builtin:shapes", "{file}": str(spots["file"]),
            "{dir}": str(spots["dir"]), "{custom}": str(custom_code_model), "{removed}": REMOVED_ID}
    argv = [a for a in argv]
    for i, a in enumerate(argv):
        for key, value in subs.items():
            a = a.replace(key, value)
        argv[i] = a
    if argv[0] == "generate" and "--resume" not in argv:
        argv += ["--no-progress", "--device", "cpu"] if "--device" not in argv else ["--no-progress"]
    watched = [tmp_path, custom_code_model]
    before = [tree_hash(p) for p in watched]
    got, events, err = run_cli(capsys, argv)
    assert got == code, (got, events, err)
    last = events[-1]
    if kind is None:  # `check` reports in its own event
        assert last["event"] == "check" and not last["ok"] and fragment in json.dumps(last)
    else:
        assert last["event"] == "error" and last["kind"] == kind and fragment in last["message"], last
        assert err.count(last["message"]) == 1, err  # printed once on stderr, no traceback
        assert "Traceback" not in err
    assert [tree_hash(p) for p in watched] == before  # nothing written, nothing changed
    assert not (custom_code_model.parent / "CODE-RAN").exists()


def test_catalogue_is_documented():
    """docs/BAD_INPUTS.md lists every case tested here (by id), and at least 40."""
    doc = DOC.read_text(encoding="utf-8")
    ids = [c[0] for c in CLI_CASES] + EXTRA_DOCUMENTED
    missing = [i for i in ids if f"`{i}`" not in doc]
    assert not missing and len(ids) >= 40, missing


# Cases tested below (outside the table) that the catalogue lists too.
EXTRA_DOCUMENTED = ["prompts-not-utf8", "prompts-missing", "batch-out-under-file", "prompts-empty", "prompt-dash-help",
                    "negative-prompt-dash", "run-dir-dash", "export-out-partial-exists", "model-defaults-bad",
                    "sigint-load", "sigint-preview", "sigint-export", "sigterm-export", "cancel-file-export",
                    "worker-prompt-dash-help"]


# --- batch and the add-on worker's command lines -----------------------------------------------------
def test_batch_prompts_file_errors_name_the_line(tmp_path):
    from dreamfusion_blender.batch import PromptsFileError, read_prompts

    bad = tmp_path / "prompts.txt"
    bad.write_bytes("a red cube\n# comment\na gr\xfcn cone\n".encode("utf-8") + b"a bl\xe9 sphere\n")
    before = tree_hash(tmp_path)
    with pytest.raises(PromptsFileError, match=r"line 4: not UTF-8 .*0xe9"):  # prompts-not-utf8
        read_prompts(str(bad))
    with pytest.raises(PromptsFileError, match="cannot read"):  # prompts-missing
        read_prompts(str(tmp_path / "nope.txt"))
    assert read_prompts(str(_write(tmp_path / "ok.txt", "\ufeffa red cube\n\n# x\n  a cone  \n"))) == ["a red cube", "a cone"]
    before["ok.txt"] = tree_hash(tmp_path)["ok.txt"]
    assert tree_hash(tmp_path) == before


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("case", ["prompts-not-utf8", "prompts-empty", "batch-out-under-file"])
def test_batch_refuses_before_starting(case, tmp_path, capsys):
    from dreamfusion_blender import batch  # bpy is not needed to refuse bad input

    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes({"prompts-not-utf8": b"a cube\n\xff\xfe\n", "prompts-empty": b"# nothing\n\n"}.get(case, b"a cube\n"))
    blocker = _write(tmp_path / "a-file", "x")
    out = blocker / "out" if case == "batch-out-under-file" else tmp_path / "out"
    before = tree_hash(tmp_path)
    code = batch.main(["generate", "--prompts", str(prompts), "--out", str(out), "--python", "/no/such/python"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert {"prompts-not-utf8": "line 2", "prompts-empty": "no prompts", "batch-out-under-file": "cannot create --out"}[case] in err
    assert tree_hash(tmp_path) == before


@pytest.mark.parametrize("case, prompt, negative, run_dir", [
    ("prompt-dash-help", "--help", "", "/r"), ("negative-prompt-dash", "a cube", "-blurry", "/r"),
    ("run-dir-dash", "a cube", "", "-r"),
])
def test_prompts_and_paths_are_data_not_options(case, prompt, negative, run_dir):
    """What the add-on and the batch pass to the engine: user text can never become an option."""
    from dreamfusion_blender import engine_cli

    parser = cli.build_parser()
    req = engine_cli.GenerateRequest(prompt=prompt, out="/o", negative_prompt=negative, seed=0, model="builtin:shapes")
    args = parser.parse_args(engine_cli.generate_argv("py", req)[3:])
    assert (args.prompt_opt, args.negative_prompt or "", args.out, args.json_events) == (prompt, negative, "/o", True)
    assert parser.parse_args(engine_cli.resume_argv("py", run_dir, "cpu")[3:]).resume == run_dir
    exp = parser.parse_args(engine_cli.export_argv("py", run_dir, 64, None, "cpu")[3:])
    assert (exp.run_dir, exp.mesh_resolution, exp.device) == (run_dir, 64, "cpu")


# --- 1. a model folder's code never runs; stdout carries only events -------------------------------
def test_loader_refuses_custom_code_without_asking(custom_code_model):
    """Past the auto_map check, the loader itself passes trust_remote_code=False: no question, a model error."""
    import transformers

    from engine.errors import ModelError
    from engine.guidance import _load_component, resolve_model

    with pytest.raises(ModelError, match="custom Python code|custom code"):
        _load_component(transformers.AutoTokenizer.from_pretrained, resolve_model(str(custom_code_model)), "tokenizer",
                        True, trust_remote_code=False)
    assert not (custom_code_model.parent / "CODE-RAN").exists()


def test_model_defaults_bad(tmp_path, capsys, tiny_pixel_model):
    """A model folder's recommended settings are validated like the user's, before any folder exists."""
    model = tmp_path / "model"
    shutil.copytree(tiny_pixel_model, model)
    (model / "dreamfusion.json").write_text(json.dumps({"defaults": {"iso": -3}}))
    before = tree_hash(tmp_path)
    code, events, _ = run_cli(capsys, ["generate", "a cube", "--out", str(tmp_path / "runs"), "--model", str(model),
                                       "--device", "cpu", "--no-progress"])
    assert code == 2 and "iso" in events[-1]["message"]
    assert tree_hash(tmp_path) == before


def test_library_output_never_reaches_the_event_stream(tmp_path, capsys, monkeypatch):
    from engine.train import Trainer

    real = Trainer.write_preview

    def chatty(self):
        print("some library chatter")  # as a library would, on stdout
        return real(self)

    monkeypatch.setattr(Trainer, "write_preview", chatty)
    code, events, err = run_cli(capsys, ["generate", "a red cube", "--out", str(tmp_path), "--no-export", *TINY])
    assert code == 0 and events[-1]["event"] == "done"  # stdout_events is strict: every line is an event
    assert "some library chatter" in err


# --- 2. export only deletes what it created --------------------------------------------------------
def test_export_keeps_a_users_partial_folder(run_copy, tmp_path, capsys):
    target = tmp_path / "X"
    user = tmp_path / "X.partial"
    user.mkdir()
    _write(user / "my-notes.txt", "mine")
    before_user, before_run = tree_hash(user), tree_hash(run_copy / "checkpoints")
    code, events, err = run_cli(capsys, ["export", str(run_copy), "--out", str(target), "--no-progress"])
    assert code == 0, err
    assert Path(events[-1]["asset"]["glb"]).parent == target and (target / "asset.glb").is_file()
    assert tree_hash(user) == before_user and tree_hash(run_copy / "checkpoints") == before_run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X", "X.partial", "runs"]  # no temporary folder left


# --- 3. cancel holds in every stage ----------------------------------------------------------------
def test_sigint_during_load(tmp_path, capsys, monkeypatch):
    """A model load is one long library call: a signal stops it at once, nothing is written."""
    import engine.guidance

    def slow_load(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(30)
        except Exception as exc:  # as loaders do: turn any error into their own
            raise OSError("the loader's own error") from exc
        raise AssertionError("the signal did not interrupt the load")

    monkeypatch.setattr(engine.guidance, "Guidance", slow_load)
    out = tmp_path / "runs"
    code, events, err = run_cli(capsys, ["generate", "a red cube", "--out", str(out), *TINY])
    assert code == 130, err
    assert events[-1] == {**events[-1], "event": "cancelled", "run_dir": None, "checkpoint": None}
    assert not out.exists()


def test_sigint_during_preview_stops_within_one_render(tmp_path, capsys, monkeypatch):
    import engine.train

    real, calls = engine.train.render, []

    def render(*args, **kwargs):
        if not torch.is_grad_enabled():  # a preview render
            calls.append(1)
            if len(calls) == 1:
                os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine.train, "render", render)
    code, events, err = run_cli(capsys, ["generate", "a red cube", "--out", str(tmp_path), *TINY, "--set", "preview_views=4"])
    assert code == 130, err
    assert len(calls) == 1  # a preview is 8 renders here; cancel came before the second
    cancelled = events[-1]
    assert cancelled["event"] == "cancelled" and cancelled["step"] == 1 and Path(cancelled["run_dir"]).is_dir()
    assert torch.load(cancelled["checkpoint"], weights_only=True)["step"] == 1


def test_cancel_file_during_reexport(run_copy, capsys, monkeypatch):
    from engine import export_run

    real = export_run._Progress.__call__

    def cancel_on_first(self, stage, fraction):
        (run_copy / "CANCEL").touch()  # as the add-on's Cancel does
        return real(self, stage, fraction)

    monkeypatch.setattr(export_run._Progress, "__call__", cancel_on_first)
    before = tree_hash(run_copy / "checkpoints")
    code, events, err = run_cli(capsys, ["export", str(run_copy), "--mesh-resolution", "128", "--no-progress"])
    assert code == 130, err
    assert events[-1]["event"] == "cancelled" and events[-1]["run_dir"] == str(run_copy)
    assert Path(events[-1]["checkpoint"]).is_file() and tree_hash(run_copy / "checkpoints") == before
    assert not [p for p in run_copy.iterdir() if "export" in p.name or "asset" in p.name]  # no partial folder


def test_sigint_during_export_in_a_worker_process(run_copy):
    """sigint-export, in a real worker process (as the Blender add-on's Cancel): the export stops at
    once even inside one long library call, exits 130 with the run folder, keeps the checkpoint, leaves
    no partial folder, and stdout stays pure JSON events."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    argv = ["export", str(run_copy), "--mesh-resolution", "256", "--texture-size", "2048"]  # an export of many seconds
    proc = subprocess.Popen([sys.executable, "-m", "engine", *argv, "--json-events", "--no-progress"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoint = tree_hash(run_copy / "checkpoints")
    events = []
    for line in proc.stdout:
        events.append(stdout_events(line)[0])
        if events[-1]["event"] == "progress" and events[-1]["stage"] == "export":
            proc.send_signal(signal.SIGINT)
            sent = time.monotonic()
            break
    events += stdout_events(proc.stdout.read())
    assert proc.wait(timeout=60) == 130, proc.stderr.read()[-2000:]
    print(f"SIGINT during export: exited {time.monotonic() - sent:.2f} s after the signal")
    assert events[-1]["event"] == "cancelled" and events[-1]["run_dir"] == str(run_copy)
    assert tree_hash(run_copy / "checkpoints") == checkpoint
    assert not [p for p in run_copy.iterdir() if "partial" in p.name or p.name.startswith(("asset", "export"))]


def test_sigterm_during_generates_export(tmp_path, capsys, monkeypatch):
    """sigterm-export: the handler is held from load to the end of export (it used to be restored
    before the export, so SIGTERM killed the process and left asset.partial/)."""
    from engine import export_run

    real = export_run._Progress.__call__

    def terminate_on_first(self, stage, fraction):
        if not hasattr(self, "sent"):
            self.sent = os.kill(os.getpid(), signal.SIGTERM)
        return real(self, stage, fraction)

    monkeypatch.setattr(export_run._Progress, "__call__", terminate_on_first)
    code, events, err = run_cli(capsys, ["generate", "a red cube", "--out", str(tmp_path), *TINY])
    assert code == 130, err
    (run,) = tmp_path.iterdir()
    assert events[-1]["event"] == "cancelled" and events[-1]["run_dir"] == str(run) and events[-1]["step"] == 2
    assert torch.load(events[-1]["checkpoint"], weights_only=True)["step"] == 2
    assert not [p for p in run.iterdir() if "partial" in p.name or p.name.startswith(("asset", "export"))]


# --- 4. non-finite steps are skipped for real ------------------------------------------------------
def _nan_sds(monkeypatch, bad_calls):
    from engine.guidance import Guidance

    real, n = Guidance.sds_loss, {"calls": 0}

    def sds_loss(self, *args, **kwargs):
        loss, info = real(self, *args, **kwargs)
        n["calls"] += 1
        return (loss * float("nan") if bad_calls(n["calls"]) else loss), info

    monkeypatch.setattr(Guidance, "sds_loss", sds_loss)


def test_a_non_finite_step_is_skipped_and_counted(tmp_path, capsys, monkeypatch):
    _nan_sds(monkeypatch, lambda call: call == 2)
    code, events, err = run_cli(capsys, ["generate", "a red cube", "--out", str(tmp_path), "--no-export", *TINY,
                                         "--steps", "3"])
    assert code == 0, err
    train = [e for e in events if e["event"] == "progress" and e["stage"] == "train"]
    assert train[-1]["skipped"] == 1
    state = torch.load(Path(events[-1]["checkpoint"]), weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["field"].values())
    assert all(int(s["step"]) == 2 for s in state["optimizer"]["state"].values())  # 3 steps, 1 skipped: Adam saw 2


def test_many_non_finite_steps_stop_with_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    from engine import step_guard

    monkeypatch.setattr(step_guard, "CHECK_EVERY", 1)
    monkeypatch.setattr(step_guard, "MAX_CONSECUTIVE", 3)
    _nan_sds(monkeypatch, lambda call: call >= 2)
    code, events, err = run_cli(capsys, ["generate", "a red cube", "--out", str(tmp_path), "--no-export", *TINY,
                                         "--steps", "20", "--set", "checkpoint_every=1"])
    assert code == 7, err
    assert events[-1]["event"] == "error" and events[-1]["kind"] == "nonfinite" and "non-finite" in events[-1]["message"]
    (run,) = tmp_path.iterdir()
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["field"].values())
    assert all(int(s["step"]) == 1 for s in state["optimizer"]["state"].values())


# --- 8. resume honours what it may change, records it, refuses the rest (refusals: the catalogue) ---
def test_resume_records_what_it_changed(run_copy, capsys):
    code, events, err = run_cli(capsys, ["generate", "a red cube", "--resume", str(run_copy), "--steps", "3", "--seed", "0",
                                         "--mesh-resolution", "40", "--no-export", "--no-progress"])
    assert code == 0, err
    cfg = json.loads((run_copy / "config.json").read_text())
    assert (cfg["steps"], cfg["mesh_resolution"]) == (3, 40)
    assert torch.load(run_copy / "checkpoints" / "last.pt", weights_only=True)["step"] == 3
    assert "steps: 2 -> 3" in (run_copy / "log.txt").read_text()


# --- 9. words the model does not know ----------------------------------------------------------------
def test_unknown_words_are_reported(tmp_path, capsys):
    code, events, err = run_cli(capsys, ["generate", "zorblax quux", "--out", str(tmp_path), "--no-export", *TINY, "--steps", "1"])
    assert code == 0, err
    warnings = [e for e in events if e["event"] == "warning"]
    assert len(warnings) == 1 and "none of the words" in warnings[0]["message"]
    assert read_events(next(tmp_path.iterdir()) / "events.jsonl")[1]["event"] == "warning"


def test_events_are_strict_json():
    import io

    from engine.protocol import EventStream

    buf = io.StringIO()
    EventStream(to_stdout=True, stream=buf).emit("progress", loss=float("nan"), eta_s=float("inf"), step=torch.tensor(3))
    (event,) = stdout_events(buf.getvalue())
    assert (event["loss"], event["eta_s"], event["step"]) == (None, None, 3)


def test_worker_prompt_dash_help_reaches_the_engine_as_text(tmp_path):
    """worker-prompt-dash-help: the add-on's worker starts the real engine with the prompt "--help"; the
    engine reads it as the prompt (here refused for a bad setting, proving it went past argv parsing)
    instead of printing help and exiting 0, which the add-on reported as "unknown failure"."""
    from dreamfusion_blender import engine_cli, events
    from dreamfusion_blender.worker import Worker

    req = engine_cli.GenerateRequest(prompt="--help", out=str(tmp_path / "runs"), model="builtin:shapes",
                                     extra=("--set", "steps=0"))
    worker = Worker(engine_cli.generate_argv(sys.executable, req), env=engine_cli.worker_env()).start()
    state = worker.wait(timeout=120)
    assert state.exited and state.returncode == 2 and state.error_kind == "input", state
    assert "steps must be a positive" in state.message and not state.stray_lines
    assert not (tmp_path / "runs").exists()
    cancelled = events.apply(events.RunState(), {"event": "cancelled", "run_dir": None, "step": None, "checkpoint": None})
    assert cancelled.status == "cancelled" and "nothing was written" in cancelled.message
