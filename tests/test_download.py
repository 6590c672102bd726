"""engine download against a fake hub on 127.0.0.1 (HF_ENDPOINT; never the network): only what SDS
needs, fp16 variant renamed to the names the loader reads, the token only from the environment and
never echoed, offline refused before any request, and the result loads through the engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fake_hub
from engine.download import plain_name, select_files

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_FAKEtoken1234567890"


def test_select_files_takes_configs_and_fp16_safetensors_only():
    sizes = {f: 1 for f in [
        "model_index.json", "README.md", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors", "unet/diffusion_pytorch_model.bin",
        "unet/diffusion_pytorch_model.non_ema.safetensors", "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/config.json", "text_encoder/model.fp16-00001-of-00002.safetensors",
        "text_encoder/model.fp16-00002-of-00002.safetensors", "text_encoder/model.safetensors.index.fp16.json",
        "text_encoder/model.safetensors", "tokenizer/vocab.json", "tokenizer/merges.txt",
        "scheduler/scheduler_config.json", "safety_checker/model.safetensors", "feature_extractor/preprocessor_config.json",
    ]}
    got = select_files(sizes)
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in got and "unet/diffusion_pytorch_model.safetensors" not in got
    assert "vae/diffusion_pytorch_model.safetensors" in got  # no fp16 variant there: the plain weights
    assert {"text_encoder/model.fp16-00001-of-00002.safetensors", "text_encoder/model.safetensors.index.fp16.json"} <= set(got)
    assert not any(f.endswith(".bin") or "non_ema" in f or "safety_checker" in f or "feature_extractor" in f
                   or f == "README.md" or f == "text_encoder/model.safetensors" for f in got)
    assert plain_name("text_encoder/model.fp16-00001-of-00002.safetensors") == "text_encoder/model-00001-of-00002.safetensors"
    assert plain_name("text_encoder/model.safetensors.index.fp16.json") == "text_encoder/model.safetensors.index.json"


@pytest.fixture(scope="module")
def hub_repo(tiny_pixel_model, tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("hub") / "repo"
    fake_hub.make_repo(str(tiny_pixel_model), str(repo))
    return repo


def _download(hub, out: Path, token: str | None, offline: bool = False, repo: str = "acme/tiny-sd"):
    env = dict(os.environ, HF_ENDPOINT=hub.url, HF_HOME=str(out.parent / "hf-home"), PYTHONPATH=str(ROOT),
               HF_HUB_OFFLINE="1" if offline else "0", HF_HUB_DISABLE_TELEMETRY="1")
    env.pop("HF_TOKEN", None)
    if token:
        env["HF_TOKEN"] = token
    done = subprocess.run([sys.executable, "-m", "engine", "download", repo, "--out", str(out), "--json-events",
                           "--no-progress"], env=env, capture_output=True, text=True, timeout=120)
    events = [json.loads(ln) for ln in done.stdout.splitlines() if ln.startswith("{")]
    return done, events


def test_download_from_fake_hub(hub_repo, tmp_path):
    out = tmp_path / "models"
    with fake_hub.FakeHub({"acme/tiny-sd": hub_repo}, gated={"acme/tiny-sd": TOKEN}) as hub:
        # Gated without a token: a clear error, nothing written.
        done, events = _download(hub, out, token=None)
        assert done.returncode == 3 and events[-1]["kind"] == "model" and "token" in events[-1]["message"]
        assert not out.exists() or not any(out.iterdir())
        # Offline: refused before any request.
        before = len(hub.requests)
        done, events = _download(hub, out, token=TOKEN, offline=True)
        assert done.returncode == 2 and events[-1]["kind"] == "offline" and len(hub.requests) == before
        done, events = _download(hub, out, token=TOKEN)
        assert done.returncode == 0, done.stderr
        fetched = {path.split("/resolve/")[1].split("/", 1)[1] for m, path, _ in hub.requests if m == "GET" and "/resolve/" in path}
        authed = {auth for _, path, auth in hub.requests if "/acme/" in path}
    assert authed == {None, f"Bearer {TOKEN}"}  # the first (refused) try had none
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in fetched and "text_encoder/model.fp16.safetensors" in fetched
    assert not any(f.endswith(".bin") or "non_ema" in f or "safety_checker" in f or f == "README.md"
                   or f == "unet/diffusion_pytorch_model.safetensors" for f in fetched)
    plan = next(e for e in events if e["event"] == "plan")
    assert plan["fp16_variant"] and plan["bytes_total"] == sum((hub_repo / f).stat().st_size for f in fetched)
    last = [e for e in events if e["event"] == "progress"][-1]
    assert last["stage"] == "download" and last["bytes_done"] == last["bytes_total"] == plan["bytes_total"]
    model = out / "acme--tiny-sd"
    assert events[-1]["event"] == "done" and events[-1]["model_dir"] == str(model)
    assert (model / "dreamfusion-download.json").is_file() and not (out / "acme--tiny-sd.partial").exists()
    unet = model / "unet" / "diffusion_pytorch_model.safetensors"  # renamed: the fp16 file under the plain name
    assert unet.stat().st_size == (hub_repo / "unet" / "diffusion_pytorch_model.fp16.safetensors").stat().st_size
    everything = done.stdout + done.stderr + "".join(p.read_text(errors="replace") for p in model.rglob("*.json"))
    assert TOKEN not in everything
    # The engine loads it (fp16 weights into its own dtype) as a local folder, without the hub.
    import torch

    from engine.guidance import Guidance

    g = Guidance(str(model), torch.device("cpu"), torch.float32)
    assert next(g.unet.parameters()).dtype == torch.float32
    # A second download is a no-op; a hub id that does not exist is a model error.
    with fake_hub.FakeHub({"acme/tiny-sd": hub_repo}) as hub:
        done, events = _download(hub, out, token=None)
        assert done.returncode == 0 and events[-1].get("already_present") and hub.requests == []
        done, events = _download(hub, out, token=None, repo="acme/missing")
        assert done.returncode == 3 and "not found" in events[-1]["message"]


def test_download_bad_input(tmp_path):
    done = subprocess.run([sys.executable, "-m", "engine", "download", "not a hub id", "--out", str(tmp_path), "--json-events"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, env=dict(os.environ, HF_HUB_OFFLINE="0"))
    assert done.returncode == 2 and "not a hub id" in done.stdout
    (tmp_path / "acme--x").mkdir()  # something that is not a finished download: never overwritten
    done = subprocess.run([sys.executable, "-m", "engine", "download", "acme/x", "--out", str(tmp_path), "--json-events"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, env=dict(os.environ, HF_HUB_OFFLINE="0"))
    assert done.returncode == 2 and "move it away" in done.stdout
