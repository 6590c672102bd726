"""Mesh export: density field -> textured mesh -> .glb (the engine's last stage).

    from engine.mesh import ExportSettings, ExportResult, export_field
    result = export_field(field.density, field.albedo, out_dir, ExportSettings(resolution=256))

Pipeline (one module per step): grid (sample density in the bounding sphere, coarse to fine) ->
iso (surface level from the rendered opacity) -> surface (marching cubes at the iso-level,
component filter, decimation, outward orientation, smooth normals) -> smooth (Taubin) ->
uv (xatlas atlas) -> bake (rasterise UV triangles, query albedo, fill seams) -> write (glb/obj/png).
See docs/EXPORT.md."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from ..errors import ExportError
from . import bake, grid, smooth, surface, uv, write
from . import iso as iso_mod
from .progress import STAGE_COST, STAGES, ProgressCallback, Reporter
from .settings import DEFAULT_ISO, ExportResult, ExportSettings

__all__ = ["ExportSettings", "ExportResult", "export_field", "DEFAULT_ISO", "STAGES", "STAGE_COST"]


def export_field(density_fn: Callable[[torch.Tensor], torch.Tensor],
                 albedo_fn: Callable[[torch.Tensor], torch.Tensor],
                 out_dir: str | Path, settings: ExportSettings | None = None,
                 progress_callback: ProgressCallback | None = None) -> ExportResult:
    """Export a field to ``out_dir/<name>.glb`` (+ ``<name>.png``, optional ``<name>.obj/.mtl``).

    density_fn: (N,3) float32 world points on ``settings.device`` -> (N,) non-negative density.
    albedo_fn:  (N,3) -> (N,3) colours in [0,1].
    progress_callback(stage, fraction) is called as each stage starts (0), advances and ends (1);
    stages, in order: ``STAGES`` (density, iso (and the silhouette carve), refine (adaptive sampling), surface, clean, smooth
    (if on), decimate (only if needed), orient, uv, rasterize, albedo, dilate, write);
    ``STAGE_COST`` gives each one's rough share of the time. The surface is the level set
    density = iso: ``settings.iso``, or chosen from the field's rendered opacity (iso.py), carved to
    the rendered silhouettes where no single level matches them (hull.py; ``settings.silhouette_carve``).
    Raises ExportError (with advice) when the field is empty or fills the bounding sphere."""
    s = settings or ExportSettings()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rep = Reporter(s.progress, progress_callback)
    t_start, c_start = time.perf_counter(), time.process_time()
    was_training = _eval_mode(density_fn, albedo_fn)
    try:
        g, choice, n_queried, level_grid_n = _sample_grid(density_fn, s, rep)
        iso = choice.iso

        with rep.stage("surface"):
            surface.check_not_empty(g, iso)
            verts, faces = surface.extract_surface(g, iso, s.bound)
            del g
            n_extracted = len(faces)
        with rep.stage("clean"):
            verts, faces, n_comp, n_kept = surface.keep_components(verts, faces, s.keep_fraction)
        volume_change = 0.0
        if s.smooth_iterations > 0:
            with rep.stage("smooth"):
                vol0 = surface.signed_volume(verts, faces)
                verts = smooth.taubin(verts, faces, s.smooth_iterations)
                volume_change = surface.signed_volume(verts, faces) / vol0 - 1.0 if vol0 else 0.0
        if s.target_faces is not None and len(faces) > s.target_faces:
            with rep.stage("decimate"):
                verts, faces = surface.decimate(verts, faces, s.target_faces)
        if len(faces) == 0:  # defensive: the occupancy check should make this unreachable
            raise ExportError(f"No surface was found at iso={iso:g}; try a lower iso or train longer.")
        with rep.stage("orient"):
            faces = surface.orient_outward(verts, faces)
            normals = surface.vertex_normals(verts, faces)
            watertight = surface.is_watertight(faces)

        with rep.stage("uv"):
            vmap, uv_faces, uvs = uv.unwrap(verts, faces, s.texture_size, s.texture_padding, s.atlas)
            verts, normals = verts[vmap], normals[vmap]

        image, coverage, n_albedo = bake.bake_albedo(albedo_fn, verts, uv_faces, uvs, s.texture_size, s.device,
                                                     s.chunk_size, rep, s.albedo_sampling, s.resolution, s.bound)

        with rep.stage("write", len(s.formats) + 1) as st:
            mesh = write.build_mesh(verts, uv_faces, normals, uvs, image, s.name, s.roughness, s.metallic)
            paths = {"texture": write.write_png(image, out / f"{s.name}.png")}
            st.update(1)
            if "glb" in s.formats:
                paths["glb"] = write.write_glb(mesh, out / f"{s.name}.glb")
                st.update(1)
            if "obj" in s.formats:
                paths["obj"] = write.write_obj(mesh, out / f"{s.name}.obj", paths["texture"])
                st.update(1)
    finally:
        _restore_mode(was_training)
    timings = dict(rep.timings)
    timings["total"] = time.perf_counter() - t_start
    cpu_timings = dict(rep.cpu_timings)
    cpu_timings["total"] = time.process_time() - c_start
    return ExportResult(paths=paths, n_vertices=len(verts), n_faces=len(uv_faces), iso=iso, watertight=watertight,
                        timings=timings, n_faces_extracted=n_extracted, n_components=n_comp,
                        n_components_kept=n_kept, texture_coverage=coverage, iso_method=choice.method,
                        iso_silhouette_iou=choice.silhouette_iou, points_queried=n_queried, carved=choice.carved,
                        iso_uncarved_iou=choice.uncarved_iou, iso_grid_resolution=level_grid_n,
                        volume_change=volume_change, cpu_timings=cpu_timings, albedo_queried=n_albedo)


def _sample_grid(density_fn, s: ExportSettings, rep: Reporter):
    """The fine density grid, the surface level, points queried and the size of the grid the level
    was chosen on: dense, or coarse -> level -> fine near the surface (grid.py). The occupancy
    checks run on the first grid, before the expensive part."""
    dense = s.sampling == "dense" or grid.coarse_resolution(s.resolution) >= s.resolution
    first = grid.sample_density(density_fn, s.resolution if dense else grid.coarse_resolution(s.resolution),
                                s.bound, s.device, s.chunk_size, rep)
    n_queried = grid.points_inside(first.shape[0], s.bound)
    with rep.stage("iso"):
        choice = (iso_mod.IsoChoice(float(s.iso), "given") if s.iso is not None
                  else iso_mod.choose_iso(first, s.bound, s.silhouette_carve))
        if choice.carved:  # from here on, the surface is a level set of the carved density (hull.py)
            first = choice.hull.carve_grid(first, choice.iso, choice.hull_grid)
            density_fn = iso_mod.surface_density(density_fn, choice)
        if dense or first.max() > choice.iso:
            surface.check_occupancy(first, choice.iso, s.bound)
        # else: a feature thinner than the coarse spacing may still reach the level: the fine grid decides
        # (surface.check_not_empty).
    level_grid_n = first.shape[0]
    if dense:
        return first, choice, n_queried, level_grid_n
    g = first
    levels = grid.refinement_levels(s.resolution)[1:]
    with rep.stage("refine", len(levels)) as st:
        for k, level in enumerate(levels):
            g, n_level = grid.sample_near_surface(density_fn, g, level, s.bound, choice.iso, s.device, s.chunk_size,
                                                  tail=grid.TAIL if k == 0 else grid.TAIL_FINE)
            n_queried += n_level
            st.update(1)
    return g, choice, n_queried, level_grid_n


def _eval_mode(*fns) -> list:
    """If the callables are bound methods of nn.Modules (field.density), export in eval mode."""
    changed = []
    for fn in fns:
        mod = getattr(fn, "__self__", None)
        if isinstance(mod, torch.nn.Module) and mod.training:
            mod.eval()
            changed.append(mod)
    return changed


def _restore_mode(modules: list) -> None:
    for m in modules:
        m.train()
