"""``python -m engine``: generate, resume, export and check, from a terminal or the Blender add-on.

Exit codes and events are documented in docs/ARCHITECTURE.md. Every failure the user can act on is
an EngineError whose message says what to do; anything else is reported as an unexpected error
with the traceback in the run's log.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import traceback
from pathlib import Path

from . import __version__
from .config import PRESETS, build_config, parse_set_option, validate
from .errors import Cancelled, ConfigError, EngineError
from .protocol import EventStream

log = logging.getLogger("engine")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json-events", action="store_true", help="write machine-readable events (JSON lines) to stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description="DreamFusion: text prompt -> textured 3D mesh (SDS on a NeRF)")
    parser.add_argument("--version", action="version", version=f"dreamfusion-engine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="optimise a NeRF for a prompt and export a textured mesh")
    g.add_argument("prompt", nargs="?", help="what to make, e.g. \"a ceramic mug\"")
    g.add_argument("--out", default="runs", help="folder that receives the run folder (default: ./runs)")
    g.add_argument("--resume", metavar="RUN_DIR", help="continue a cancelled or crashed run from its last checkpoint")
    g.add_argument("--preset", choices=sorted(PRESETS), default=None, help="draft | standard (default) | high")
    g.add_argument("--model", help="diffusers model: hub id, local folder, or builtin:shapes")
    g.add_argument("--negative-prompt")
    g.add_argument("--seed", type=int)
    g.add_argument("--steps", type=int, help="optimisation steps (preset default otherwise)")
    g.add_argument("--guidance-scale", type=float, help="classifier-free guidance weight (paper: 100)")
    g.add_argument("--device", help="auto (default) | cpu | cuda | cuda:N | mps")
    g.add_argument("--dtype", choices=["auto", "fp32", "fp16", "bf16"])
    g.add_argument("--offline", action="store_true", default=None, help="never contact the model hub")
    g.add_argument("--render-resolution", type=int)
    g.add_argument("--samples-per-ray", type=int)
    g.add_argument("--texture-size", type=int)
    g.add_argument("--mesh-resolution", type=int)
    g.add_argument("--no-export", action="store_true", help="stop after training (export later with `export`)")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other config field (see config.py)")
    _add_common(g)

    e = sub.add_parser("export", help="(re-)export a run's checkpoint to a textured mesh")
    e.add_argument("run_dir")
    e.add_argument("--mesh-resolution", type=int)
    e.add_argument("--texture-size", type=int)
    e.add_argument("--iso", type=float, help="density iso-level (default: the exporter's)")
    e.add_argument("--obj", action="store_true", help="also write OBJ + MTL + PNG")
    e.add_argument("--out", help="export folder (default: RUN_DIR/export-<time>)")
    e.add_argument("--device", default="auto")
    _add_common(e)

    c = sub.add_parser("check", help="report torch, device and model status")
    c.add_argument("--model", help="also check that this model loads")
    c.add_argument("--device", default="auto")
    _add_common(c)

    from .batch.cli import add_parser as add_batch_parser  # `batch`: its own package (docs/CLUSTER.md)

    add_batch_parser(sub)
    return parser


def _setup_logging(run_dir: Path | None, quiet: bool) -> None:
    log.setLevel(logging.INFO)
    log.handlers.clear()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    if not quiet:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(fmt)
        log.addHandler(h)
    if run_dir is not None:
        fh = logging.FileHandler(run_dir / "log.txt", encoding="utf-8")
        fh.setFormatter(fmt)
        log.addHandler(fh)


def cmd_generate(args, events: EventStream) -> int:
    from . import runfolder
    from .guidance import Guidance, pick_device, pick_dtype

    overrides = dict(
        prompt=args.prompt, model=args.model, negative_prompt=args.negative_prompt, seed=args.seed, steps=args.steps,
        guidance_scale=args.guidance_scale, device=args.device, dtype=args.dtype, offline=args.offline,
        render_resolution=args.render_resolution, samples_per_ray=args.samples_per_ray, texture_size=args.texture_size,
        mesh_resolution=args.mesh_resolution,
    )
    overrides.update(dict(parse_set_option(item) for item in args.set))
    state = None
    if args.resume:
        run_dir = Path(args.resume)
        cfg = runfolder.load_run_config(run_dir)
        state = runfolder.load_checkpoint(run_dir)  # fail before loading a model if there is nothing to resume
        for key in ("steps", "device", "dtype", "offline"):  # what may change on resume
            if overrides.get(key) is not None:
                setattr(cfg, key, overrides[key])
        validate(cfg)
        runfolder.clear_cancel(run_dir)
    else:
        if args.prompt is None:
            raise ConfigError("give a prompt, e.g. python -m engine generate \"a ceramic mug\", or --resume RUN_DIR")
        cfg = build_config(args.preset or "standard", **{k: v for k, v in overrides.items()})
        run_dir = None
    device = pick_device(cfg.device)
    dtype = pick_dtype(cfg.dtype, device)
    # Load the model before creating a run folder: a missing or broken model leaves nothing behind.
    events.emit("progress", stage="load", step=0, total=1, loss=None, elapsed_s=0.0, eta_s=None)
    try:
        guidance = Guidance(cfg.model, device, dtype, offline=cfg.offline)
    except RuntimeError as exc:
        from .errors import OutOfMemory
        from .train import OOM_ADVICE, is_oom

        if is_oom(exc):
            raise OutOfMemory(OOM_ADVICE) from exc
        raise
    if run_dir is None:
        from .recipe import resolve

        resolve(cfg, guidance.family, guidance.recommended, explicit={k for k, v in overrides.items() if v is not None})
        run_dir = runfolder.create_run_dir(Path(args.out), cfg.prompt)
        cfg.save(run_dir / runfolder.CONFIG)
    events.attach(run_dir / runfolder.EVENTS)
    _setup_logging(run_dir, quiet=args.no_progress)
    events.emit("start", run_dir=run_dir, config=cfg.to_json(), engine_version=__version__, device=str(device),
                resumed_from=None if state is None else int(state["step"]))
    log.info("run folder %s, device %s, dtype %s, model %s (%s)", run_dir, device, dtype, cfg.model, guidance.family)
    from .train import Trainer

    trainer = Trainer(cfg, run_dir, events, guidance, device, progress_bar=not args.no_progress)
    if state is not None:
        trainer.load_state_dict(state)
        log.info("resumed at step %d/%d", trainer.step, cfg.steps)
    trainer.run()
    checkpoint = run_dir / runfolder.CHECKPOINT
    asset = {}
    if cfg.export_at_end and not args.no_export:
        from .export_run import export_run

        del guidance  # free the diffusion model's memory before the export grid
        trainer.guidance = None
        asset = export_run(run_dir, cfg, events, device, field=trainer.field, progress=not args.no_progress)
    events.emit("done", run_dir=run_dir, asset=asset, checkpoint=checkpoint)
    print(f"done: {asset.get('glb', checkpoint)}", file=sys.stderr)
    return 0


def cmd_export(args, events: EventStream) -> int:
    from . import runfolder
    from .export_run import export_run
    from .guidance import pick_device

    run_dir = Path(args.run_dir)
    cfg = runfolder.load_run_config(run_dir)
    for key, value in (("mesh_resolution", args.mesh_resolution), ("texture_size", args.texture_size), ("iso", args.iso)):
        if value is not None:
            setattr(cfg, key, value)
    cfg.export_obj = cfg.export_obj or args.obj
    validate(cfg)
    events.attach(run_dir / runfolder.EVENTS)
    _setup_logging(run_dir, quiet=args.no_progress)
    device = pick_device(args.device)
    asset = export_run(run_dir, cfg, events, device, out_dir=Path(args.out) if args.out else None, progress=not args.no_progress)
    events.emit("done", run_dir=run_dir, asset=asset, checkpoint=run_dir / runfolder.CHECKPOINT)
    print(f"done: {asset['glb']}", file=sys.stderr)
    return 0


def cmd_check(args, events: EventStream) -> int:
    import torch

    from .guidance import pick_device, resolve_model

    report = {"engine_version": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
              "cuda_build": torch.version.cuda, "cuda_available": torch.cuda.is_available(), "gpus": []}
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            report["gpus"].append({"name": p.name, "memory_gb": round(p.total_memory / 2**30, 1)})
    ok = True
    try:
        report["device"] = str(pick_device(args.device))
    except EngineError as exc:
        report["device_error"], ok = str(exc), False
    if args.model:
        try:
            src = resolve_model(args.model)
            report["model"] = {"name": src.name, "path": src.path, "local": src.is_local, "ok": True}
        except EngineError as exc:
            report["model"], ok = {"name": args.model, "ok": False, "error": str(exc)}, False
    events.emit("check", ok=ok, **report)
    if not args.json_events:
        print(json.dumps(report, indent=2))
    return 0 if ok else 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    events = EventStream(to_stdout=args.json_events)
    from .batch.cli import cmd_batch

    handlers = {"generate": cmd_generate, "export": cmd_export, "check": cmd_check, "batch": cmd_batch}
    try:
        return handlers[args.command](args, events)
    except Cancelled as exc:
        print(f"cancelled: {exc}", file=sys.stderr)
        return exc.exit_code
    except EngineError as exc:
        events.emit("error", kind=exc.kind, message=str(exc), run_dir=events.run_dir)
        print(f"error: {exc}", file=sys.stderr)
        log.error("%s", exc)
        return exc.exit_code
    except KeyboardInterrupt:
        events.emit("error", kind="cancelled", message="interrupted before the run started; nothing was written", run_dir=None)
        return 130
    except Exception as exc:  # an engine bug: say so, keep the traceback in the log
        log.error("unexpected error:\n%s", traceback.format_exc())
        events.emit("error", kind="error", message=f"unexpected engine error: {type(exc).__name__}: {exc}", run_dir=events.run_dir)
        print(traceback.format_exc(), file=sys.stderr)
        return 1
    finally:
        events.close()
        time.sleep(0)
