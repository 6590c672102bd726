"""The model manager, online access and the hub token in headless Blender: a download from a fake hub on
127.0.0.1 (HF_ENDPOINT; never the network) with progress, listed with its size, used instead of the hub
id, deleted; with online access off nothing is installed or downloaded, the engine runs offline and
the panel says what is needed; the token reaches the engine only through its environment."""

from __future__ import annotations

import os
import subprocess

import pytest

import test_addon_helpers as H

import bpy  # noqa: E402

import fake_hub  # noqa: E402
from dreamfusion_blender import model_store, prefs, runner  # noqa: E402
from dreamfusion_blender.jobs import MANAGER  # noqa: E402

TOKEN = "hf_FAKEaddonToken987654321"
REPO = "acme/tiny-sd"


@pytest.fixture(scope="module")
def hub_repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("hub") / "repo"
    code = f"import fake_hub; fake_hub.make_repo({str(H.tiny_model())!r}, {str(repo)!r})"
    subprocess.run([H.engine_python(), "-c", code], cwd=H.ROOT / "tests", check=True, capture_output=True, timeout=300)
    return repo


@pytest.fixture
def addon(tmp_path, monkeypatch):
    pr = H.enable_addon()
    pr.python_path, pr.device, pr.model, pr.hub_token = "", "CPU", REPO, TOKEN
    pr.models_dir = str(tmp_path / "models")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    system = bpy.context.preferences.system
    saved = system.use_online_access
    yield pr
    system.use_online_access = saved
    pr.hub_token, pr.models_dir = "", ""


def test_offline_means_no_pip_no_hub_and_an_offline_engine(addon, hub_repo, monkeypatch):
    bpy.context.preferences.system.use_online_access = False
    assert bpy.app.online_access is False and not prefs.online()
    with fake_hub.FakeHub({REPO: hub_repo}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        with pytest.raises(RuntimeError, match="Allow Online Access"):  # an ERROR report, and no pip
            bpy.ops.dreamfusion.setup_engine()
        assert prefs.SETUP is None
        with pytest.raises(RuntimeError, match="Allow Online Access"):
            bpy.ops.dreamfusion.download_model(wait=True)
        env = prefs.engine_environment()
        assert env["HF_HUB_OFFLINE"] == "1" and "HF_TOKEN" not in env  # offline engine, no token to leak
        # A generation with a hub model that is not on disk fails in the engine, offline, without traffic.
        bpy.ops.wm.read_homefile(use_empty=True)
        bpy.context.scene.dreamfusion.prompt = "a red cube"
        runner.BLOCK_IN_BACKGROUND = True
        bpy.ops.dreamfusion.generate()
        st = MANAGER.current.state
        assert st.status == "failed" and st.error_kind == "model" and "offline" in st.message, st.message
        assert hub.requests == []
    # The panel says what is needed.
    from test_addon_register import _FakeLayout
    from dreamfusion_blender import panel

    calls = []
    panel.VIEW3D_PT_dreamfusion.draw(type("H", (), {"layout": _FakeLayout(calls)})(), bpy.context)
    texts = [c[2].get("text", "") for c in calls if c[0] == "label"]
    assert any("Offline" in t and REPO in t for t in texts) and any("builtin:shapes" in t for t in texts)


def test_download_list_use_and_delete(addon, hub_repo, monkeypatch):
    bpy.context.preferences.system.use_online_access = True
    with fake_hub.FakeHub({REPO: hub_repo}, gated={REPO: TOKEN}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        assert bpy.ops.dreamfusion.download_model.poll()
        assert bpy.ops.dreamfusion.download_model(wait=True) == {"FINISHED"}, MANAGER.current.state.message
        job = MANAGER.current
        assert job.kind == "download" and job.state.succeeded
        assert job.worker.env["HF_TOKEN"] == TOKEN and not any(TOKEN in a for a in job.worker.argv)
        assert {a for _, path, a in hub.requests if "/acme/" in path} == {f"Bearer {TOKEN}"}
    assert job.state.stage == "download" and job.state.step == job.state.total  # progress in MB, complete
    models = model_store.local_models(prefs.models_dir())
    assert [(m.name, m.complete) for m in models] == [(REPO, True)] and models[0].size_bytes > 100_000
    assert "MB" in models[0].size_text or "KB" in models[0].size_text
    local = str(models[0].path)
    assert prefs.settings().model == local  # the engine gets the folder: no hub needed any more
    done = subprocess.run(job.worker.argv[:1] + ["-m", "engine", "check", "--model", local, "--json-events"],
                          env=prefs.engine_environment(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    # Delete: only folders the manager made.
    outside = H.ROOT / "tests"
    with pytest.raises(ValueError):
        model_store.delete(prefs.models_dir(), outside)
    from dreamfusion_blender.jobs import Job
    from dreamfusion_blender.worker import Worker

    saved, MANAGER.current = MANAGER.current, Job("generate", Worker(["never-started"]))  # counts as running
    try:
        with pytest.raises(RuntimeError, match="job is running"):
            bpy.ops.dreamfusion.delete_model("EXEC_DEFAULT", path=local)
    finally:
        MANAGER.current = saved
    assert os.path.isdir(local)
    assert bpy.ops.dreamfusion.delete_model("EXEC_DEFAULT", path=local) == {"FINISHED"}
    assert model_store.local_models(prefs.models_dir()) == [] and prefs.settings().model == REPO
    assert os.path.isdir(outside)
