"""What every run command (``generate``, ``texture``) does the same way: logging into the run's log.txt,
the settings a ``--resume`` may change, the unknown-word warning, loading the diffusion model so that a
signal stops it. engine/cli.py and engine/texture_run.py both import it (neither imports the other)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from .cancel import CancelFlag
from .config import validate
from .errors import Cancelled, ConfigError
from .protocol import EventStream

log = logging.getLogger("engine")


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


def _log_to_file(level: int, msg: str) -> None:
    """Into log.txt only: what is also printed on stderr must not appear there twice."""
    for handler in log.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(log.makeRecord(log.name, level, __file__, 0, msg, None, None))


# What --resume may change: how long to train, where to run it, and export-time settings. Everything
# else defines the optimisation so far; changing it silently would make a different run.
RESUME_MAY_CHANGE = ("steps", "device", "dtype", "offline", "mesh_resolution", "texture_size", "iso", "target_faces",
                     "export_obj", "export_at_end", "preview_every", "preview_views", "checkpoint_every")


def apply_resume_overrides(cfg, overrides: dict, args, checkpoint_step: int) -> dict:
    """Apply what a resume may change, refuse (listing them) the flags it would otherwise ignore.
    Returns {setting: (old, new)} for config.json and the log."""
    refused = []
    for key, value in overrides.items():
        if value is None or key in RESUME_MAY_CHANGE:
            continue
        current = getattr(cfg, key)
        if (value.strip() if isinstance(value, str) else value) != current:
            refused.append(f"{key} (run: {current!r}, given: {value!r})")
    if args.preset is not None and args.preset != cfg.preset:
        refused.append(f"preset (run: {cfg.preset!r}, given: {args.preset!r})")
    if args.out is not None:
        refused.append(f"--out (the run stays in {args.resume})")
    if refused:
        raise ConfigError(
            "--resume continues a run as it was started and will not change: " + "; ".join(refused)
            + f". Drop these flags, or start a new run to change them (a resume may change: {', '.join(RESUME_MAY_CHANGE)})"
        )
    changed = {k: (getattr(cfg, k), overrides[k]) for k in RESUME_MAY_CHANGE
               if overrides.get(k) is not None and overrides[k] != getattr(cfg, k)}
    for key, (_, new) in changed.items():
        setattr(cfg, key, new)
    validate(cfg)
    if cfg.steps < checkpoint_step:
        raise ConfigError(f"--steps {cfg.steps} is below the checkpoint's step {checkpoint_step}; give at least "
                          f"{checkpoint_step} (equal: no more training, just the export)")
    return changed


def warn_unknown_words(tokenizer, prompt: str, events: EventStream) -> None:
    """Small word-level vocabularies (builtin:shapes) map unknown words to one [UNK] token: say so."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None:
        return
    unknown = [w for w in prompt.split() if (ids := tokenizer(w, add_special_tokens=False)["input_ids"]) and set(ids) == {unk}]
    if not unknown:
        return
    if len(unknown) == len(prompt.split()):
        msg = (f"the model knows none of the words in the prompt {prompt!r}: it will see only unknown-word tokens, and "
               "the result will not follow the prompt. Use words from the model's vocabulary (builtin:shapes: docs/PRIOR.md)")
    else:
        msg = f"the model does not know these words of the prompt, which it will not follow: {', '.join(unknown)}"
    log.warning("%s", msg)
    events.emit("warning", message=msg)


def load_guidance(cfg, device, dtype, cancel: CancelFlag, events: EventStream, run_dir: Path | None, state: dict | None):
    """The diffusion model, loaded so that a signal stops it at once (nothing has been written yet)."""
    from . import runfolder
    from .guidance import Guidance
    from .train import out_of_memory_as_engine_error

    try:
        with cancel.interruptible(), out_of_memory_as_engine_error():
            return Guidance(cfg.model, device, dtype, offline=cfg.offline, latent_encoder=cfg.latent_encoder)
    except Cancelled:
        # A new run has no folder yet; a resumed one keeps its folder and checkpoint untouched.
        events.emit("cancelled", run_dir=run_dir, step=None if state is None else int(state["step"]),
                    checkpoint=None if run_dir is None else run_dir / runfolder.CHECKPOINT)
        raise
