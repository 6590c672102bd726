"""Does the chosen preset fit the GPU `engine check` found? Estimates, and what to do when it does not.

No bpy here. The figures are docs/BENCHMARKS.md's fp16 estimates for a Stable-Diffusion-1.5-size model,
made from CPU measurements (not measured on a GPU; the panel says "estimated"): weights 1.89 GiB, VAE
activations at 512² 1.48, U-Net transient 0.38, CUDA context 0.75; the NeRF's saved render tensors with
the fast render path 1.2 GiB at 128 px × 96 samples per ray × 12 hash levels, scaled to each preset's
pixels × samples × levels; NeRF + Adam = levels × table × 2 features × 16 bytes. Plus 0.43 GiB for SD 2.x's
larger text encoder, and the benchmark's +20 % for fragmentation (high: 7.6 GiB, as BENCHMARKS.md).
"""

from __future__ import annotations

WEIGHTS_GB, VAE_GB, UNET_GB, CONTEXT_GB = 1.89, 1.48, 0.38, 0.75
RENDER_SAVED_GB_PER_UNIT = 1.2 / (128 * 128 * 96 * 12)  # per pixel × sample × hash level
SD2_TEXT_ENCODER_EXTRA_GB = 0.43  # OpenCLIP ViT-H (340M) vs CLIP ViT-L (123M), fp16
SLACK = 1.2
# render px, samples per ray, hash levels, log2 hash table size (engine/config.py PRESETS)
PRESETS = {"draft": (64, 48, 12, 15), "standard": (64, 64, 12, 16), "high": (128, 96, 16, 19)}
ORDER = ("high", "standard", "draft")


def estimate_gb(preset: str, model: str = "") -> float:
    """Estimated peak GPU memory (GiB, with slack) of an SDS run with this preset and a latent SD model."""
    px, spp, levels, log2 = PRESETS[preset]
    render = RENDER_SAVED_GB_PER_UNIT * px * px * spp * levels
    nerf = levels * 2**log2 * 2 * 16 / 2**30
    total = WEIGHTS_GB + nerf + render + VAE_GB + UNET_GB + CONTEXT_GB
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
