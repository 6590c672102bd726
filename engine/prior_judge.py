"""A diffusion model as judge, for R-Precision without CLIP (docs/EVALUATION.md, docs/SDS_SHAPES.md).

Caption j's score for a run is how much it helps the model denoise the run's renders: the mean of
‖ε_u − ε‖² − ‖ε_j − ε‖² over the views, the noise levels and the draws of engine/start_shape.py (the
"diffusion classifier" of Li et al. 2023). Every caption sees the same noisy images, so the scores
of one run differ only by the caption. With the builtin prior this is the offline stand-in for CLIP.
"""

from __future__ import annotations

import torch

from .start_shape import PROBE_CHUNK, PROBE_DRAWS, PROBE_T

SEED = 0  # one fixed noise draw for every run and caption: the judge is deterministic


class PriorJudge:
    def __init__(self, name: str, device, offline: bool = False):
        from .guidance import Guidance

        self.name, self.device = name, device
        self.guidance = Guidance(name, device, torch.float32, offline=offline)
        self.resolution = self.guidance.image_size

    @torch.no_grad()
    def similarity(self, views: torch.Tensor, cams, captions: list[str], cfg) -> torch.Tensor:
        """One run's row: the denoising gain of each caption on its ``views`` (rendered from ``cams``)."""
        from .prompts import ViewPrompts

        g = self.guidance
        with torch.random.fork_rng(devices=[self.device.index or 0] if self.device.type == "cuda" else []):
            torch.manual_seed(SEED)  # a VAE's posterior sample
            x = g.encode_images(views.to(self.device))
        conds = [ViewPrompts(g.encode_text, c, cfg.negative_prompt, mode=cfg.view_embedding,
                             overhead_elevation=cfg.overhead_elevation).for_cameras(cams) for c in captions]
        gen = torch.Generator(device=self.device).manual_seed(SEED)
        n = len(views)
        gains = torch.zeros(len(captions), dtype=torch.float64)
        for frac in PROBE_T:
            t = torch.full((n,), int(frac * g.num_train_timesteps), dtype=torch.long, device=self.device)
            a = g.alphas_cumprod[t].view(-1, 1, 1, 1)
            for _ in range(PROBE_DRAWS):
                noise = torch.randn(x.shape, generator=gen, device=self.device)
                z_t = a.sqrt() * x + (1 - a).sqrt() * noise
                for i in range(0, n, PROBE_CHUNK):
                    c = slice(i, min(i + PROBE_CHUNK, n))
                    eps = g.noise_predictions(z_t[c], t[c], [conds[0].uncond[c]] + [v.cond[c] for v in conds])
                    base = ((eps[0] - noise[c]) ** 2).sum()
                    for j, e in enumerate(eps[1:]):
                        gains[j] += float(base - ((e - noise[c]) ** 2).sum()) / noise[0].numel()
        return (gains / (n * len(PROBE_T) * PROBE_DRAWS)).float()
