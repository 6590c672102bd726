"""``python -m engine batch --ray``: a local Ray cluster (2 CPUs, no dashboard, started once for the
module) runs a batch of 4 good prompts and 1 bad one with builtin:shapes at tiny settings. The Ray
worker running "a red cube" is killed (SIGKILL, a system failure) as soon as its task starts: Ray
retries it and all 4 assets come back through the object store; the bad prompt's engine exits with
"bad input", which is a failed prompt, not retried; a re-run skips all 4. A second batch with
--shared-out resumes a run folder that a dead worker left with a checkpoint."""

from __future__ import annotations

import json
import os
import signal

import pytest

from batch_helpers import BAD, GOOD, TINY, assert_resumed, is_glb, leave_checkpointed_run, of, run_batch_live, write_prompts
from engine.batch.prompts import job_id

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    ctx = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ctx.address_info["gcs_address"]
    ray.shutdown()


@pytest.fixture(scope="module")
def batch(cluster, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ray-batch")
    prompts = write_prompts(tmp / "prompts.txt", [GOOD[0], BAD, *GOOD[1:]])
    out = tmp / "out"
    killed = []

    def kill_worker(ev, _):
        if ev["event"] == "task_started" and ev["prompt"] == GOOD[0] and not killed:
            killed.append(ev["pid"])
            os.kill(ev["pid"], signal.SIGKILL)  # the Ray worker process, not just the engine

    rc, events, err = run_batch_live([str(prompts), "--out", str(out), "--ray", cluster, *TINY], kill_worker)
    return dict(rc=rc, events=events, err=err, out=out, killed=killed, prompts=prompts,
                manifest=json.loads((out / "batch.json").read_text()))


def test_all_four_assets_come_back_with_their_run_folders(batch):
    out, jobs = batch["out"], batch["manifest"]["jobs"]
    assert batch["rc"] == 8, batch["err"][-3000:]  # one prompt failed
    for prompt in GOOD:
        rec = jobs[job_id(prompt)]
        assert rec["status"] == "done" and is_glb(out / rec["glb"]), rec
        run = out / rec["run_dir"]  # sent back through the object store and unpacked here
        assert run.parent == out / "runs" / job_id(prompt)
        cfg = json.loads((run / "config.json").read_text())
        assert cfg["prompt"] == prompt and cfg["steps"] == 2
        assert (run / "log.txt").is_file() and list((run / "previews").glob("*.png")) and is_glb(run / "asset" / "asset.glb")
        assert of(json.loads("[" + ",".join((run / "events.jsonl").read_text().split("\n")[:-1]) + "]"), "done")
        assert not (run / "checkpoints").exists()  # optional (--keep-checkpoints): left on the worker
    done = of(batch["events"], "batch_done")[0]
    assert (done["done"], done["failed"], done["skipped"]) == (4, 1, 0)


def test_a_killed_worker_is_retried(batch):
    jobs, events = batch["manifest"]["jobs"], batch["events"]
    starts = of(events, "task_started", job=job_id(GOOD[0]))
    assert batch["killed"] and len(starts) == 2 and starts[0]["pid"] == batch["killed"][0]
    assert starts[1]["pid"] != starts[0]["pid"] and starts[1]["attempt"] == 2
    assert jobs[job_id(GOOD[0])]["attempts"] == 2 and jobs[job_id(GOOD[0])]["status"] == "done"
    with pytest.raises(ProcessLookupError):
        os.kill(starts[0]["engine_pid"], 0)  # the dead worker's engine went with it
    assert all(jobs[job_id(p)]["attempts"] == 1 for p in GOOD[1:])


def test_a_bad_input_exit_is_a_failed_prompt_not_retried(batch):
    rec = batch["manifest"]["jobs"][job_id(BAD)]
    assert rec["status"] == "failed" and rec["exit_code"] == 2 and rec["kind"] == "input" and rec["attempts"] == 1
    assert "characters long" in rec["message"]
    assert len(of(batch["events"], "task_started", job=job_id(BAD))) == 1
    (failed,) = of(batch["events"], "task_failed")
    assert failed["job"] == job_id(BAD)


def test_a_rerun_skips_all_four(batch, cluster):
    out = batch["out"]
    glbs = {p: p.stat().st_mtime_ns for p in out.glob("*.glb")}
    prompts = write_prompts(batch["prompts"].with_name("again.txt"), list(reversed(GOOD)))
    rc, events, err = run_batch_live([str(prompts), "--out", str(out), "--ray", cluster, *TINY])
    assert rc == 0, err[-3000:]
    assert not of(events, "task_started") and of(events, "batch_done")[0]["skipped"] == 4
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.glb")} == glbs


def test_shared_out_resumes_what_a_dead_worker_left(cluster, tmp_path):
    """--shared-out: the engine writes in --out itself, so a retry finds the last checkpoint there."""
    out = tmp_path / "out"
    left = leave_checkpointed_run(out, GOOD[1])
    prompts = write_prompts(tmp_path / "prompts.txt", [GOOD[1]])
    rc, events, err = run_batch_live([str(prompts), "--out", str(out), "--ray", cluster, "--shared-out", *TINY])
    assert rc == 0, err[-3000:]
    assert_resumed(events, left, out, GOOD[1])
