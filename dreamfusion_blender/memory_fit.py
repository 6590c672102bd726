"""Does the chosen preset fit the GPU `engine check` found? Estimates, and what to do when it does not.

No bpy here. The figures are docs/BENCHMARKS.md's fp16 estimate for a Stable-Diffusion-1.5-size model
(weights 1.89 GiB, CUDA context 0.75, activations 2.93 of which the fp32 render's saved tensors are 0.92
at 64 px / 48 samples per ray), with the render part scaled to each preset's render size and samples,
plus 0.43 GiB for SD 2.x's larger text encoder, and the benchmark's +20 % for fragmentation. They are
computed from CPU measurements, not measured on a GPU: the panel says "estimated".
"""

from __future__ import annotations

WEIGHTS_GB, CONTEXT_GB, ACTIVATIONS_GB, RENDER_SAVED_GB = 1.89, 0.75, 2.93, 0.92
SD2_TEXT_ENCODER_EXTRA_GB = 0.43  # OpenCLIP ViT-H (340M) vs CLIP ViT-L (123M), fp16
SLACK = 1.2
PRESET_RENDER = {"draft": (64, 48), "standard": (64, 64), "high": (128, 96)}  # render px, samples/ray (engine/config.py)
ORDER = ("high", "standard", "draft")


def estimate_gb(preset: str, model: str = "") -> float:
    """Estimated peak GPU memory (GiB, with slack) of an SDS run with this preset and a latent SD model."""
    px, spp = PRESET_RENDER[preset]
    render = RENDER_SAVED_GB * (px / 64) ** 2 * (spp / 48)
    total = WEIGHTS_GB + CONTEXT_GB + ACTIVATIONS_GB - RENDER_SAVED_GB + render
    if "stable-diffusion-2" in model.lower():
        total += SD2_TEXT_ENCODER_EXTRA_GB
    return round(total * SLACK, 1)


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
