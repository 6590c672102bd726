"""``python -m engine evaluate RUN_DIR... --clip MODEL --prompts FILE``: CLIP R-Precision of runs.

Every input is checked before any model loads (run folders, caption file, modes, --json's folder);
the run folders are only read. Protocol: docs/EVALUATION.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .errors import ConfigError

# The paper's Table 1 (DreamFusion, CLIP R-Precision %, 153 object-centric COCO captions).
PAPER = {"textured": {"B/32": 75.1, "B/16": 77.5, "L/14": 79.7}, "textureless": {"B/32": 42.5, "B/16": 46.6, "L/14": 58.5}}
CAPTIONS_HELP = "UTF-8 text, one caption per line, lines starting with # skipped; no blank or repeated lines"


def add_parser(sub) -> None:
    from .eval_views import RESOLUTION, VIEWS

    p = sub.add_parser("evaluate", help="CLIP R-Precision of finished runs, textured and textureless (docs/EVALUATION.md)")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--clip", action="append", default=[], metavar="MODEL",
                   help="CLIP judge: B/32, B/16, L/14, a hub id or a local folder; repeat for several")
    p.add_argument("--prior", action="append", default=[], metavar="MODEL",
                   help="a diffusion model as judge (builtin:shapes, a diffusers folder or hub id): each caption scored "
                        "by how much it helps the model denoise the renders, rendered at the model's resolution")
    p.add_argument("--prompts", required=True, metavar="FILE", help=f"the caption set ({CAPTIONS_HELP})")
    p.add_argument("--modes", default="textured,textureless", help="comma-separated: textured, textureless")
    p.add_argument("--json", dest="json_out", metavar="OUT", help="also write the results as JSON to this file")
    p.add_argument("--views", type=int, default=VIEWS, help=f"views per run (default {VIEWS})")
    p.add_argument("--resolution", type=int, default=RESOLUTION, help=f"render resolution (default {RESOLUTION})")
    p.add_argument("--device", default="auto")
    p.add_argument("--offline", action="store_true", help="never contact the model hub")
    p.add_argument("--json-events", action="store_true", help=argparse_suppress())
    p.add_argument("--no-progress", action="store_true", help=argparse_suppress())


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


def read_captions(path) -> list[str]:
    from .rprecision import check_captions

    path = Path(path).expanduser()
    try:
        lines = path.read_text(encoding="utf-8").lstrip("\ufeff").splitlines()
    except FileNotFoundError:
        raise ConfigError(f"--prompts {path} does not exist; give a caption file ({CAPTIONS_HELP})") from None
    except IsADirectoryError:
        raise ConfigError(f"--prompts {path} is a folder; give a caption file ({CAPTIONS_HELP})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--prompts {path} is not UTF-8 text; save it as UTF-8") from None
    captions, seen = [], {}
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if text.startswith("#"):
            continue
        if not text:
            raise ConfigError(f"--prompts {path} line {number} is blank; every line must be a caption (or a # comment)")
        if text in seen:
            raise ConfigError(f"--prompts {path} line {number} repeats line {seen[text]} ({text!r}); "
                              "each caption must appear once, or the run's own caption ties with its copy")
        seen[text] = number
        captions.append(text)
    check_captions(captions)
    return captions


def check_inputs(args):
    """Everything about the input, before a model loads: (captions, [(run_dir, cfg, caption index)], modes)."""
    from .clip_judge import resolve_clip
    from .eval_views import check_run, parse_modes
    from .runfolder import check_writable_parent

    modes = parse_modes(args.modes)
    if not args.clip and not args.prior:
        raise ConfigError("give at least one judge: --clip MODEL (e.g. --clip B/32) or --prior MODEL (e.g. builtin:shapes)")
    if args.views < 1 or args.resolution < 8:
        raise ConfigError("--views must be at least 1 and --resolution at least 8")
    captions = read_captions(args.prompts)
    index = {c: i for i, c in enumerate(captions)}
    runs = []
    for run_dir in args.run_dirs:
        cfg = check_run(Path(run_dir))
        prompt = cfg.prompt.strip()
        if prompt not in index:
            raise ConfigError(f"{run_dir}: its prompt {prompt!r} is not in the caption set {args.prompts}; "
                              "R-Precision needs each run's own caption among the candidates")
        runs.append((Path(run_dir), cfg, index[prompt]))
    for name in args.clip:
        resolve_clip(name)  # a missing folder or one without safetensors fails here, before any rendering
    from .guidance import resolve_model

    for name in args.prior:
        resolve_model(name)
    if args.json_out:
        out = Path(args.json_out)
        if out.is_dir():
            raise ConfigError(f"--json {out} is a folder; give a file name")
        check_writable_parent(out.parent, "--json")
    return captions, runs, modes


def evaluate(args, events=None) -> dict:
    import torch

    from .clip_judge import ClipJudge
    from .eval_views import render_views
    from .guidance import pick_device
    from .rprecision import r_precision

    captions, runs, modes = check_inputs(args)
    device = pick_device(args.device)
    cache = {}

    def renders(mode, resolution):  # each run rendered once per mode and resolution
        if (mode, resolution) not in cache:
            cache[mode, resolution] = [render_views(d, cfg, mode, device, args.views, resolution) for d, cfg, _ in runs]
        return cache[mode, resolution]

    own = [i for _, _, i in runs]
    results = []
    from .clip_judge import known_clip_models

    short_names = {v: k for k, v in known_clip_models().items()}
    judges = [("clip", n) for n in args.clip] + [("prior", n) for n in args.prior]
    for kind, name in judges:
        if kind == "clip":
            judge = ClipJudge(name, device, offline=args.offline)
            text = judge.text_embeddings(captions)
            row = lambda views, cfg: judge.similarity(views, text)  # noqa: E731
            resolution = args.resolution
        else:
            from .eval_views import ring_cameras
            from .prior_judge import PriorJudge

            judge = PriorJudge(name, device, offline=args.offline)
            row = lambda views, cfg: judge.similarity(views, ring_cameras(cfg, args.views, device), captions, cfg)  # noqa: E731
            resolution = judge.resolution
        for mode in modes:
            sim = torch.stack([row(views, cfg) for views, (_, cfg, _) in zip(renders(mode, resolution), runs)])
            r = r_precision(sim, own, captions)
            top = sim.argmax(1).tolist()
            results.append({"judge": kind, "clip": name, "mode": mode, "resolution": resolution, **r.to_json(),
                            "paper": PAPER.get(mode, {}).get(short_names.get(name, name)) if kind == "clip" else None,
                            "per_run": [{"run_dir": str(d), "caption": captions[i], "top1": captions[t], "hit": h}
                                        for (d, _, i), t, h in zip(runs, top, _hits(sim, own))]})
        del judge
    report = {"captions": len(captions), "runs": len(runs), "views": args.views, "resolution": args.resolution,
              "tie_rule": "a tie with another caption is a miss", "interval": "Wilson 95 %", "results": results}
    return report


def _hits(sim, own):
    from .rprecision import top1_hits

    return top1_hits(sim, own)


def format_table(report: dict) -> str:
    rows = ["| judge | mode | R-Precision % | 95 % interval | hits / runs | paper % |", "|---|---|---|---|---|---|"]
    for r in report["results"]:
        paper = "" if r["paper"] is None else f"{r['paper']:.1f}"
        rows.append(f"| {r['clip']} | {r['mode']} | {100 * r['value']:.1f} | {100 * r['ci_low']:.1f}-{100 * r['ci_high']:.1f} "
                    f"| {r['hits']} / {r['runs']} | {paper} |")
    return "\n".join(rows) + f"\n\n{report['runs']} runs, {report['captions']} captions, {report['views']} views at " \
                             f"{report['resolution']} px (a --prior judge: its model's resolution); {report['tie_rule']}."


def cmd_evaluate(args, events, cancel=None) -> int:
    report = evaluate(args, events)
    table = format_table(report)
    print(table, file=sys.stdout if not args.json_events else sys.stderr)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2), encoding="utf-8")
    events.emit("evaluate", **{k: v for k, v in report.items() if k != "results"},
                results=[{k: v for k, v in r.items() if k != "per_run"} for r in report["results"]])
    return 0
