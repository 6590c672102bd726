"""GPU memory estimated from CPU measurements (no GPU lent): the draft preset at fp16, and a high-preset
step per render path. Estimates, not measurements; docs/BENCHMARKS.md says how they are computed."""
from __future__ import annotations

def gpu_estimate(res: dict) -> dict:
    """fp16 CUDA memory for this preset, estimated from CPU fp32 measurements (see docs/BENCHMARKS.md)."""
    size = res["model_size"]
    p = res["params"]
    gib = 2**30
    # The text encoder is freed once the embeddings are cached (Guidance.release_text_encoder): not counted.
    weights = (p["unet"] + p["vae_encoder"]) * 2
    field_state = p["field"] * 4 * 4  # fp32 params + grads + Adam's two moments
    mib = 2**20
    saved_render = res["saved_mib"].get("render", 0) * mib  # fp32 on the GPU too
    saved_vae = res["saved_mib"].get("vae_encode", 0) * mib / 2  # fp16
    unet_transient = res["unet_floor"]["transient_peak_mib"] * mib / 2  # fp16
    # Peak of the backward through the VAE encoder, measured above the step's start; the render's
    # saved tensors are live through it (fp32), the rest is VAE (-> fp16).
    bwd_vae_peak = res["memory"]["phase_peak_mib"].get("backward_guidance", 0) * mib
    render_live = res["memory"]["phase_peak_mib"].get("render_end", 0) * mib
    bwd_vae = max(bwd_vae_peak - render_live, 0) / 2 + render_live
    during_unet = saved_render + saved_vae + unet_transient
    activations = max(during_unet, bwd_vae, res["memory"]["phase_peak_mib"].get("render", 0) * mib)
    context = 0.75 * gib  # CUDA context + cuBLAS/cuDNN workspaces, typical; not measured here
    total = weights + field_state + activations + context
    return {"weights_gib": weights / gib, "field_state_gib": field_state / gib, "saved_render_gib": saved_render / gib,
            "saved_vae_fp16_gib": saved_vae / gib, "unet_transient_fp16_gib": unet_transient / gib,
            "backward_vae_peak_gib": bwd_vae / gib, "activations_gib": activations / gib, "context_gib": context / gib,
            "total_gib": total / gib, "total_plus_20pct_gib": total * 1.2 / gib}


def high_estimate(res: dict) -> list[dict]:
    """Peak GPU memory (fp16 guidance) of a high-preset step per render path, estimated from CPU figures:
    weights (U-Net + the VAE encoder, fp16) + the high preset's NeRF with Adam (fp32) + the larger of
    (render saved at the high preset's px/spp, scaled by its hash levels, + the VAE's saved tensors at
    512² + the U-Net forward's transient) and (render saved + the backward-through-VAE peak), + context."""
    rp = res.get("render_paths")
    if not rp or not rp.get("high"):
        return []
    from engine.config import PRESETS

    hi = PRESETS["high"]
    gib, mib = 2**30, 2**20
    p = res["params"]
    weights = (p["unet"] + p["vae_encoder"]) * 2
    field_params = hi["hash_levels"] * 2**hi["hash_log2_table"] * 2 + 10_000  # tables x 2 features + MLPs
    field_state = field_params * 16
    vae_saved = res["saved_mib"].get("vae_encode", 0) * mib / 2
    unet = res["unet_floor"]["transient_peak_mib"] * mib / 2
    pk = res["memory"]["phase_peak_mib"]
    bwd_vae = max(pk.get("backward_guidance", 0) - pk.get("render_end", 0), 0) * mib / 2
    rows = []
    for h in rp["high"]:
        render = h["saved_mib"] * mib * h["high_levels"] / h["levels"]  # encoding tensors scale with levels (upper bound)
        act = max(render + vae_saved + unet, render + bwd_vae)
        total = weights + field_state + act + 0.75 * gib
        rows.append({"path": h["path"], "render_saved_gib": render / gib, "measured": h.get("measured", True), "weights_gib": weights / gib,
                     "field_state_gib": field_state / gib, "activations_gib": act / gib, "total_gib": total / gib,
                     "total_plus_20pct_gib": 1.2 * total / gib})
    return rows
