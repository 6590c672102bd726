"""``python -m engine``: generate, resume, export and check, from a terminal or the Blender add-on.

Exit codes and events are documented in docs/ARCHITECTURE.md. Every failure the user can act on is
an EngineError whose message says what to do; anything else is reported as an unexpected error
with the traceback in the run's log.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import traceback
from pathlib import Path

from . import __version__
from .cancel import CancelFlag
from .config import PRESETS, SILHOUETTE_CARVES, build_config, parse_set_option, validate
from .errors import Cancelled, ConfigError, EngineError
from .protocol import EventStream, claim_stdout_fd

log = logging.getLogger("engine")

# What the run commands (generate here, texture in texture_run.py) share lives in run_setup.py, so the
# subcommand modules need not import this one (which imports them for their parsers).
from .run_setup import (  # noqa: E402
    RESUME_MAY_CHANGE, _log_to_file, _setup_logging, apply_resume_overrides, load_guidance, warn_unknown_words,
)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json-events", action="store_true", help="write machine-readable events (JSON lines) to stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description="DreamFusion: text prompt -> textured 3D mesh (SDS on a NeRF)")
    parser.add_argument("--version", action="version", version=f"dreamfusion-engine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="optimise a NeRF for a prompt and export a textured mesh")
    g.add_argument("prompt", nargs="?", help="what to make, e.g. \"a ceramic mug\"")
    g.add_argument("--prompt", dest="prompt_opt", metavar="PROMPT",
                   help="the prompt as an option; --prompt=TEXT also takes text that starts with '-'")
    g.add_argument("--out", help="folder that receives the run folder (default: ./runs)")
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
    g.add_argument("--target-faces", type=int, help="polygon budget of the mesh (preset default: 20k/40k/100k)")
    g.add_argument("--no-export", action="store_true", help="stop after training (export later with `export`)")
    g.add_argument("--refine-steps", type=int, help="mesh refinement steps after the export (0: off; engine/refine.py)")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other config field (see config.py)")
    _add_common(g)

    e = sub.add_parser("export", help="(re-)export a run's checkpoint to a textured mesh")
    e.add_argument("run_dir")
    e.add_argument("--mesh-resolution", type=int)
    e.add_argument("--texture-size", type=int)
    e.add_argument("--iso", type=float, help="density iso-level (default: automatic, matching the rendered opacity)")
    e.add_argument("--target-faces", type=int, help="polygon budget of the mesh (default: the run's)")
    e.add_argument("--silhouette-carve", choices=SILHOUETTE_CARVES,
                   help="carve the automatic level's surface to the rendered silhouettes (default: the run's, auto)")
    e.add_argument("--obj", action="store_true", help="also write OBJ + MTL + PNG")
    e.add_argument("--out", help="export folder (default: RUN_DIR/export-<time>)")
    e.add_argument("--device", default="auto")
    _add_common(e)

    c = sub.add_parser("check", help="report torch, device and model status")
    c.add_argument("--model", help="also check that this model loads")
    c.add_argument("--device", default="auto")
    _add_common(c)

    from .batch.cli import add_parser as add_batch_parser  # `batch`: its own package (docs/CLUSTER.md)
    from .download import add_parser as add_download_parser
    from .models import add_parser as add_models_parser

    from .texture_run import add_parser as add_texture_parser  # `texture`: its own module (docs/TEXTURE.md)

    add_batch_parser(sub)
    add_download_parser(sub)
    from .evaluate_cli import add_parser as add_evaluate_parser  # CLIP R-Precision (docs/EVALUATION.md)

    add_texture_parser(sub)
    add_models_parser(sub)
    add_evaluate_parser(sub)
    return parser


def cmd_generate(args, events: EventStream, cancel: CancelFlag) -> int:
    from . import runfolder
    from .guidance import pick_device, pick_dtype

    if args.prompt is not None and args.prompt_opt is not None:
        raise ConfigError("give the prompt once: either as an argument or with --prompt")
    prompt = args.prompt if args.prompt is not None else args.prompt_opt
    overrides = dict(
        prompt=prompt, model=args.model, negative_prompt=args.negative_prompt, seed=args.seed, steps=args.steps,
        guidance_scale=args.guidance_scale, device=args.device, dtype=args.dtype, offline=args.offline,
        render_resolution=args.render_resolution, samples_per_ray=args.samples_per_ray, texture_size=args.texture_size,
        mesh_resolution=args.mesh_resolution, target_faces=args.target_faces, refine_steps=getattr(args, "refine_steps", None),
    )
    overrides.update(dict(parse_set_option(item) for item in args.set))
    # Every check on the user's input happens here, before the model loads and before any folder exists.
    state, changed = None, {}
    if args.resume:
        run_dir = Path(args.resume)
        cfg = runfolder.load_run_config(run_dir)
        if cfg.start_shape == "auto" and not (run_dir / runfolder.CHECKPOINT).is_file():
            # Stopped while choosing its start shape (engine/start_shape.py): nothing trained yet, so it starts again.
            changed = apply_resume_overrides(cfg, overrides, args, 0)
        else:
            state = runfolder.load_checkpoint(run_dir)  # fail before loading a model if there is nothing to resume
            changed = apply_resume_overrides(cfg, overrides, args, int(state["step"]))
        from .refine import check_resume

        check_resume(run_dir, cfg)  # a started refinement is bound to its settings
    else:
        if prompt is None:
            raise ConfigError("give a prompt, e.g. python -m engine generate \"a ceramic mug\", or --resume RUN_DIR")
        cfg = build_config(args.preset or "standard", **{k: v for k, v in overrides.items()})
        runfolder.check_writable_parent(Path(args.out or "runs"))
        run_dir = None
    device = pick_device(cfg.device)
    dtype = pick_dtype(cfg.dtype, device)
    # Load the model before creating a run folder: a missing or broken model leaves nothing behind.
    events.emit("progress", stage="load", step=0, total=1, loss=None, elapsed_s=0.0, eta_s=None)
    guidance = load_guidance(cfg, device, dtype, cancel, events, run_dir, state)
    warn_unknown_words(guidance.tokenizer, cfg.prompt, events)
    if run_dir is None:
        from .recipe import resolve

        resolve(cfg, guidance.family, guidance.recommended, explicit={k for k, v in overrides.items() if v is not None})
        run_dir = runfolder.create_run_dir(Path(args.out or "runs"), cfg.prompt)
        cfg.save(run_dir / runfolder.CONFIG)
    else:
        runfolder.clear_cancel(run_dir)  # resuming means the user wants the run to go on
        if changed:
            runfolder.save_run_config(run_dir, cfg)
    events.attach(run_dir / runfolder.EVENTS)
    _setup_logging(run_dir, quiet=args.no_progress)
    events.emit("start", run_dir=run_dir, config=cfg.to_json(), engine_version=__version__, device=str(device),
                resumed_from=None if state is None else int(state["step"]), latent_encoder=guidance.latent_encoder)
    if changed:
        log.info("resume changed %s", ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items()))
    log.info("run folder %s, device %s, dtype %s, model %s (%s), latent encoder %s", run_dir, device, dtype, cfg.model,
             guidance.family, guidance.latent_encoder or "none (pixel model)")
    from .train import Trainer

    def make_trainer(run_cfg):
        return Trainer(run_cfg, run_dir, events, guidance, device, progress_bar=not args.no_progress)

    if cfg.start_shape == "auto":
        from .start_shape import choose_start_shape
        from .train import out_of_memory_as_engine_error

        with out_of_memory_as_engine_error():  # the probe trains too: the same advice as Trainer.run's
            trainer, cfg = choose_start_shape(cfg, make_trainer, events, cancel, run_dir)
        # Recorded before the first checkpoint: resume and export rebuild the field with the shape chosen.
        runfolder.save_run_config(run_dir, cfg)
        log.info("start shape: %s", cfg.start_shape)
    else:
        trainer = make_trainer(cfg)
    trainer.cancel = cancel  # one flag from load to the end of export
    if state is not None:
        trainer.load_state_dict(state)
        log.info("resumed at step %d/%d", trainer.step, cfg.steps)
    trainer.run()
    checkpoint = run_dir / runfolder.CHECKPOINT
    asset = {}
    if cfg.export_at_end and not args.no_export:
        from .export_run import export_run
        from .refine import REFINE_CHECKPOINT, run_refine

        if not cfg.refine_steps:
            del guidance  # free the diffusion model's memory before the export
            trainer.guidance = None
        if cfg.refine_steps and (run_dir / REFINE_CHECKPOINT).is_file():
            asset = {"glb": str(run_dir / "asset" / "asset.glb")}  # exported before the refinement started
        else:
            asset = export_run(run_dir, cfg, events, device, progress=not args.no_progress, cancel=cancel)
        if cfg.refine_steps:  # the mesh stage (engine/refine.py): the refined asset is the run's result
            trainer.guidance = None
            asset = run_refine(run_dir, cfg, events, guidance, device, cancel, asset, trainer.prompts,
                               progress=not args.no_progress)
    events.emit("done", run_dir=run_dir, asset=asset, checkpoint=checkpoint)
    print(f"done: {asset.get('glb', checkpoint)}", file=sys.stderr)
    return 0


def cmd_export(args, events: EventStream, cancel: CancelFlag) -> int:
    from . import runfolder
    from .export_run import check_out_dir, export_run
    from .guidance import pick_device

    run_dir = Path(args.run_dir)
    cfg = runfolder.load_run_config(run_dir)
    for key, value in (("mesh_resolution", args.mesh_resolution), ("texture_size", args.texture_size), ("iso", args.iso),
                       ("target_faces", args.target_faces), ("silhouette_carve", args.silhouette_carve)):
        if value is not None:
            setattr(cfg, key, value)
    cfg.export_obj = cfg.export_obj or args.obj
    validate(cfg)
    out_dir = check_out_dir(Path(args.out)) if args.out else None
    device = pick_device(args.device)
    if not (run_dir / runfolder.CHECKPOINT).is_file():
        raise runfolder.RunFolderError(f"no checkpoint in {run_dir} ({runfolder.CHECKPOINT} is missing): nothing to export")
    runfolder.clear_cancel(run_dir)  # a CANCEL left by an earlier cancelled run is not meant for this export
    events.attach(run_dir / runfolder.EVENTS)
    _setup_logging(run_dir, quiet=args.no_progress)
    asset = export_run(run_dir, cfg, events, device, out_dir=out_dir, progress=not args.no_progress, cancel=cancel)
    events.emit("done", run_dir=run_dir, asset=asset, checkpoint=run_dir / runfolder.CHECKPOINT)
    print(f"done: {asset['glb']}", file=sys.stderr)
    return 0


def cmd_check(args, events: EventStream, cancel: CancelFlag) -> int:
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


def main(argv: list[str] | None = None, claim_fd: bool = False) -> int:
    """Run one command; returns the exit code. ``claim_fd`` (the ``python -m engine`` process only):
    with --json-events, file descriptor 1 carries events alone (see protocol.claim_stdout_fd)."""
    args = build_parser().parse_args(argv)
    events = EventStream(to_stdout=args.json_events, stream=claim_stdout_fd() if claim_fd and args.json_events else None)
    cancel = CancelFlag()
    if args.command in ("batch", "download", "models"):  # their own signal handling (engine/batch/local.py, engine/download.py)
        from .batch.cli import cmd_batch
        from .download import cmd_download
        from .models import cmd_models

        own = {"batch": cmd_batch, "download": cmd_download, "models": cmd_models}[args.command]

        def handler(args, events, cancel):
            return own(args, events)
    else:
        from .evaluate_cli import cmd_evaluate
        from .texture_run import cmd_texture

        handler = {"generate": cmd_generate, "export": cmd_export, "check": cmd_check, "texture": cmd_texture,
                   "evaluate": cmd_evaluate}[args.command]
        cancel.install()  # held until the last event: the cancel contract covers every stage
    try:
        # With --json-events, stdout is the event stream: whatever else Python code prints goes to stderr.
        with contextlib.redirect_stdout(sys.stderr) if args.json_events else contextlib.nullcontext():
            return handler(args, events, cancel)
    except Cancelled as exc:
        print(f"cancelled: {exc}", file=sys.stderr)
        _log_to_file(logging.INFO, f"cancelled: {exc}")
        return exc.exit_code
    except EngineError as exc:
        events.emit("error", kind=exc.kind, message=str(exc), run_dir=events.run_dir)
        print(f"error: {exc}", file=sys.stderr)
        _log_to_file(logging.ERROR, str(exc))
        return exc.exit_code
    except KeyboardInterrupt:  # a signal in the instant before the handlers were installed
        events.emit("cancelled", run_dir=None, step=None, checkpoint=None)
        print("cancelled before the run started; nothing was written", file=sys.stderr)
        return Cancelled.exit_code
    except Exception as exc:  # an engine bug: say so, keep the traceback in the log
        text = traceback.format_exc()
        _log_to_file(logging.ERROR, f"unexpected error:\n{text}")
        events.emit("error", kind="error", message=f"unexpected engine error: {type(exc).__name__}: {exc}", run_dir=events.run_dir)
        print(text, file=sys.stderr)
        return 1
    finally:
        cancel.restore()
        events.close()
