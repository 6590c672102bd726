"""``python -m engine batch`` on this machine alone (no Ray): every asset comes back, an engine that
dies is retried, a bad prompt fails alone and is not retried, a re-run skips what is done, Ctrl-C
cancels and keeps the rest; and every bad input is refused before any work starts. (Resuming a run
folder left with a checkpoint is the same code on both backends: tests/test_batch_ray.py.)"""

from __future__ import annotations

import ast
import json
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from batch_helpers import BAD, GOOD, ROOT, TINY, is_glb, of, run_batch_live, write_prompts
from engine import cli
from engine.batch import manifest as manifest_mod
from engine.batch.cli import forwarded_argv
from engine.batch.prompts import job_id


def test_local_batch_retries_a_killed_engine_fails_a_bad_prompt_alone_and_reruns_skip(tmp_path):
    prompts = write_prompts(tmp_path / "prompts.txt", GOOD[:2] + [BAD])
    out = tmp_path / "out"
    killed = []

    def kill_first_engine(ev, _):  # a system failure: the engine of "a red cube" is killed once
        if ev["event"] == "task_started" and ev["prompt"] == GOOD[0] and not killed:
            killed.append(ev["engine_pid"])
            os.kill(ev["engine_pid"], signal.SIGKILL)

    rc, events, err = run_batch_live([str(prompts), "--out", str(out), "--workers", "2", "--device", "cpu", *TINY],
                                     kill_first_engine)
    assert rc == 8, err[-3000:]  # ran, one prompt failed
    manifest = json.loads((out / "batch.json").read_text())
    jobs = manifest["jobs"]
    for prompt in GOOD[:2]:
        rec = jobs[job_id(prompt)]
        assert rec["status"] == "done" and is_glb(out / rec["glb"]), rec
        run = out / rec["run_dir"]
        assert run.parent == out / "runs" / job_id(prompt) and (run / "config.json").is_file()
        assert (run / "checkpoints" / "last.pt").is_file() and list((run / "previews").glob("*.png"))
    assert killed and jobs[job_id(GOOD[0])]["attempts"] == 2 and jobs[job_id(GOOD[1])]["attempts"] == 1
    assert len(of(events, "task_retry", job=job_id(GOOD[0]))) == 1
    bad = jobs[job_id(BAD)]
    assert bad["status"] == "failed" and bad["exit_code"] == 2 and bad["kind"] == "input" and bad["attempts"] == 1
    assert "characters long" in bad["message"] and len(of(events, "task_started", job=job_id(BAD))) == 1
    assert of(events, "batch_done")[0]["done"] == 2 and of(events, "batch_done")[0]["failed"] == 1
    # the events file mirrors stdout; counts add up at every step
    assert [e["event"] for e in map(json.loads, (out / "batch-events.jsonl").read_text().splitlines())] == [e["event"] for e in events]
    for p in of(events, "batch_progress"):
        assert p["done"] + p["failed"] + p["running"] + p["pending"] + p["skipped"] + p["cancelled"] == p["total"] == 3
    assert not list(out.glob(".*.tmp")) and not list(out.glob("*.partial"))

    # Re-run without the bad prompt (and the file edited): nothing runs, nothing is overwritten.
    glbs = {p: p.stat().st_mtime_ns for p in out.glob("*.glb")}
    write_prompts(prompts, ["# edited", GOOD[1], "", GOOD[0]])
    rc, events, err = run_batch_live([str(prompts), "--out", str(out), "--device", "cpu", *TINY])
    assert rc == 0, err[-3000:]
    assert not of(events, "task_started") and of(events, "batch_done")[0]["skipped"] == 2
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.glb")} == glbs


def test_ctrl_c_cancels_the_running_prompt_and_keeps_the_rest_for_a_rerun(tmp_path):
    prompts = write_prompts(tmp_path / "prompts.txt", GOOD[:3])
    out = tmp_path / "out"

    def interrupt(ev, driver):  # Ctrl-C on the driver while the first prompt's engine starts
        if ev["event"] == "task_started":
            driver.send_signal(signal.SIGINT)

    rc, events, err = run_batch_live([str(prompts), "--out", str(out), "--workers", "1", "--device", "cpu", *TINY], interrupt)
    assert rc == 130, err[-3000:]
    jobs = json.loads((out / "batch.json").read_text())["jobs"]
    assert [jobs[job_id(p)]["status"] for p in GOOD[:3]] == ["cancelled", "pending", "pending"], jobs
    assert len(of(events, "task_started")) == 1 and of(events, "batch_done")[0]["cancelled"] == 1
    engine_pid = of(events, "task_started")[0]["engine_pid"]
    with pytest.raises(ProcessLookupError):
        os.kill(engine_pid, 0)  # the driver stopped its engine and waited for it


# ---------------------------------------------------------------- bad input: refused before any work
def _batch_error(capsys, argv: list[str]) -> tuple[int, dict]:
    code = cli.main(["batch", *argv, "--json-events", "--no-progress"])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    return code, lines[-1]


@pytest.fixture
def prompts(tmp_path) -> Path:
    return write_prompts(tmp_path / "prompts.txt", GOOD[:1])


@pytest.mark.parametrize("content, match", [
    (None, "does not exist"),
    (b"", "has no prompts"),
    (b"# only a comment\n\n   \n", "has no prompts"),
    (b"a red cube\na bl\xffue sphere\n", "line 2 is not UTF-8 text (byte 0xff at column 5)"),
])
def test_bad_prompts_files(tmp_path, capsys, content, match):
    path = tmp_path / "prompts.txt"
    if content is not None:
        path.write_bytes(content)
    code, err = _batch_error(capsys, [str(path), "--out", str(tmp_path / "out"), *TINY])
    assert code == 2 and err["event"] == "error" and err["kind"] == "input" and match in err["message"], err
    assert not (tmp_path / "out").exists()


def test_prompts_file_that_is_a_folder(tmp_path, capsys):
    code, err = _batch_error(capsys, [str(tmp_path), "--out", str(tmp_path / "out"), *TINY])
    assert code == 2 and "is a folder" in err["message"]


@pytest.mark.parametrize("extra, match", [
    (["--workers", "0"], "--workers must be at least 1"),
    (["--max-retries", "-1"], "--max-retries must be 0 or more"),
    (["--cpus-per-task", "0"], "--cpus-per-task must be positive"),
    (["--shared-out"], "--shared-out applies to --ray batches only"),
    (["--steps", "0"], "positive"),  # the engine's own validation, once for the batch
    (["--set", "bogus=1"], "unknown setting"),
    (["--ray", "not-an-address"], "HOST:PORT"),
    (["--ray", "auto", "--device", "cuda:1"], "Ray picks each task's GPU"),
])
def test_bad_options(tmp_path, capsys, prompts, extra, match):
    if extra[0] == "--ray":
        pytest.importorskip("ray")
    code, err = _batch_error(capsys, [str(prompts), "--out", str(tmp_path / "out"), *TINY, *extra])
    assert code == 2 and err["kind"] == "input" and match in err["message"], err
    assert not (tmp_path / "out").exists()


def test_missing_model_is_refused_before_any_work(tmp_path, capsys, prompts):
    code, err = _batch_error(capsys, [str(prompts), "--out", str(tmp_path / "out"), *TINY, "--model", str(tmp_path / "nope")])
    assert code == 3 and err["kind"] == "model" and "not found" in err["message"]
    assert not (tmp_path / "out").exists()


def test_out_that_is_not_writable(tmp_path, capsys, prompts):
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep me")
    for out, match in ((a_file, "is a file"), (a_file / "sub", "not a writable folder")):
        code, err = _batch_error(capsys, [str(prompts), "--out", str(out), *TINY])
        assert code == 2 and match in err["message"], err
    assert a_file.read_text() == "keep me"


def test_out_holding_a_batch_with_other_settings_is_refused(tmp_path, capsys, prompts):
    out = tmp_path / "out"
    out.mkdir()
    old = {"format": 1, "batch_id": "x", "settings": {"steps": 5}, "jobs": {}}
    (out / "batch.json").write_text(json.dumps(old))
    code, err = _batch_error(capsys, [str(prompts), "--out", str(out), *TINY])
    assert code == 2 and "other engine settings" in err["message"] and "steps" in err["message"]
    (out / "batch.json").write_text("{not json")
    code, err = _batch_error(capsys, [str(prompts), "--out", str(out), *TINY])
    assert code == 2 and "not a readable batch manifest" in err["message"]
    assert (out / "batch.json").read_text() == "{not json" and sorted(os.listdir(out)) == ["batch.json"]


def test_ray_flag_without_ray_installed(tmp_path, capsys, prompts, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees without the package
    code, err = _batch_error(capsys, [str(prompts), "--out", str(tmp_path / "out"), "--ray", "auto", *TINY])
    assert code == 2 and "pip install -r requirements-cluster.txt" in err["message"], err
    assert not (tmp_path / "out").exists()


def test_ray_address_where_nothing_listens(tmp_path, capsys, prompts):
    pytest.importorskip("ray")
    with socket.socket() as s:  # a port that was free a moment ago: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, err = _batch_error(capsys, [str(prompts), "--out", str(tmp_path / "out"), "--ray", f"127.0.0.1:{port}", *TINY])
    assert code == 2 and "cannot reach a Ray cluster" in err["message"] and "ray start --head" in err["message"], err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- pieces
def test_generate_options_are_forwarded_to_every_engine():
    args = cli.build_parser().parse_args(["batch", "p.txt", "--out", "o", "--steps", "3", "--set", "a=1", "--set", "b=2",
                                          "--offline", "--preset", "draft", "--workers", "2", "--negative-prompt=-blurry"])
    argv, settings = forwarded_argv(args)
    assert argv == ["--preset=draft", "--negative-prompt=-blurry", "--steps=3", "--offline", "--set=a=1", "--set=b=2"]
    assert settings == {"preset": "draft", "negative_prompt": "-blurry", "steps": 3, "offline": True, "set": ["a=1", "b=2"]}
    again = cli.build_parser().parse_args(["generate", "a mug", *argv])  # the engine reads them back as given
    assert (again.negative_prompt, again.steps, again.set, again.offline) == ("-blurry", 3, ["a=1", "b=2"], True)


def test_manifest_write_is_atomic(tmp_path):
    path = tmp_path / "batch.json"
    manifest_mod.write_json_atomic(path, {"jobs": {"a": 1}})
    with pytest.raises(TypeError):
        manifest_mod.write_json_atomic(path, {"jobs": {"a": object()}})  # fails half-way through writing
    assert json.loads(path.read_text()) == {"jobs": {"a": 1}} and os.listdir(tmp_path) == ["batch.json"]


def test_only_the_ray_backend_imports_ray():
    """The engine works without Ray: no module but ray_backend imports it (and that one lazily)."""
    importers = []
    for path in sorted((ROOT / "engine").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n == "ray" or n.startswith("ray.") for n in names):
                importers.append(path.relative_to(ROOT).as_posix())
                assert node.col_offset > 0, f"{path}: `import ray` at module level"
    assert importers and set(importers) == {"engine/batch/ray_backend.py"}
