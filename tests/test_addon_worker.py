"""The add-on's protocol reading and process management, without Blender and without torch: fake
engines (tiny Python scripts) speak the event protocol, crash, get killed, ignore or honour cancel."""

import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dreamfusion_blender import engine_cli, engine_env, events, provenance  # noqa: E402
from dreamfusion_blender.jobs import Busy, Job, JobManager  # noqa: E402
from dreamfusion_blender.worker import Worker  # noqa: E402


def fake_engine(body: str) -> list[str]:
    prelude = "import json, sys, time, os, signal\ndef emit(**e):\n    print(json.dumps(e), flush=True)\n"
    return [sys.executable, "-c", prelude + textwrap.dedent(body)]


def test_events_fold_a_successful_run():
    st = events.RunState()
    for ev in [
        {"event": "start", "run_dir": "/r", "engine_version": "0.1.0", "device": "cpu", "config": {"prompt": "x"}},
        {"event": "progress", "stage": "train", "step": 5, "total": 10, "loss": 1.0, "elapsed_s": 5, "eta_s": 65},
        {"event": "preview", "step": 5, "path": "/r/previews/step_000005.png"},
        {"event": "done", "run_dir": "/r", "asset": {"glb": "/r/asset/asset.glb"}, "checkpoint": "/r/checkpoints/last.pt"},
    ]:
        events.apply(st, ev)
    assert st.fraction == 0.5 and st.preview_path.endswith("step_000005.png") and st.engine_version == "0.1.0"
    assert not st.finished  # only the process exit makes it final
    events.apply(st, {"event": "_exit", "returncode": 0})
    assert st.succeeded and st.asset["glb"] == "/r/asset/asset.glb"
    assert events.format_seconds(65) == "1m05s"


def test_events_crash_killed_and_done_then_failure():
    st = events.apply(events.RunState(), {"event": "_exit", "returncode": 1, "stderr_tail": "Traceback\nZeroDivisionError: boom"})
    assert st.status == "failed" and "ZeroDivisionError: boom" in st.message and "code 1" in st.message
    st = events.apply(events.RunState(), {"event": "_exit", "returncode": -9})
    assert st.status == "failed" and "SIGKILL" in st.message
    st = events.RunState()
    events.apply(st, {"event": "done", "run_dir": "/r", "asset": {"glb": "/r/a.glb"}})
    events.apply(st, {"event": "_exit", "returncode": 1})
    assert not st.succeeded and st.status == "failed"
    assert events.parse_line("not json")["event"] == "_stray"


def test_worker_reads_events_and_stray_lines():
    w = Worker(fake_engine("""
        emit(event="start", run_dir=None, engine_version="9", device="cpu", config={})
        print("some library chatter", flush=True)
        for i in range(1, 4):
            emit(event="progress", stage="train", step=i, total=3, eta_s=3 - i)
        emit(event="done", run_dir="/r", asset={"glb": "/r/a.glb"}, checkpoint=None)
    """)).start()
    seen = []
    st = w.wait(timeout=30, on_event=lambda ev, s: seen.append(ev["event"]))
    assert st.succeeded, st
    assert seen.count("progress") == 3 and seen[-1] == "_exit" and st.stray_lines == ["some library chatter"]


def test_worker_error_event_message_is_kept():
    w = Worker(fake_engine("""
        emit(event="error", kind="model", message="model folder /nope does not exist", run_dir=None)
        sys.exit(3)
    """)).start()
    st = w.wait(timeout=30)
    assert st.status == "failed" and st.error_kind == "model" and st.message == "model folder /nope does not exist"


def test_worker_crash_without_events_reports_stderr():
    w = Worker(fake_engine("""
        emit(event="progress", stage="train", step=1, total=9)
        raise RuntimeError("CUDA driver exploded")
    """)).start()
    st = w.wait(timeout=30)
    assert st.status == "failed" and "CUDA driver exploded" in st.message and "code 1" in st.message


def test_worker_that_cannot_start():
    w = Worker(["/definitely/not/a/python", "-m", "engine"]).start()
    st = w.wait(timeout=5)
    assert st.status == "failed" and "cannot start the engine" in st.message and "Set up engine" in st.message


def test_worker_killed_is_an_error_not_a_hang():
    w = Worker(fake_engine("""
        emit(event="progress", stage="train", step=1, total=9)
        time.sleep(60)
    """)).start()
    assert w.next_event(30)["event"] == "progress"
    os.kill(w.pid, signal.SIGKILL)
    st = w.wait(timeout=30)
    assert st.status == "failed" and "SIGKILL" in st.message


def test_worker_cancel_uses_cancel_file_and_signal(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    # Honours the CANCEL file (not SIGINT) the way the engine does, then exits 130.
    w = Worker(fake_engine(f"""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        emit(event="start", run_dir={str(run)!r}, engine_version="9", device="cpu", config={{}})
        for i in range(600):
            if os.path.exists(os.path.join({str(run)!r}, "CANCEL")):
                emit(event="cancelled", run_dir={str(run)!r}, step=i, checkpoint=None)
                sys.exit(130)
            emit(event="progress", stage="train", step=i, total=600)
            time.sleep(0.05)
    """)).start()
    while w.state.status != "running":
        w.next_event(10)
    w.cancel()
    st = w.wait(timeout=30)
    assert st.status == "cancelled" and st.returncode == 130 and (run / "CANCEL").exists()


def test_job_manager_refuses_a_second_job():
    m = JobManager()
    long = fake_engine("time.sleep(30)")
    job = m.start(Job("generate", Worker(long), label="a"))
    with pytest.raises(Busy, match="already running"):
        m.start(Job("generate", Worker(long), label="b"))
    job.worker.kill()
    job.worker.wait(timeout=10)
    assert not m.busy
    m.start(Job("check", Worker(fake_engine("pass")))).worker.wait(timeout=10)


def test_engine_command_lines():
    req = engine_cli.GenerateRequest(prompt="a mug", out="/o", model="builtin:shapes", preset="draft", seed=0,
                                     steps=None, guidance_scale=None, texture_size=128, device="auto")
    argv = engine_cli.generate_argv("py", req)
    assert argv[:5] == ["py", "-m", "engine", "generate", "--prompt=a mug"]
    assert "--seed=0" in argv and not any(a.startswith(("--steps", "--device")) for a in argv)
    assert argv[-2:] == ["--json-events", "--no-progress"]
    assert engine_cli.resume_argv("py", "/r")[3:5] == ["generate", "--resume=/r"]
    env = engine_cli.worker_env({"PYTHONHOME": "/blender/python", "PATH": "/bin"})
    assert "PYTHONHOME" not in env and Path(env["PYTHONPATH"], "engine", "__main__.py").is_file()


def test_provenance_reads_the_run_folder(tmp_path):
    (tmp_path / "config.json").write_text('{"prompt": "a mug", "seed": 3, "model": "m", "preset": "draft", "steps": 4, "guidance_scale": null}')
    (tmp_path / "events.jsonl").write_text('{"event": "start", "engine_version": "1.2.3"}\n')
    props = provenance.collect(str(tmp_path))
    assert props["prompt"] == "a mug" and props["engine_version"] == "1.2.3" and "guidance_scale" not in props
    assert len(provenance.object_name("é" * 100).encode()) <= 60


def test_engine_setup_reports_the_failing_step(tmp_path):
    """The "Set up engine" path end to end, offline: venv creation works, pip's failure is reported."""
    req = tmp_path / "requirements.txt"
    req.write_text("dreamfusion-package-that-does-not-exist==0.0.1\n")
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    setup = engine_env.EngineSetup(tmp_path / "venv", requirements=req, env=env).start()
    st = setup.wait(timeout=240)
    assert not st.running and st.ok is False, st
    assert st.message.startswith("step 2/3 failed") and "dreamfusion-package-that-does-not-exist" in st.message
    assert engine_cli.venv_python(tmp_path / "venv").is_file()  # step 1 did its job
