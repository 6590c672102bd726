"""`python -m engine texture MESH PROMPT --out DIR`: SDS on locked geometry, only the colour learns.

The user's mesh is rendered with engine/raster (in the bounding sphere, engine/texture_mesh.py) and an
albedo field (the engine's NeRFField, of which only the colour head is used: the encoding the model
family's recipe chooses) learns from SDS on random cameras, albedo and shaded renders, the background
model and view prompts, as `generate`. At the end the field is baked into the mesh's own UVs (an
xatlas atlas when it has none usable) and written with the input's geometry, untouched.

The run folder, events, previews, checkpoints, cancel, resume and exit codes are `generate`'s; the
run folder also holds texture.json (the texture run's own settings and the fit transform) and
input/mesh.npz (the mesh as loaded, so a resume does not depend on the original file).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import __version__
from .cancel import CancelFlag
from .config import PRESETS, build_config, parse_set_option, validate
from .errors import Cancelled, ConfigError, ExportError, RunFolderError
from .protocol import EventStream
from .texture_mesh import FIT_RADIUS, InputMesh, fit_transform, generated_uvs, load_input_mesh, uv_problem, write_asset

# torch (through runfolder, raster, train) is imported inside the functions: `python -m engine` builds
# this command's parser for every command, and parsing must not wait for torch.

log = logging.getLogger("engine")

TEXTURE_FILE = "texture.json"
INPUT_MESH = Path("input") / "mesh.npz"
#: What a texture run sets whatever the model's recipe says, because the geometry is fixed: no
#: textureless renders (white shading of a fixed shape carries no gradient to the colour), no occupancy
#: grid or start shape (there is no density), no albedo-only warm-up (it exists so that geometry sees
#: a rough colour before shading; here only the colour learns). An explicit --set still wins.
TEXTURE_RECIPE = dict(textureless_ratio=0.0, occupancy_grid=False, start_shape="ball", albedo_warmup=0)
PREVIEW_SIZE = 128  # mesh previews are cheap: render them sharper than the training size


def add_parser(sub) -> None:
    t = sub.add_parser("texture", help="texture your own mesh from a prompt (SDS on fixed geometry)")
    t.add_argument("mesh", nargs="?", help="the mesh: .glb, .gltf, .obj or .ply (+Y up, front +Z: glTF's convention)")
    t.add_argument("prompt", nargs="?", help="what it should look like, e.g. \"a red sphere\"")
    t.add_argument("--prompt", dest="prompt_opt", metavar="PROMPT", help="the prompt as an option")
    t.add_argument("--out", help="folder that receives the run folder (default: ./runs)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a cancelled or crashed texture run")
    t.add_argument("--preset", choices=sorted(PRESETS), default=None, help="draft | standard (default) | high")
    t.add_argument("--model", help="diffusers model: hub id, local folder, or builtin:shapes")
    t.add_argument("--negative-prompt")
    t.add_argument("--seed", type=int)
    t.add_argument("--steps", type=int, help="optimisation steps (the model's recipe otherwise)")
    t.add_argument("--device", help="auto (default) | cpu | cuda | cuda:N | mps")
    t.add_argument("--dtype", choices=["auto", "fp32", "fp16", "bf16"])
    t.add_argument("--offline", action="store_true", default=None, help="never contact the model hub")
    t.add_argument("--texture-size", type=int, help="baked texture, pixels per side")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other config field (see config.py)")
    t.add_argument("--json-events", action="store_true", help="write machine-readable events (JSON lines) to stdout")
    t.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


# --- the run's own files ----------------------------------------------------------------------------
def save_input(run_dir: Path, mesh: InputMesh, centre: np.ndarray, scale: float, sha: str) -> None:
    (run_dir / INPUT_MESH).parent.mkdir(exist_ok=True)
    arrays = dict(vertices=mesh.vertices, faces=mesh.faces)
    if mesh.corner_uvs is not None:
        arrays["corner_uvs"] = mesh.corner_uvs
    np.savez(run_dir / INPUT_MESH, **arrays)
    info = {"mesh": mesh.path, "sha256": sha, "centre": centre.tolist(), "scale": scale, "fit_radius": FIT_RADIUS,
            "vertices": int(len(mesh.vertices)), "faces": int(len(mesh.faces))}
    (run_dir / TEXTURE_FILE).write_text(json.dumps(info, indent=2))


def load_input(run_dir: Path) -> tuple[InputMesh, dict]:
    try:
        info = json.loads((run_dir / TEXTURE_FILE).read_text(encoding="utf-8"))
        data = np.load(run_dir / INPUT_MESH)
        mesh = InputMesh(vertices=data["vertices"], faces=data["faces"],
                         corner_uvs=data["corner_uvs"] if "corner_uvs" in data else None, path=info["mesh"])
    except (OSError, ValueError, KeyError) as exc:
        raise RunFolderError(f"{run_dir} is not a texture run folder ({TEXTURE_FILE} or {INPUT_MESH} is missing or "
                             f"unreadable: {exc}); resume a `generate` run with `python -m engine generate --resume`") from None
    return mesh, info


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- training ---------------------------------------------------------------------------------------
def _trainer_class():
    import torch

    from .raster import render_mesh
    from .train import Trainer

    class TextureTrainer(Trainer):
        """Trainer whose renders are the fixed mesh coloured by the field's albedo (no density, no
        geometry regularisers); everything else (cameras, prompts, SDS, checkpoints, cancel) is Trainer's."""

        def __init__(self, cfg, run_dir, events, guidance, device, verts_fit: np.ndarray, faces: np.ndarray,
                     progress_bar: bool = True):
            super().__init__(cfg, run_dir, events, guidance, device, progress_bar)
            self.verts = torch.as_tensor(verts_fit, dtype=torch.float32, device=device)
            self.faces = torch.as_tensor(faces, dtype=torch.long, device=device)
            self.packer = None

        def render(self, cams, mode, lights, background, size, ambient):
            return render_mesh(self.verts, self.faces, cams, size, size, albedo_fn=self.field.albedo, shading=mode,
                               light_positions=lights, ambient=ambient, background=background)

        def train_step(self) -> dict:
            cams, lights, mode, background = self.sample_view()
            out = self.render(cams, mode, lights, background, self.cfg.render_resolution, self.cfg.ambient)
            view = self.prompts.for_cameras(cams)
            sds, info = self.guidance.sds_loss(out.images, view.cond, view.uncond, self.guidance_scale, self.t_range(),
                                               generator=self.rng, negatives=view.negatives,
                                               negative_weights=view.negative_weights,
                                               high_noise_guidance=self.high_noise_guidance())
            self.optimizer.zero_grad(set_to_none=True)
            sds.backward()
            self.guard.step(sds)
            self.step += 1
            return {"loss": sds.detach(), "sds": sds.detach(), "mode": mode, "grad_norm": info["grad_norm"]}

        def probe_render_costs(self, modes) -> dict[str, float]:
            # A mesh render costs the same in every mode (shading is a few operations per pixel), so
            # the modes the warm-up does not see are costed as the ones it does.
            return {m: 1.0 for m in ("albedo", *modes)}

        def render_preview(self) -> np.ndarray:
            """Shaded albedo over plain albedo."""
            return self.preview_grid(("shaded", "albedo"), lambda cam, mode, light: self.render(
                cam, mode, light, self.background, PREVIEW_SIZE, 0.3).images[0])

    return TextureTrainer


# --- the bake and the asset -------------------------------------------------------------------------
def bake_texture(field, mesh: InputMesh, info: dict, cfg, device, cancel: CancelFlag, run_dir: Path,
                 events: EventStream) -> dict:
    """UVs (the input's, or xatlas's), the field's albedo baked into them, the asset written into
    RUN/asset/ (through a temporary folder: a cancelled or failed bake leaves nothing half-written)."""
    from . import runfolder
    from .mesh.bake import bake_albedo
    from .mesh.progress import Reporter

    centre, scale = np.asarray(info["centre"]), float(info["scale"])
    verts_fit = (mesh.vertices - centre) * scale
    t0 = time.monotonic()

    def stage(name: str, pct: int) -> None:
        if cancel.requested(run_dir):
            step = runfolder.checkpoint_step(run_dir)
            events.emit("cancelled", run_dir=run_dir, step=step, checkpoint=run_dir / runfolder.CHECKPOINT)
            raise Cancelled(f"bake cancelled; the checkpoint is kept: run `python -m engine texture --resume {run_dir}`")
        events.emit("progress", stage="export", substage=name, step=pct, total=100)

    stage("uv", 0)
    problem = uv_problem(mesh.corner_uvs, mesh.faces)
    if problem is None:
        corner_uvs, uv_kind = mesh.corner_uvs, "input"
    else:
        log.info("texture: generating UVs with xatlas: %s", problem)
        try:
            corner_uvs, uv_kind = generated_uvs(verts_fit, mesh.faces, cfg.texture_size), "generated"
        except RuntimeError as exc:
            raise ExportError(f"could not make UVs for the mesh ({exc}); give it UVs (Blender: UV > Smart UV Project)") from exc
    stage("bake", 30)
    flat = corner_uvs.reshape(-1, 2)
    corner_pos = verts_fit[mesh.faces].reshape(-1, 3)
    field.eval()
    image, coverage, _ = bake_albedo(field.albedo, corner_pos, np.arange(len(flat)).reshape(-1, 3), flat, cfg.texture_size,
                                     device, 65536, Reporter(False, None), mode="texel", bound=cfg.bound)
    stage("write", 90)
    asset_dir = run_dir / "asset"
    if asset_dir.exists():  # a re-run's bake never overwrites the earlier asset
        asset_dir = run_dir / f"asset-{time.strftime('%Y%m%d-%H%M%S')}"
    tmp = Path(tempfile.mkdtemp(prefix=".asset.partial-", dir=run_dir))
    try:
        meta = {"uv": uv_kind, "uv_reason": problem, "texture_size": cfg.texture_size, "chart_coverage": round(coverage, 4),
                "prompt": cfg.prompt, "model": cfg.model, "seed": cfg.seed, "steps": cfg.steps, "source": mesh.path,
                "fit": {"centre": info["centre"], "scale": scale}, "bake_s": round(time.monotonic() - t0, 2),
                "engine_version": __version__}
        write_asset(tmp, mesh, corner_uvs, image, meta)
        tmp.rename(asset_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    paths = {k: str(asset_dir / n) for k, n in (("glb", "asset.glb"), ("texture", "albedo.png"),
                                                 ("corner_uvs", "corner_uvs.npy"), ("json", "asset.json"))}
    events.emit("export", kind="texture", uv=uv_kind, faces=int(len(mesh.faces)), texture_size=cfg.texture_size)
    return paths


# --- the command ------------------------------------------------------------------------------------
def cmd_texture(args, events: EventStream, cancel: CancelFlag) -> int:
    from . import runfolder
    from .run_setup import _setup_logging, apply_resume_overrides, load_guidance, warn_unknown_words
    from .guidance import pick_device, pick_dtype

    if args.prompt_opt is not None:
        if args.prompt is not None:
            raise ConfigError("give the prompt once: either as an argument or with --prompt")
        args.prompt = args.prompt_opt
    overrides = dict(prompt=args.prompt, model=args.model, negative_prompt=args.negative_prompt, seed=args.seed,
                     steps=args.steps, device=args.device, dtype=args.dtype, offline=args.offline,
                     texture_size=args.texture_size)
    overrides.update(dict(parse_set_option(item) for item in args.set))
    state = None
    # Every check on the input happens here, before the model loads and before any folder exists.
    if args.resume:
        if args.mesh is not None:
            raise ConfigError("--resume continues a texture run with its own copy of the mesh: drop the MESH argument")
        run_dir = Path(args.resume)
        cfg = runfolder.load_run_config(run_dir)
        mesh, info = load_input(run_dir)
        state = runfolder.load_checkpoint(run_dir)
        changed = apply_resume_overrides(cfg, overrides, args, int(state["step"]))
    else:
        if args.mesh is None or args.prompt is None:
            raise ConfigError("give a mesh and a prompt, e.g. python -m engine texture chair.glb \"a wooden chair\", "
                              "or --resume RUN_DIR")
        mesh = load_input_mesh(args.mesh)
        cfg = build_config(args.preset or "standard", **overrides)
        runfolder.check_writable_parent(Path(args.out or "runs"))
        run_dir, changed = None, {}
    device = pick_device(cfg.device)
    dtype = pick_dtype(cfg.dtype, device)
    events.emit("progress", stage="load", step=0, total=1, loss=None, elapsed_s=0.0, eta_s=None)
    guidance = load_guidance(cfg, device, dtype, cancel, events, run_dir, state)
    warn_unknown_words(guidance.tokenizer, cfg.prompt, events)
    if run_dir is None:
        from .recipe import resolve

        explicit = {k for k, v in overrides.items() if v is not None}
        resolve(cfg, guidance.family, guidance.recommended, explicit=explicit)
        for key, value in TEXTURE_RECIPE.items():
            if key not in explicit:
                setattr(cfg, key, value)
        validate(cfg)
        centre, scale = fit_transform(mesh.vertices, cfg.bound)
        run_dir = runfolder.create_run_dir(Path(args.out or "runs"), cfg.prompt)
        cfg.save(run_dir / runfolder.CONFIG)
        save_input(run_dir, mesh, centre, scale, _sha256(mesh.path))
        info = json.loads((run_dir / TEXTURE_FILE).read_text())
    else:
        runfolder.clear_cancel(run_dir)
        if changed:
            runfolder.save_run_config(run_dir, cfg)
    events.attach(run_dir / runfolder.EVENTS)
    _setup_logging(run_dir, quiet=args.no_progress)
    events.emit("start", run_dir=run_dir, config=cfg.to_json(), engine_version=__version__, device=str(device),
                resumed_from=None if state is None else int(state["step"]), latent_encoder=guidance.latent_encoder,
                kind="texture", mesh=info["mesh"], faces=info["faces"], vertices=info["vertices"])
    log.info("texture run %s: %s (%d vertices, %d faces), device %s, model %s (%s)", run_dir, info["mesh"],
             info["vertices"], info["faces"], device, cfg.model, guidance.family)
    verts_fit = (mesh.vertices - np.asarray(info["centre"])) * float(info["scale"])
    trainer = _trainer_class()(cfg, run_dir, events, guidance, device, verts_fit, mesh.faces,
                               progress_bar=not args.no_progress)
    trainer.cancel = cancel
    if state is not None:
        trainer.load_state_dict(state)
        log.info("resumed at step %d/%d", trainer.step, cfg.steps)
    trainer.run()
    del guidance
    trainer.guidance = None
    asset = bake_texture(trainer.field, mesh, info, cfg, device, cancel, run_dir, events)
    checkpoint = run_dir / runfolder.CHECKPOINT
    events.emit("done", run_dir=run_dir, asset=asset, checkpoint=checkpoint)
    print(f"done: {asset['glb']}", file=sys.stderr)
    return 0
