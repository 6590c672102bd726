"""Headless generation: one prompt or a file of prompts, each into its own .blend (with the object) and .glb.
(``texture --object NAME --prompt P``, texturing a mesh of the open .blend, is texture_batch.py.)

Three ways in, one code path (``main``):
  blender -c dreamfusion generate --prompt "a red cube" --out DIR        (registered CLI command, Blender 4.2+)
  blender --background --python-expr "import bl_ext.user_default.dreamfusion.batch as b; b.main([...])"
  python -m dreamfusion_blender.batch generate --prompts FILE --out DIR  (bpy from PyPI; registers the add-on)

Runs are synchronous (blocking on the worker; timers do not run headless). One line per run on
stdout; the exit code is 0 only if every prompt produced a .blend and a .glb.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from .batch_names import free_stem, short

PROMPTS_HELP = "UTF-8 text file, one prompt per line; blank lines and lines starting with # are skipped"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dreamfusion", description="DreamFusion for Blender, headless")
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="generate objects into .blend + .glb files")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="one prompt")
    src.add_argument("--prompts", metavar="FILE", help=PROMPTS_HELP)
    g.add_argument("--out", required=True, help="folder for the .blend and .glb files (created if needed)")
    g.add_argument("--runs", help="folder for the engine's run folders (default: OUT/runs)")
    g.add_argument("--model", help="hub id, local diffusers folder or builtin:shapes (default: the preferences')")
    g.add_argument("--preset", choices=["draft", "standard", "high"], default="draft")
    g.add_argument("--steps", type=int)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--negative-prompt", default="")
    g.add_argument("--guidance-scale", type=float)
    g.add_argument("--texture-size", type=int)
    g.add_argument("--mesh-resolution", type=int)
    g.add_argument("--device", help="auto | cpu | cuda | mps (default: the preferences')")
    g.add_argument("--python", help="interpreter that runs the engine (default: the preferences')")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to the engine")
    g.add_argument("--timeout", type=float, help="seconds per prompt before it is cancelled")
    g.add_argument("--verbose", action="store_true", help="also print progress while a run goes (every 10 s)")
    g.add_argument("--workers", type=int, help="prompts at once, through the engine's batch (docs/CLUSTER.md)")
    g.add_argument("--ray", metavar="auto|ADDRESS", help="run the prompts on a Ray cluster (docs/CLUSTER.md)")
    from . import texture_batch

    texture_batch.add_parser(sub)  # `texture --object NAME --prompt P`: Texture selected, headless
    return parser


class PromptsFileError(Exception):
    """The prompts file cannot be used; the message says which line and why."""


def read_prompts(path: str) -> list[str]:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PromptsFileError(f"cannot read the prompts file {path}: {exc.strerror or exc}") from exc
    prompts = []
    for number, line in enumerate(raw.splitlines(), start=1):
        try:
            text = line.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise PromptsFileError(f"{path}, line {number}: not UTF-8 text (byte {line[exc.start]:#04x} at column "
                                   f"{exc.start + 1}); save the file as UTF-8") from None
        if text.strip() and not text.lstrip().startswith("#"):
            prompts.append(text.strip())
    return prompts


def request(prompt: str, args, out: Path):
    """What to ask the engine for: the command line's settings over the preferences'."""
    from . import engine_cli
    from .prefs import settings

    s = settings()
    return engine_cli.GenerateRequest(
        prompt=prompt, out=args.runs or str(out / "runs"), model=args.model or s.model, preset=args.preset,
        negative_prompt=args.negative_prompt, seed=args.seed, steps=args.steps, guidance_scale=args.guidance_scale,
        texture_size=args.texture_size, mesh_resolution=args.mesh_resolution, device=args.device or s.device,
        extra=s.extra + tuple(x for item in args.set for x in ("--set", item)),
    )


def run_one(prompt: str, args, out: Path, python: str) -> tuple[bool, str]:
    import bpy

    from . import runner

    bpy.ops.wm.read_homefile(use_empty=True)  # each prompt gets a clean file
    req = request(prompt, args, out)

    last = {"t": 0.0, "stage": None}

    def verbose(ev, state):
        # Throttled: a stage change or every 10 s, so a 15000-step run does not print 15000 lines.
        if args.verbose and ev.get("event") == "progress":
            now = time.monotonic()
            if state.stage != last["stage"] or now - last["t"] >= 10:
                last.update(t=now, stage=state.stage)
                print(f"    {state.summary()}", flush=True)

    job = runner.start_generate(bpy.context.scene, req, python=python)
    ok, msg, obj = runner.wait(job, on_event=verbose, timeout=args.timeout)
    if not ok:
        return False, msg
    stem = free_stem(out, prompt)
    blend, glb = stem.with_suffix(".blend"), stem.with_suffix(".glb")
    shutil.copy2(job.state.asset["glb"], glb)
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    return True, f"{blend}, {glb}"


def main(argv: list[str]) -> int:
    """The CLI entry point (also the register_cli_command callback). Returns the exit code."""
    args = build_parser().parse_args(argv)
    from .jobs import MANAGER

    if MANAGER.busy:
        print("dreamfusion: a generation is already running in this Blender session", file=sys.stderr)
        return 1
    if args.command == "texture":
        from . import texture_batch

        return texture_batch.main(args)
    try:
        prompts = [args.prompt] if args.prompt is not None else read_prompts(args.prompts)
    except PromptsFileError as exc:
        print(f"dreamfusion: {exc}", file=sys.stderr)
        return 2
    if not prompts:
        print("dreamfusion: no prompts given", file=sys.stderr)
        return 2
    out = Path(args.out).expanduser().resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"dreamfusion: cannot create --out {out}: {exc.strerror or exc}; choose a folder you can write to", file=sys.stderr)
        return 2
    from .prefs import settings  # bpy: only once the inputs are known to be usable

    python = args.python or settings().python
    if args.workers is not None or args.ray is not None:  # the engine's batch runs them (in parallel / on Ray)
        from . import batch_engine

        return batch_engine.run(prompts, args, out, python, request(prompts[0], args, out))
    failures = 0
    for i, prompt in enumerate(prompts, start=1):
        t0 = time.monotonic()
        try:
            ok, msg = run_one(prompt, args, out, python)
        except Exception as exc:  # one broken prompt must not stop the rest of the batch
            ok, msg = False, f"{type(exc).__name__}: {exc}"
        failures += not ok
        status = "ok" if ok else "FAILED"
        print(f"[{i}/{len(prompts)}] {status} \"{short(prompt)}\" ({time.monotonic() - t0:.0f}s): {msg}", flush=True)
    print(f"dreamfusion: {len(prompts) - failures}/{len(prompts)} succeeded", flush=True)
    return 0 if failures == 0 else 1


def cli_command(argv: list[str]) -> int:
    """``blender -c dreamfusion ...``: argparse exits on --help / bad usage; turn that into a return code."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2


def _enable_addon() -> None:
    """bpy-as-a-module: register this package as an add-on (as Blender would at start-up)."""
    import addon_utils

    name = __package__
    if name not in __import__("bpy").context.preferences.addons:
        addon_utils.enable(name, default_set=True, handle_error=None)


if __name__ == "__main__":
    import bpy  # noqa: F401  (Blender as a Python module)

    _enable_addon()
    sys.exit(cli_command(sys.argv[1:]))
