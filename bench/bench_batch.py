"""Benchmark (not a test): batch throughput on this machine with 1 and 2 local workers (and, with
--ray, a local 2-CPU Ray cluster), builtin:shapes at the tests' tiny settings, run side by side.

Each configuration makes the same N prompts into a fresh --out through the real CLI
(``python -m engine batch``); the figure is prompts per minute of wall time, with the load average
before and after each run, because on a shared machine only the ratio between rows means anything.

    .venv/bin/python bench/bench_batch.py                 # 4 prompts, workers 1 and 2
    .venv/bin/python bench/bench_batch.py --ray --prompts 6 --repeats 2
Writes bench/results/batch-cpu.json unless --no-write.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from batch_helpers import TINY  # noqa: E402  (the same tiny settings as the tests)

PROMPTS = [f"a {c} {s}" for s in ("cube", "sphere", "cylinder", "cone", "torus") for c in ("red", "green", "blue", "yellow")]


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def run(prompts_file: Path, out: Path, extra: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    env.pop("OMP_NUM_THREADS", None)  # the batch splits the cores between its CPU workers itself
    before = load()
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "engine", "batch", str(prompts_file), "--out", str(out), "--device", "cpu",
                           "--json-events", "--no-progress", *TINY, *extra], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    events = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    done = [e for e in events if e["event"] == "batch_done"]
    if proc.returncode != 0 or not done:
        raise SystemExit(f"batch {extra} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    per_task = [e["seconds"] for e in events if e["event"] == "task_done"]
    return dict(wall_s=round(wall, 1), prompts=done[0]["done"], per_prompt_mean_s=round(sum(per_task) / len(per_task), 1),
                prompts_per_min=round(60 * done[0]["done"] / wall, 2), load_before=before, load_after=load())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=1, help="rounds; the configurations alternate within a round")
    ap.add_argument("--ray", action="store_true", help="also a local Ray cluster with 2 CPUs (needs ray)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    configs = {"local, 1 worker": ["--workers", "1"], "local, 2 workers": ["--workers", "2"]}
    ray = None
    if args.ray:
        import ray

        ctx = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        configs["ray, 2 CPUs"] = ["--ray", ctx.address_info["gcs_address"]]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        prompts_file = Path(tmp) / "prompts.txt"
        prompts_file.write_text("\n".join(PROMPTS[: args.prompts]) + "\n")
        for r in range(args.repeats):
            for name, extra in configs.items():
                res = run(prompts_file, Path(tmp) / f"out-{r}-{len(rows)}", extra)
                rows.append(dict(config=name, round=r, **res))
                print(f"{name:18s} {res['prompts']} prompts in {res['wall_s']:6.1f} s = {res['prompts_per_min']:5.2f}/min "
                      f"(mean {res['per_prompt_mean_s']} s a prompt; load {res['load_before']} -> {res['load_after']})", flush=True)
    if ray is not None:
        ray.shutdown()
    base = [r["prompts_per_min"] for r in rows if r["config"] == "local, 1 worker"]
    print("\n| configuration | prompts/min (each round) | vs 1 worker |\n| --- | --- | --- |")
    for name in configs:
        mine = [r["prompts_per_min"] for r in rows if r["config"] == name]
        ratio = sum(m / b for m, b in zip(mine, base)) / len(mine)
        print(f"| {name} | {', '.join(map(str, mine))} | {ratio:.2f}x |")
    if not args.no_write:
        out = ROOT / "bench" / "results" / "batch-cpu.json"
        out.write_text(json.dumps(dict(date=datetime.datetime.now().isoformat(timespec="minutes"), cpus=os.cpu_count(),
                                       settings=TINY, rows=rows), indent=2) + "\n")
        print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
