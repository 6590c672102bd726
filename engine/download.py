"""``python -m engine download HUB_ID --out MODELS``: fetch what SDS needs from a hub model, with progress.

Only the diffusers components the engine loads (unet, vae, text_encoder, tokenizer, scheduler, plus
model_index.json and dreamfusion.json) and, among weights, safetensors only — the fp16 variant where the
repository has one (half the bytes; the engine casts to its own dtype when loading). The files land in
``MODELS/<owner>--<name>.partial/`` through huggingface_hub's ``snapshot_download`` (which resumes
interrupted files), fp16 variant names are renamed to the plain names the loader looks for, and the
folder is renamed to ``MODELS/<owner>--<name>/`` with ``dreamfusion-download.json`` written last: a
folder without it is never used. A token comes only from the environment (``HF_TOKEN``), which
huggingface_hub reads itself; it is never printed, logged or written.

Progress: a ``plan`` event (files, bytes), then ``progress`` events with stage ``download`` counted in
MB from the bytes on disk (polled, so it works whatever huggingface_hub's own progress bars do), then
``done`` with ``model_dir``.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from pathlib import Path

from . import hub_errors, models
from .errors import ConfigError, EngineError, ModelError

COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
ROOT_FILES = ("model_index.json", "dreamfusion.json")
MARKER = "dreamfusion-download.json"  # dreamfusion_blender/model_store.py reads it
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_VARIANT = re.compile(r"\.(fp16|fp32|bf16|ema|non_ema|non-ema)(?=[.-])")
_WEIGHTS = re.compile(r"\.safetensors(\.index(\.[\w-]+)?\.json)?$")


class Offline(EngineError):
    kind = "offline"
    exit_code = 2


def add_parser(sub) -> None:
    d = sub.add_parser("download", help="download a hub model's SDS components into a local folder")
    d.add_argument("repo_id", help=f"hub id, e.g. {models.default_model()} (python -m engine models lists the known ones)")
    d.add_argument("--out", required=True, help="models folder; the model goes to OUT/<owner>--<name>/")
    d.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    d.add_argument("--json-events", action="store_true")
    d.add_argument("--no-progress", action="store_true")


def variant_of(path: str) -> str | None:
    m = _VARIANT.search(path.rsplit("/", 1)[-1])
    return m.group(1) if m else None


def select_files(sizes: dict[str, int]) -> list[str]:
    """The repository files SDS needs: configs and tokenizer files of each component, and per component
    its safetensors weights in the fp16 variant if present, else the plain (variant-less) ones."""
    chosen = [f for f in ROOT_FILES if f in sizes]
    for comp in COMPONENTS:
        files = [f for f in sizes if f.startswith(comp + "/") and "/" not in f[len(comp) + 1:]]
        weights = [f for f in files if _WEIGHTS.search(f)]
        other = [f for f in files if f not in weights and f.endswith((".json", ".txt", ".model"))]
        fp16 = [f for f in weights if variant_of(f) == "fp16"]
        chosen += sorted(other) + sorted(fp16 or [f for f in weights if variant_of(f) is None])
    return chosen


def plain_name(path: str) -> str:
    """unet/diffusion_pytorch_model.fp16.safetensors -> unet/diffusion_pytorch_model.safetensors."""
    head, _, name = path.rpartition("/")
    name = _VARIANT.sub("", name, count=1)
    return f"{head}/{name}" if head else name


def _rename_variants(folder: Path, files: list[str]) -> None:
    for rel in files:
        plain = plain_name(rel)
        if plain == rel:
            continue
        src, dst = folder / rel, folder / plain
        if rel.endswith(".json"):  # a sharded index: its weight map names the variant shards too
            index = json.loads(src.read_text(encoding="utf-8"))
            index["weight_map"] = {k: plain_name(v) for k, v in index.get("weight_map", {}).items()}
            dst.write_text(json.dumps(index), encoding="utf-8")
            src.unlink()
        else:
            os.replace(src, dst)


def _bytes_on_disk(folder: Path) -> int:
    # Same walk as the add-on's model_store.folder_size: the engine and the add-on share no code
    # (separate processes and environments; tests/test_imports_boundary.py).
    total = 0
    for root, _dirs, files in os.walk(folder):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def cmd_download(args, events) -> int:
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    repo = args.repo_id.strip()
    if not _HUB_ID.match(repo):
        raise ConfigError(f"{repo!r} is not a hub id (owner/name); a local folder needs no download")
    removed = models.removed_message(repo)
    if removed:  # known to be gone: say what replaced it before asking the hub anything
        raise ModelError(removed)
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise Offline("offline mode is on (HF_HUB_OFFLINE=1): a download needs the model hub. Allow online access and retry")
    out = Path(args.out).expanduser()
    final = out / repo.replace("/", "--")
    if (final / MARKER).is_file():
        events.emit("done", run_dir=None, asset={}, checkpoint=None, model_dir=final, already_present=True)
        return 0
    if final.exists():  # not ours, or damaged: never overwrite or reuse it
        raise ConfigError(f"{final} exists but is not a complete download by this engine; move it away and retry")
    try:
        info = HfApi().model_info(repo, revision=args.revision, files_metadata=True)
    except Exception as exc:  # 404 / 401 / 403 / gated / no network: hub_errors names the cause and the alternatives
        known = hub_errors.model_error(repo if not args.revision else f"{repo} (revision {args.revision})", exc)
        if known is not None:
            raise known from exc
        if isinstance(exc, (HfHubHTTPError, OSError)):
            raise ModelError(f"the hub refused the request for {repo}: {str(exc)[:300]}. "
                             + models.alternatives_text(repo)) from exc
        raise
    sizes = {s.rfilename: int(s.size or 0) for s in (info.siblings or [])}
    files = select_files(sizes)
    missing = [c for c in ("unet", "text_encoder", "tokenizer", "scheduler") if not any(f.startswith(c + "/") for f in files)]
    weightless = [c for c in ("unet", "text_encoder") if not any(f.startswith(c + "/") and _WEIGHTS.search(f) for f in files)]
    if missing or weightless:
        raise ModelError(f"{repo} is not a diffusers text-to-image model the engine can use: "
                         + (f"missing {', '.join(missing)}" if missing else f"no .safetensors weights in {', '.join(weightless)}")
                         + f"; SDS needs unet, text_encoder, tokenizer and scheduler. Known models: "
                         + models.alternatives_text(repo).split(": ", 1)[1])
    total = sum(sizes[f] for f in files)
    fp16 = any(variant_of(f) == "fp16" for f in files)
    events.emit("plan", repo_id=repo, revision=info.sha, files=len(files), bytes_total=total, fp16_variant=fp16)
    partial = out / (final.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)

    stop = threading.Event()
    mb_total = max(1, round(total / 1e6))

    def report() -> None:  # bytes on disk, every half second, as MB so the add-on's step/total works
        t0, start_bytes = time.monotonic(), _bytes_on_disk(partial)
        while not stop.wait(0.5):
            done = min(_bytes_on_disk(partial), total)
            rate = (done - start_bytes) / max(time.monotonic() - t0, 1e-3)
            eta = (total - done) / rate if rate > 0 else None
            events.emit("progress", stage="download", step=round(done / 1e6), total=mb_total, loss=None,
                        elapsed_s=round(time.monotonic() - t0, 1), eta_s=None if eta is None else round(eta, 1),
                        bytes_done=done, bytes_total=total)

    thread = threading.Thread(target=report, daemon=True)
    thread.start()
    try:
        snapshot_download(repo, revision=info.sha, allow_patterns=files, local_dir=str(partial), max_workers=4)
    except KeyboardInterrupt:  # the add-on's Cancel (SIGINT)
        stop.set()
        events.emit("cancelled", run_dir=None, checkpoint=None, step=None,
                    message=f"download cancelled; {partial} is kept and the next download resumes it")
        sys.stdout.flush()
        # snapshot_download's worker threads would finish their multi-GB files before a normal exit.
        os._exit(130)
    except Exception as exc:  # the hub or the network failed mid-way: what is on disk is kept for the resume
        known = hub_errors.model_error(repo, exc)
        if known is None and not isinstance(exc, (HfHubHTTPError, OSError)):
            raise
        raise ModelError(f"downloading {repo} failed: {known or str(exc)[:300]} ({partial} is kept: run it again to "
                         "resume)") from exc
    finally:
        stop.set()
        thread.join(timeout=2)
    _rename_variants(partial, files)
    import shutil

    shutil.rmtree(partial / ".cache", ignore_errors=True)  # huggingface_hub's resume metadata, stale after renaming
    size = _bytes_on_disk(partial)
    events.emit("progress", stage="download", step=mb_total, total=mb_total, loss=None, elapsed_s=None, eta_s=0,
                bytes_done=total, bytes_total=total)
    (partial / MARKER).write_text(json.dumps({"repo_id": repo, "revision": info.sha, "files": files,
                                              "fp16_variant": fp16, "bytes": size}, indent=2), encoding="utf-8")
    os.replace(partial, final)
    events.emit("done", run_dir=None, asset={}, checkpoint=None, model_dir=final, bytes=size)
    return 0
