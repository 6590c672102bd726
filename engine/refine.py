"""The mesh refinement stage of `generate` (issue 29): after the NeRF's export, move the exported
mesh's vertices and train the albedo on with SDS through rasterised renders (engine/raster), with a
Laplacian and a normal-consistency regulariser, then bake and write the refined mesh.

Geometry: per-vertex offsets on the exported (welded) mesh, not DMTet. The exported surface already
has the NeRF's topology and a clean, decimated triangulation; offsets keep its triangle count, need
no tetrahedral grid (memory and time on a 2-core CPU) and reuse the exporter's UV/bake/write path
unchanged. The price: no topology change and triangles that can degrade, which ``triangle_report``
detects (shares of slivers and of faces flipped against their start) and the run reports.

Files in the run folder: refine/input.npz (the welded mesh the stage started from, so a resume does
not depend on the export), refine/refine.pt (the stage's checkpoint, with the settings it ran with:
a resume with other settings is refused), refined/ (the asset: asset.glb, asset.png, asset.json).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from . import __version__, runfolder
from .cancel import CancelFlag
from .config import JobConfig
from .errors import Cancelled, ConfigError, ExportError
from .protocol import EventStream

log = logging.getLogger("engine")

REFINE_DIR = Path("refine")
REFINE_INPUT = REFINE_DIR / "input.npz"
REFINE_CHECKPOINT = REFINE_DIR / "refine.pt"
OUT_NAME = "refined"
#: The settings a refinement checkpoint is bound to (a resume with others would be a different run).
SETTING_KEYS = ("refine_steps", "refine_lr", "refine_laplacian_weight", "refine_normal_weight", "refine_smooth_iterations")
#: A triangle with quality 4*sqrt(3)*area / sum(edge^2) below this is a sliver (1: equilateral).
SLIVER_QUALITY = 0.05
#: Warn when the slivers' share grows by more than this during the refinement, or this share of faces flips.
DEGRADED_SHARE = 0.02


def settings_of(cfg: JobConfig) -> dict:
    return {k: getattr(cfg, k) for k in SETTING_KEYS}


# --- the mesh the stage starts from ------------------------------------------------------------------
def load_export_mesh(glb: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The exported asset's triangles with the UV seams' duplicated vertices welded (the regularisers
    need the mesh's real neighbours). ExportError if there is no surface to refine."""
    import trimesh

    try:
        loaded = trimesh.load(str(glb), force="mesh", process=False)
    except Exception as exc:  # noqa: BLE001 - any parser failure means "no usable export"
        raise ExportError(f"the NeRF export {glb} could not be read for the mesh refinement ({type(exc).__name__}: "
                          f"{exc}); re-export the run, or run without refinement (--refine-steps 0)") from None
    verts = np.asarray(getattr(loaded, "vertices", np.zeros((0, 3))), dtype=np.float64).reshape(-1, 3)
    faces = np.asarray(getattr(loaded, "faces", np.zeros((0, 3))), dtype=np.int64).reshape(-1, 3)
    if len(faces) == 0 or len(verts) < 3:
        raise ExportError(f"the NeRF export {glb} is empty ({len(verts)} vertices, {len(faces)} triangles): there is "
                          "no surface to refine. Train longer or change the prompt, or run without refinement "
                          "(--refine-steps 0)")
    welded = trimesh.Trimesh(vertices=verts, faces=faces, process=True)  # merges equal positions only
    return np.asarray(welded.vertices, dtype=np.float64), np.asarray(welded.faces, dtype=np.int64)


# --- regularisers and triangle quality ------------------------------------------------------------
class MeshTopology:
    """Precomputed neighbours of a fixed triangulation: unique edges (for the uniform Laplacian) and
    the face pairs across interior edges (for the normal consistency)."""

    def __init__(self, faces: torch.Tensor, n_verts: int):
        f = faces.long()
        e = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], 0)
        e_sorted = torch.sort(e, dim=1).values
        uniq, inverse, counts = torch.unique(e_sorted, dim=0, return_inverse=True, return_counts=True)
        self.edges = uniq
        self.n_verts = n_verts
        deg = torch.zeros(n_verts, dtype=torch.float32, device=f.device)
        deg.index_add_(0, uniq.reshape(-1), torch.ones(uniq.numel(), device=f.device))
        self.degree = deg.clamp_min(1.0)
        face_of = torch.arange(len(f), device=f.device).repeat(3)
        order = torch.argsort(inverse)
        inv_sorted, faces_sorted = inverse[order], face_of[order]
        # Edges shared by exactly two faces: consecutive entries with the same edge id.
        same = inv_sorted[1:] == inv_sorted[:-1]
        pair_ok = same & (counts[inv_sorted[:-1]] == 2)
        self.face_pairs = torch.stack([faces_sorted[:-1][pair_ok], faces_sorted[1:][pair_ok]], 1)

    def smooth(self, x: torch.Tensor, iterations: int) -> torch.Tensor:
        """``iterations`` passes of x <- (x + mean(neighbours)) / 2: a low-pass filter over the mesh."""
        a, b = self.edges[:, 0], self.edges[:, 1]
        for _ in range(iterations):
            acc = torch.zeros_like(x)
            acc.index_add_(0, a, x[b])
            acc.index_add_(0, b, x[a])
            x = 0.5 * (x + acc / self.degree[:, None])
        return x

    def laplacian(self, verts: torch.Tensor) -> torch.Tensor:
        """Mean squared uniform Laplacian |v - mean(neighbours)|^2."""
        a, b = self.edges[:, 0], self.edges[:, 1]
        acc = torch.zeros_like(verts)
        acc.index_add_(0, a, verts[b])
        acc.index_add_(0, b, verts[a])
        lap = verts - acc / self.degree[:, None]
        return (lap * lap).sum(-1).mean()

    def normal_consistency(self, verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        """Mean 1 - cos of the angle between the normals of faces that share an edge."""
        from .raster import face_normals

        if len(self.face_pairs) == 0:
            return verts.sum() * 0.0
        n = face_normals(verts, faces)
        return (1.0 - (n[self.face_pairs[:, 0]] * n[self.face_pairs[:, 1]]).sum(-1)).mean()


def triangle_quality(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """4*sqrt(3)*area / (sum of squared edge lengths) per face: 1 equilateral, 0 degenerate."""
    t = verts[faces]
    e2 = sum(((t[:, i] - t[:, (i + 1) % 3]) ** 2).sum(-1) for i in range(3))
    area = 0.5 * np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1)
    return np.where(e2 > 0, 4.0 * np.sqrt(3.0) * area / np.maximum(e2, 1e-30), 0.0)


def triangle_report(verts0: np.ndarray, verts: np.ndarray, faces: np.ndarray) -> dict:
    """How the triangles changed: sliver shares before/after, the share of faces whose normal turned
    by more than 90 degrees, and whether that counts as degraded (a warning; no remeshing is done)."""
    q0, q1 = triangle_quality(verts0, faces), triangle_quality(verts, faces)

    def normals(v):
        t = v[faces]
        n = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])
        return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-30)

    flipped = float(((normals(verts0) * normals(verts)).sum(1) < 0).mean())
    s0, s1 = float((q0 < SLIVER_QUALITY).mean()), float((q1 < SLIVER_QUALITY).mean())
    return {"sliver_share_before": round(s0, 4), "sliver_share_after": round(s1, 4), "flipped_share": round(flipped, 4),
            "median_quality_before": round(float(np.median(q0)), 4), "median_quality_after": round(float(np.median(q1)), 4),
            "degraded": bool(s1 - s0 > DEGRADED_SHARE or flipped > DEGRADED_SHARE)}


# --- the stage's trainer -------------------------------------------------------------------------
def refine_config(cfg: JobConfig) -> JobConfig:
    """The NeRF run's config as the refinement's Trainer sees it: its steps are the refinement's,
    no albedo-only warm-up (the albedo has trained already) and no occupancy grid (no density)."""
    n = cfg.refine_steps
    return dataclasses.replace(cfg, steps=n, albedo_warmup=0, occupancy_grid=False,
                               preview_every=max(1, min(cfg.preview_every, n)),
                               checkpoint_every=max(1, min(cfg.checkpoint_every, n)))


def _trainer_class():
    from .raster import render_mesh
    from .train import Trainer, set_coarse_to_fine

    class RefineTrainer(Trainer):
        """Trainer whose renders are the mesh (start + learned offsets) coloured by the field's albedo."""

        stage = "refine"

        def __init__(self, cfg, nerf_cfg, run_dir, events, guidance, device, verts0: np.ndarray, faces: np.ndarray,
                     prompts, progress_bar: bool = True):
            super().__init__(cfg, run_dir, events, guidance, device, progress_bar, prompts=prompts)
            self.nerf_cfg = nerf_cfg
            self.verts0 = torch.as_tensor(verts0, dtype=torch.float32, device=device)
            self.faces = torch.as_tensor(faces, dtype=torch.long, device=device)
            self.offsets = torch.nn.Parameter(torch.zeros_like(self.verts0))
            self.optimizer.add_param_group({"params": [self.offsets], "lr": cfg.refine_lr, "name": "offsets"})
            self.topology = MeshTopology(self.faces, len(self.verts0))
            # The Laplacian in units of the start's mean edge length: its weight does not depend on the mesh's density.
            e = self.topology.edges
            self.edge_scale = float(((self.verts0[e[:, 0]] - self.verts0[e[:, 1]]) ** 2).sum(-1).mean().clamp_min(1e-12))
            self.packer = None

        @property
        def verts(self) -> torch.Tensor:
            # The learned offsets reach the mesh low-pass filtered (as "large steps" preconditioning does,
            # Nicolet et al. 2021): Adam's per-coordinate steps on raw vertices turn SDS's noisy gradients
            # into vertex noise (measured: bumpiness 2.1 -> 17.8 on the seed-0 cube after 100 steps).
            return self.verts0 + self.topology.smooth(self.offsets, self.cfg.refine_smooth_iterations)

        def sample_view(self, mode=None):
            out = super().sample_view(mode)
            set_coarse_to_fine(self.field, self.nerf_cfg, self.nerf_cfg.steps)  # the NeRF's final levels and bands
            return out

        def render(self, cams, mode, lights, background, size, ambient):
            return render_mesh(self.verts, self.faces, cams, size, size, albedo_fn=self.field.albedo, shading=mode,
                               light_positions=lights, ambient=ambient, background=background)

        def train_step(self) -> dict:
            cfg = self.cfg
            cams, lights, mode, background = self.sample_view()
            verts = self.verts
            out = render_mesh(verts, self.faces, cams, cfg.render_resolution, cfg.render_resolution,
                              albedo_fn=self.field.albedo, shading=mode, light_positions=lights, ambient=cfg.ambient,
                              background=background)
            view = self.prompts.for_cameras(cams)
            sds, info = self.guidance.sds_loss(out.images, view.cond, view.uncond, self.guidance_scale, self.t_range(),
                                               generator=self.rng, negatives=view.negatives,
                                               negative_weights=view.negative_weights,
                                               high_noise_guidance=self.high_noise_guidance())
            lap = self.topology.laplacian(verts) / self.edge_scale
            nc = self.topology.normal_consistency(verts, self.faces)
            loss = sds + cfg.refine_laplacian_weight * lap + cfg.refine_normal_weight * nc
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.guard.step(loss)
            self.step += 1
            return {"loss": loss.detach(), "sds": sds.detach(), "mode": mode, "grad_norm": info["grad_norm"]}

        def probe_render_costs(self, modes) -> dict[str, float]:
            return {m: 1.0 for m in ("albedo", *modes)}  # a mesh render costs about the same in every mode

        def state_dict(self) -> dict:
            state = super().state_dict()
            state["offsets"] = self.offsets.detach().cpu()
            state["settings"] = settings_of(self.cfg)
            return state

        def load_state_dict(self, state: dict) -> None:
            super().load_state_dict(state)
            with torch.no_grad():
                self.offsets.copy_(state["offsets"].to(self.offsets.device))

        def save_checkpoint(self) -> Path:
            path = self.run_dir / REFINE_CHECKPOINT
            tmp = path.with_suffix(".tmp")
            torch.save(self.state_dict(), tmp)
            os.replace(tmp, path)
            self.events.emit("checkpoint", step=self.step, path=path, stage=self.stage)
            return path

        def render_preview(self) -> np.ndarray:
            """The shaded refined mesh over its albedo."""
            return self.preview_grid(("textureless", "albedo"), lambda cam, mode, light: self.render(
                cam, mode, light, self.background, 128, 0.3).images[0])

        def write_preview(self) -> Path:
            from PIL import Image

            path = self.run_dir / "previews" / f"refine_{self.step:06d}.png"
            tmp = path.with_suffix(".tmp.png")
            Image.fromarray(self.render_preview()).save(tmp)
            tmp.replace(path)
            self.events.emit("preview", step=self.step, path=path, stage=self.stage)
            return path

    return RefineTrainer


# --- checks before any work ------------------------------------------------------------------------
def check_resume(run_dir: Path, cfg: JobConfig) -> None:
    """A refinement checkpoint binds the refinement settings: refuse a resume whose config differs
    (before the model loads; nothing is changed)."""
    path = Path(run_dir) / REFINE_CHECKPOINT
    if not path.is_file():
        return
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True).get("settings", {})
    except Exception as exc:  # noqa: BLE001
        raise runfolder.RunFolderError(f"the refinement checkpoint {path} is unreadable ({type(exc).__name__}: {exc}); "
                                       f"move it away to start the refinement again") from exc
    now = settings_of(cfg)
    diff = [f"{k} (checkpoint: {saved.get(k)!r}, config: {now[k]!r})" for k in SETTING_KEYS if saved.get(k) != now[k]]
    if diff:
        raise ConfigError("the mesh refinement was started with other settings than the run's config.json now holds: "
                          + "; ".join(diff) + f". Put them back, or move {path} away to refine again from the start")


# --- the stage ---------------------------------------------------------------------------------------
def run_refine(run_dir: Path, cfg: JobConfig, events: EventStream, guidance, device: torch.device, cancel: CancelFlag,
               nerf_asset: dict, prompts, progress: bool = True) -> dict:
    """Refine the NeRF export (or resume a refinement), bake, write RUN/refined/; returns its paths."""
    run_dir = Path(run_dir)
    (run_dir / REFINE_DIR).mkdir(exist_ok=True)
    ckpt = run_dir / REFINE_CHECKPOINT
    state = torch.load(ckpt, map_location="cpu", weights_only=True) if ckpt.is_file() else None
    if state is None:
        verts0, faces = load_export_mesh(nerf_asset["glb"])
        np.savez(run_dir / REFINE_INPUT, vertices=verts0, faces=faces)
    else:
        data = np.load(run_dir / REFINE_INPUT)
        verts0, faces = data["vertices"], data["faces"]
    rcfg = refine_config(cfg)
    trainer = _trainer_class()(rcfg, cfg, run_dir, events, guidance, device, verts0, faces, prompts,
                                     progress_bar=progress)
    trainer.cancel = cancel
    if state is not None:
        trainer.load_state_dict(state)
        log.info("refinement resumed at step %d/%d", trainer.step, rcfg.steps)
    else:
        nerf = runfolder.load_checkpoint(run_dir)
        trainer.field.load_state_dict(nerf["field"])
        trainer.background.load_state_dict(nerf["background"])
        log.info("refinement: %d vertices, %d faces, %d steps", len(verts0), len(faces), rcfg.steps)
    t0 = time.monotonic()
    trainer.run()
    verts = trainer.verts.detach().cpu().numpy().astype(np.float64)
    report = triangle_report(verts0, verts, faces)
    if report["degraded"]:
        msg = (f"the mesh refinement degraded triangles (slivers {report['sliver_share_before']:.1%} -> "
               f"{report['sliver_share_after']:.1%}, flipped {report['flipped_share']:.1%}); try a larger "
               "refine_laplacian_weight or fewer refine steps")
        log.warning(msg)
        events.emit("warning", message=msg)
    meta = {"kind": "refined", "refine_steps": cfg.refine_steps, **settings_of(cfg), "triangles": report,
            "offset_max": round(float(np.linalg.norm(verts - verts0, axis=1).max()), 5),
            "offset_mean": round(float(np.linalg.norm(verts - verts0, axis=1).mean()), 5),
            "refine_s": round(time.monotonic() - t0, 2), "nerf_asset": nerf_asset.get("glb"), "prompt": cfg.prompt,
            "model": cfg.model, "seed": cfg.seed, "steps": cfg.steps, "engine_version": __version__}
    return export_refined(verts, faces, trainer.field, cfg, device, run_dir, events, cancel, meta)


def export_refined(verts: np.ndarray, faces: np.ndarray, field, cfg: JobConfig, device, run_dir: Path,
                   events: EventStream, cancel: CancelFlag, meta: dict) -> dict:
    """The exporter's own path on the refined mesh: outward orientation, normals, xatlas atlas, albedo
    bake, glb + png (+ obj) and asset.json, through a temporary folder (a cancel leaves nothing half-written)."""
    from .export_run import _settings
    from .mesh import bake, surface, uv, write
    from .mesh.progress import Reporter

    s = _settings(cfg, str(device), False)

    def stage(name: str, pct: int) -> None:
        if cancel.requested(run_dir):
            events.emit("cancelled", run_dir=run_dir, step=cfg.refine_steps, checkpoint=run_dir / REFINE_CHECKPOINT)
            raise Cancelled(f"refined export cancelled; the refinement checkpoint is kept: resume with "
                            f"`python -m engine generate --resume {run_dir}`")
        events.emit("progress", stage="export", substage=name, step=pct, total=100)

    t0 = time.monotonic()
    stage("orient", 0)
    faces = surface.orient_outward(verts, faces)
    normals = surface.vertex_normals(verts, faces)
    stage("uv", 10)
    vmap, uv_faces, uvs = uv.unwrap(verts, faces, s.texture_size, s.texture_padding, s.atlas)
    verts_uv, normals = verts[vmap], normals[vmap]
    stage("bake", 50)
    field.eval()
    with torch.no_grad():
        image, coverage, _ = bake.bake_albedo(field.albedo, verts_uv, uv_faces, uvs, s.texture_size, s.device, s.chunk_size,
                                              Reporter(False, None), "texel", s.resolution, s.bound)
    stage("write", 90)
    out_dir = run_dir / OUT_NAME
    if out_dir.exists():  # an earlier refined asset is never overwritten
        out_dir = run_dir / f"{OUT_NAME}-{time.strftime('%Y%m%d-%H%M%S')}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{OUT_NAME}.partial-", dir=run_dir))
    try:
        mesh = write.build_mesh(verts_uv, uv_faces, normals, uvs, image, s.name, s.roughness, s.metallic)
        names = {"texture": write.write_png(image, tmp / f"{s.name}.png").name}
        if "glb" in s.formats:
            names["glb"] = write.write_glb(mesh, tmp / f"{s.name}.glb").name
        if "obj" in s.formats:
            names["obj"] = write.write_obj(mesh, tmp / f"{s.name}.obj", tmp / f"{s.name}.png").name
        meta = {**meta, "faces": int(len(uv_faces)), "vertices": int(len(verts_uv)), "texture_size": s.texture_size,
                "texture_coverage": round(float(coverage), 4), "export_s": round(time.monotonic() - t0, 2)}
        (tmp / "asset.json").write_text(json.dumps(meta, indent=2))
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    events.emit("export", kind="refined", faces=meta["faces"], vertices=meta["vertices"], triangles=meta["triangles"])
    paths = {k: str(out_dir / n) for k, n in names.items()}
    paths["json"] = str(out_dir / "asset.json")
    return paths
