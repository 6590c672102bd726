"""Does the chosen preset fit the GPU `engine check` found? Estimates, and what to do when it does not.

No bpy here. The model's share comes from the known-model table (engine/known_models.json, its
``memory_gib``: GPU-resident fp16 weights and per-step activations, from docs/BENCHMARKS.md's fp16
estimates made from CPU measurements, not measured on a GPU; the panel says "estimated"); a model not
in the table is estimated as the default one. The rest is the model-independent part: CUDA context
0.75 GiB; the NeRF's saved render tensors with the fast render path 1.2 GiB at 128 px x 96 samples per
ray x 12 hash levels, scaled to each preset's pixels x samples x levels; NeRF + Adam = levels x table x
2 features x 16 bytes; and the benchmark's +20 % for fragmentation (SD 1.5, high: 7.6 GiB, as
BENCHMARKS.md). The table's ``fits_preset`` column is this estimate for 8/12/24 GB (a test recomputes it).
"""

from __future__ import annotations

from pathlib import Path

from . import known_models

CONTEXT_GB = 0.75
RENDER_SAVED_GB_PER_UNIT = 1.2 / (128 * 128 * 96 * 12)  # per pixel × sample × hash level
SLACK = 1.2
# render px, samples per ray, hash levels, log2 hash table size (engine/config.py PRESETS)
PRESETS = {"draft": (64, 48, 12, 15), "standard": (64, 64, 12, 16), "high": (128, 96, 16, 19)}
ORDER = ("high", "standard", "draft")


def model_entry(model: str) -> dict:
    """The table entry whose memory figures apply: the id itself, a model manager folder named
    <owner>--<name>, else the default model (an unknown model is estimated as SD-1.5-size)."""
    name = (model or "").strip()
    m = known_models.entry(name) or known_models.entry(Path(name).name.replace("--", "/", 1))
    if m is None or not m.get("memory_gib"):
        m = known_models.entry(known_models.default_model())
    return m


def estimate_gb(preset: str, model: str = "") -> float:
    """Estimated peak GPU memory (GiB, with slack) of an SDS run with this preset and model."""
    px, spp, levels, log2 = PRESETS[preset]
    render = RENDER_SAVED_GB_PER_UNIT * px * px * spp * levels
    nerf = levels * 2**log2 * 2 * 16 / 2**30
    mem = model_entry(model)["memory_gib"]
    total = mem["weights"] + mem["activations"] + nerf + render + CONTEXT_GB
    return round(total * SLACK, 1)


def preset_for(memory_gb: float, model: str = "") -> str | None:
    """The largest preset whose estimate fits ``memory_gb`` (None: none does)."""
    return next((p for p in ORDER if estimate_gb(p, model) <= memory_gb), None)


def gpu_memory_gb(check: dict | None) -> float | None:
    """The memory of the GPU the engine will use, from its check report (None: no CUDA GPU / no report)."""
    if not check or not check.get("cuda_available") or not check.get("gpus"):
        return None
    device = str(check.get("device") or "cuda")
    index = int(device.split(":")[1]) if ":" in device else 0
    gpus = check["gpus"]
    return float(gpus[min(index, len(gpus) - 1)]["memory_gb"])


def advice(check: dict | None, preset: str, model: str = "") -> tuple[bool | None, str, str | None]:
    """(fits, message, a preset that fits or None). fits is None when there is no GPU report to compare."""
    have = gpu_memory_gb(check)
    if have is None or model.startswith("builtin:"):
        return None, "", None
    need = estimate_gb(preset, model)
    if need <= have:
        return True, f"{preset} needs about {need} GB (estimated); the GPU has {have} GB", None
    smaller = next((p for p in ORDER[ORDER.index(preset) + 1:] if estimate_gb(p, model) <= have), None)
    msg = f"{preset} needs about {need} GB (estimated) but the GPU has {have} GB"
    if smaller:
        return False, msg + f": use {smaller} ({estimate_gb(smaller, model)} GB)", smaller
    return False, (msg + ": no preset fits. Keep fp16 (the CUDA default), lower render_resolution / samples_per_ray "
                   "in Extra engine settings, or move the text encoder off the GPU after caching"), None
