"""What bench_sds.py compares side by side (--variants PATH-ENCODER): the render paths, and the field a
trained checkpoint fixes (--field-checkpoint). The latent encoders (vae | tiny) are built in sds_models."""
from __future__ import annotations

from pathlib import Path


# Render paths: "fast" is the engine's default; "reference" is the first engine's (no occupancy grid,
# central-difference normals of every sample), kept selectable through these settings.
RENDER_PATHS = {
    "fast": dict(occupancy_grid=True, normals="forward_difference", normal_samples="weighted"),
    "reference": dict(occupancy_grid=False, normals="finite_difference", normal_samples="all"),
}
# Settings a trained checkpoint fixes (its field's layout); the bench's preset sets the rest.
FIELD_LAYOUT = ("encoding", "hash_levels", "hash_log2_table", "hidden_dim", "bound", "blob_density", "blob_radius", "background")


def checkpoint_layout(run_dir: Path | None) -> tuple[dict, dict | None]:
    """(config overrides, state) of a trained run folder, or ({}, None)."""
    if not run_dir:
        return {}, None
    from engine import runfolder

    cfg = runfolder.load_run_config(Path(run_dir))
    return {k: getattr(cfg, k) for k in FIELD_LAYOUT}, runfolder.load_checkpoint(Path(run_dir))


def load_trained_field(trainer, state: dict | None) -> None:
    if state is not None:
        trainer.field.load_state_dict(state["field"])
        trainer.background.load_state_dict(state["background"])


def parse_variants(text: str) -> list[tuple[str, str]]:
    out = []
    for item in text.split(","):
        path, _, enc = item.strip().partition("-")
        if path not in RENDER_PATHS or enc not in ("vae", "tiny"):
            raise SystemExit(f"--variants: {item!r} is not PATH-ENCODER with PATH in {sorted(RENDER_PATHS)} and ENCODER vae|tiny")
        out.append((path, enc))
    return out
