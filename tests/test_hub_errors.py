"""Issue 27: every way a hub model can fail gives a `model` error (exit code 3) that names the cause and
the known alternatives, with nothing written: a removed id from the table (before any request, naming
its replacement), 404, 401 (private), 403 (forbidden token), a gated repo without / with a refused
token, a repo without the SDS components, and no network. Against tests/fake_hub.py on 127.0.0.1.

One subprocess runs every download case (HF_ENDPOINT is read when huggingface_hub is imported) and
the hub-id loading cases of guidance.py, to keep this unit-sized."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fake_hub
from engine import models

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_FAKEgatedToken55555"

DRIVER = r"""
import contextlib, io, json, os, sys
from pathlib import Path
import huggingface_hub.constants as C
from engine.cli import main
cases, out_root, closed = json.loads(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
results, timings = {}, {}
import time
for name, repo, token, kind in cases:
    started = time.perf_counter()
    os.environ.pop("HF_TOKEN", None)
    if token:
        os.environ["HF_TOKEN"] = token
    out = out_root / name
    buf = io.StringIO()
    if kind == "download":
        saved = C.ENDPOINT
        if name == "no-network":
            C.ENDPOINT = closed
        with contextlib.redirect_stdout(buf):
            rc = main(["download", repo, "--out", str(out), "--json-events", "--no-progress"])
        C.ENDPOINT = saved
        events = [json.loads(l) for l in buf.getvalue().splitlines() if l.startswith("{")]
        results[name] = dict(rc=rc, last=events[-1], written=sorted(str(p) for p in out.rglob("*")) if out.exists() else [])
    else:
        import torch
        from engine.errors import ModelError
        from engine.guidance import Guidance
        try:
            Guidance(repo, torch.device("cpu"), torch.float32)
            results[name] = dict(message=None)
        except ModelError as exc:
            results[name] = dict(message=str(exc), kind=exc.kind, code=exc.exit_code)
    timings[name] = round(time.perf_counter() - started, 2)
print("TIMINGS " + json.dumps(timings), file=sys.stderr)
print("RESULTS " + json.dumps(results))
"""


@pytest.fixture(scope="module")
def results(tiny_pixel_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("huberr")
    nosds = base / "nosds"  # a hub repo that is not a diffusers text-to-image model
    nosds.mkdir()
    (nosds / "README.md").write_text("a LoRA, say")
    (nosds / "pytorch_lora_weights.safetensors").write_bytes(b"x" * 100)
    removed = next(m["id"] for m in models.load()["models"] if m["status"] == "removed")
    cases = [("removed-id", removed, None, "download"), ("404", "acme/gone", None, "download"),
             ("401", "acme/private", None, "download"), ("403", "acme/forbidden", TOKEN, "download"),
             ("gated-no-token", "acme/gated", None, "download"), ("gated-refused", "acme/gated", "hf_wrong", "download"),
             ("no-sds", "acme/lora", None, "download"), ("no-network", "acme/gated", None, "download"),
             ("load-404", "acme/gone", None, "load"), ("load-gated", "acme/gated", None, "load")]
    with fake_hub.FakeHub({"acme/gated": tiny_pixel_model, "acme/lora": nosds}, gated={"acme/gated": TOKEN},
                          refuse={"acme/gone": 404, "acme/private": 401, "acme/forbidden": 403}) as hub:
        env = dict(os.environ, HF_ENDPOINT=hub.url, HF_HOME=str(base / "hf-home"), PYTHONPATH=str(ROOT),
                   HF_HUB_OFFLINE="0", TRANSFORMERS_OFFLINE="0", HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_ETAG_TIMEOUT="5")
        env.pop("HF_TOKEN", None)
        done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(cases), str(base / "out"), "http://127.0.0.1:9"],
                              env=env, capture_output=True, text=True, timeout=240)
        requests = list(hub.requests)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULTS ")), None)
    assert line, done.stdout[-2000:] + done.stderr[-3000:]
    out = json.loads(line[len("RESULTS "):])
    if os.environ.get("SHOW_HUB_MESSAGES"):
        print(json.dumps(out, indent=1), done.stderr[-3000:])
    return out, requests, removed


def _model_error(r: dict) -> str:
    assert r["rc"] == 3 and r["last"]["kind"] == "model", r
    assert r["written"] == [], f"nothing may be written: {r['written']}"
    msg = r["last"]["message"]
    assert models.default_model() in msg and "builtin:shapes" in msg, msg  # the known alternatives
    return msg


def test_removed_id_names_its_replacement_before_any_request(results):
    res, requests, removed = results
    msg = _model_error(res["removed-id"])
    replacement = models.entry(removed)["replaced_by"]
    assert "no longer exists" in msg and (replacement is None or f"Replaced by {replacement}" in msg)
    assert "never substitutes" in msg
    assert not any(removed.split("/")[1] in path for _, path, _ in requests)  # the hub was never asked


def test_404_401_403_each_say_their_cause(results):
    res, _, _ = results
    m404, m401, m403 = (_model_error(res[k]) for k in ("404", "401", "403"))
    assert "acme/gone was not found" in m404 and "HTTP 404" in m404 and "mistyped" in m404 and "removed" in m404
    assert "HTTP 401" in m401 and "private" in m401 and "access token" in m401
    assert "refused access" in m403 and "HTTP 403" in m403 and "permission" in m403


def test_gated_repo_says_accept_the_licence_and_set_the_token(results):
    res, requests, _ = results
    none, refused = _model_error(res["gated-no-token"]), _model_error(res["gated-refused"])
    for msg in (none, refused):
        assert "is gated" in msg and "accept its licence" in msg and "Hub token" in msg and "HF_TOKEN" in msg
        assert "https://huggingface.co/acme/gated" in msg
    assert "HTTP 401" in none and "No token was sent" in none
    assert "HTTP 403" in refused and "token was sent and refused" in refused
    assert TOKEN not in none + refused and "hf_wrong" not in refused  # a token is never echoed


def test_repo_without_sds_components_and_no_network(results):
    res, _, _ = results
    nosds = _model_error(res["no-sds"])
    assert "not a diffusers text-to-image model" in nosds and "missing unet" in nosds
    offline = _model_error(res["no-network"])
    assert "could not reach the model hub" in offline and "no network" in offline


def test_loading_a_hub_id_directly_gives_the_same_causes(results):
    res, _, _ = results
    gone, gated = res["load-404"], res["load-gated"]
    assert gone["kind"] == "model" and gone["code"] == 3 and "acme/gone was not found" in gone["message"], gone
    assert "is gated" in gated["message"] and "accept its licence" in gated["message"], gated
    assert models.default_model() in gone["message"]


def test_resolve_model_refuses_every_removed_id_offline():
    from engine.errors import ModelError
    from engine.guidance import resolve_model

    for m in models.load()["models"]:
        if m["status"] != "removed":
            continue
        with pytest.raises(ModelError) as err:
            resolve_model(m["id"].upper())  # the hub ignores case, so does the table
        msg = str(err.value)
        assert "no longer exists" in msg and all(a in msg for a in m["alternatives"]), msg
        assert m["replaced_by"] is None or m["replaced_by"] in msg
