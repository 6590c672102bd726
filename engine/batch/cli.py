"""``python -m engine batch PROMPTS_FILE --out DIR``: registered on the engine's CLI by ``add_parser``.

Every ``generate`` option that describes the asset (--model, --preset, --steps, --seed, --set, ...) is
taken over from the generate parser itself and passed to each prompt's engine, so the two commands
never drift apart.
"""

from __future__ import annotations

import argparse

from ..config import JobConfig, build_config, parse_set_option
from .prompts import HELP as PROMPTS_HELP

# generate's options that are not the asset's: the batch sets these itself per prompt
NOT_FORWARDED = {"help", "prompt", "prompt_opt", "out", "resume", "json_events", "no_progress", "device", "no_export"}


def add_parser(sub) -> None:
    """Add the ``batch`` subcommand; ``generate`` must be registered first."""
    generate = sub.choices["generate"]
    b = sub.add_parser("batch", help="generate many prompts, on this machine or a Ray cluster (docs/CLUSTER.md)",
                       description="Generate one asset per prompt. Without --ray: this machine, one worker per GPU "
                                   "(or one on the CPU). With --ray: one Ray task per prompt on an existing cluster.")
    b.add_argument("prompts_file", metavar="PROMPTS_FILE", help=PROMPTS_HELP)
    b.add_argument("--out", required=True, help="batch folder: <job>.glb files, runs/, batch.json manifest, batch-events.jsonl")
    b.add_argument("--workers", type=int, help="prompts at once (default: one per GPU, 1 on the CPU; with --ray: no cap)")
    b.add_argument("--device", help="auto (default: the GPUs, else the CPU) | cpu | cuda | cuda:N (this machine); "
                                    "with --ray: cpu asks for no GPU, cuda for the task's GPU")
    b.add_argument("--ray", metavar="auto|ADDRESS", help="run on a Ray cluster: auto (one on this machine) or the head's HOST:PORT")
    b.add_argument("--shared-out", action="store_true",
                   help="--ray: workers see --out at the same path (e.g. NFS): they write run folders there, and retries resume")
    b.add_argument("--gpus-per-task", type=float, help="--ray: GPUs per prompt (default: 1 if the cluster has GPUs, else 0)")
    b.add_argument("--cpus-per-task", type=float, default=1.0, help="--ray: CPUs per prompt (default 1)")
    b.add_argument("--max-retries", type=int, default=3, help="attempts after a worker or engine dies (default 3)")
    b.add_argument("--keep-checkpoints", action="store_true", help="--ray without --shared-out: also send checkpoints back")
    b.add_argument("--no-ship-engine", action="store_true",
                   help="--ray: workers already have this engine installed; do not send its code with the tasks")
    b.add_argument("--json-events", action="store_true", help="write the batch's events (JSON lines) to stdout")
    b.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    engine_opts = b.add_argument_group("engine settings for every prompt (as for generate)")
    for action in generate._actions:  # argparse has no public way to share a subparser's options
        if action.dest not in NOT_FORWARDED and action.option_strings:
            engine_opts._add_action(action)
    b.set_defaults(_forwarded=[a for a in generate._actions if a.dest not in NOT_FORWARDED and a.option_strings])


def forwarded_argv(args) -> tuple[list[str], dict]:
    """The generate options given, as argv for the engine and as a dict for the manifest."""
    argv, settings = [], {}
    for action in args._forwarded:
        value = getattr(args, action.dest)
        if value is None or value is False or value == [] or value == action.default:
            continue
        flag = next(s for s in action.option_strings if s.startswith("--"))
        settings[action.dest] = value
        # FLAG=VALUE as one item: a value that starts with "-" (a negative prompt "-blurry") stays a value
        if isinstance(action, argparse._StoreTrueAction):
            argv.append(flag)
        elif isinstance(action, argparse._AppendAction):
            argv += [f"{flag}={item}" for item in value]
        else:
            argv.append(f"{flag}={value}")
    return argv, settings


def check_engine_settings(args) -> None:
    """The engine's own validation of the settings, once, before any prompt runs."""
    fields = {f for f in JobConfig.__dataclass_fields__}
    overrides = {a.dest: getattr(args, a.dest) for a in args._forwarded if a.dest in fields}
    overrides.update(dict(parse_set_option(item) for item in args.set))
    overrides.pop("preset", None)
    build_config(args.preset or "standard", **{**overrides, "prompt": "a batch settings check"})


def cmd_batch(args, events) -> int:
    from .driver import BatchOptions, run_batch

    check_engine_settings(args)
    engine_args, settings = forwarded_argv(args)
    opts = BatchOptions(
        prompts_file=args.prompts_file, out=args.out, engine_args=engine_args, settings=settings, model=args.model,
        device=args.device, workers=args.workers, ray=args.ray, shared_out=args.shared_out,
        gpus_per_task=args.gpus_per_task, cpus_per_task=args.cpus_per_task, max_retries=args.max_retries,
        keep_checkpoints=args.keep_checkpoints, ship_engine=not args.no_ship_engine, progress_bar=not args.no_progress,
    )
    return run_batch(opts, events)
