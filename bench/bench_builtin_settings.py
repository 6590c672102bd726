"""Benchmark (not a test): training time of the builtin prior's SDS run with and without extra settings,
side by side in one process, interleaved so both see the same machine load.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_builtin_settings.py \
        --base-set normal_smooth_weight=0 --rounds 2

Each round trains "a red cube" (seed 0, the prior's dreamfusion.json, export off) once with the
prior's settings plus ``--base-set`` and once with them plus ``--set``; prints seconds per run, the
ratio, and the load average. Training only: the export does not depend on these settings.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from engine import cli  # noqa: E402


def one_run(out: str, extra: list[str], steps: int | None) -> float:
    steps_args = ["--steps", str(steps)] if steps else []
    t0 = time.perf_counter()
    code = cli.main(["generate", "a red cube", "--model", "builtin:shapes", "--device", "cpu", "--seed", "0",
                     "--out", out, "--no-export", "--no-progress", *steps_args, *extra])
    if code != 0:
        raise SystemExit(f"run failed ({code}) with {extra}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="the settings timed against the base")
    ap.add_argument("--base-set", action="append", default=[], metavar="KEY=VALUE", help="the base: the prior's settings plus these")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=None, help="default: the prior's run length")
    args = ap.parse_args()
    extra = [a for kv in args.set for a in ("--set", kv)]
    base_extra = [a for kv in args.base_set for a in ("--set", kv)]
    base_label = " ".join(args.base_set) or "the prior's settings"
    new_label = " ".join(args.set) or "the prior's settings"
    load = lambda: os.getloadavg()[0]  # noqa: E731
    base, new = [], []
    with tempfile.TemporaryDirectory() as tmp:
        one_run(f"{tmp}/warm", extra, 2)  # imports, model load, first-call costs: not timed
        print(f"load before {load():.2f}")
        for r in range(args.rounds):
            base.append(one_run(f"{tmp}/b{r}", base_extra, args.steps))
            new.append(one_run(f"{tmp}/n{r}", extra, args.steps))
            print(f"round {r}: base ({base_label}) {base[-1]:.1f} s, with {new_label} {new[-1]:.1f} s, load {load():.2f}")
    print(f"mean {sum(base) / len(base):.1f} s vs {sum(new) / len(new):.1f} s: ratio {sum(new) / sum(base):.2f}")


if __name__ == "__main__":
    main()
