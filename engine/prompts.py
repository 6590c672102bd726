"""Prompt processing apart from the diffusion model: view-dependent prompts, azimuth-interpolated view
embeddings, and Perp-Neg's negative view prompts with their weights.

Each view prompt is encoded once per run; per step, a camera batch picks (or blends) embeddings.

- ``labels``: the paper's view-dependent prompting, one of "front/side/back/overhead view" per camera.
- ``interpolate`` (stable-dreamfusion): below the overhead threshold the embedding is blended by
  azimuth, front→side over |azimuth| 0→90° and side→back over 90→180°, so nearby views get nearby
  conditions instead of a hard switch at 45°/135° (one cause of two-faced "Janus" objects).
- Perp-Neg (Armandpour et al. 2023, in both references): the other views' prompts act as negative
  guidance, only through their component perpendicular to the positive direction, so "not the
  front" can be asked of a back view without cancelling the prompt itself. The weights are
  threestudio's defaults (``a·exp(-b·r) + c`` of the interpolation ratio r).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .cameras import VIEW_LABELS, view_prompt

# threestudio's prompt_processors/base.py defaults: (a, b, c) for a*exp(-b*r) + c.
PERP_NEG_F_FS = (4.0, 0.5, -2.426)  # front view's negative "side" weight: f_fs(1) = 0 at pure side
PERP_NEG_F_SF = (4.0, 0.5, -2.426)
PERP_NEG_F_SB = (1.0, 0.5, -0.606)
PERP_NEG_F_FSB = (1.0, 0.5, 0.967)


@dataclass
class ViewConditioning:
    """Text conditions for one camera batch."""

    cond: torch.Tensor  # (B, L, D)
    uncond: torch.Tensor  # (B, L, D)
    negatives: torch.Tensor | None = None  # (B, K, L, D), Perp-Neg's negative prompts
    negative_weights: torch.Tensor | None = None  # (B, K), <= 0


FRONT, SIDE, BACK, OVERHEAD, UNCOND = range(5)  # rows of ViewPrompts.table (VIEW_LABELS order, then uncond)


class ViewPrompts:
    """The run's prompt as text embeddings per view; ``for_cameras`` gives a batch's conditions,
    computed on the cameras' device (no angle is read back to the host).

    Blend (``interpolate``): r * near + (1 - r) * far with front/side and r = 1 - |a|/90 on the front
    half, side/back and r = 2 - |a|/90 on the back half (threestudio and stable-dreamfusion).
    Perp-Neg negatives: front half [front, side] with weights [-f_fs(r), -f_sf(1 - r)], back half
    [side, front] with [-f_sb(r), -f_fsb(r)]; overhead views none (threestudio's rules)."""

    def __init__(self, encode, prompt: str, negative_prompt: str = "", mode: str = "labels", perp_neg: bool = False,
                 overhead_elevation: float = 60.0):
        if mode not in ("labels", "interpolate"):
            raise ValueError(f"unknown view embedding mode {mode!r}")
        self.mode = mode
        self.perp_neg = perp_neg
        self.overhead_elevation = overhead_elevation
        self.uncond = encode([negative_prompt])[0]
        self.views = {label: encode([view_prompt(prompt, label)])[0] for label in VIEW_LABELS}
        self.table = torch.stack([self.views[label] for label in VIEW_LABELS] + [self.uncond])  # (5, L, D)

    def for_cameras(self, cams) -> ViewConditioning:
        table = self.table
        a = ((cams.azimuth + 180.0) % 360.0 - 180.0).abs().to(table.device)
        overhead = cams.elevation.to(table.device) > self.overhead_elevation
        front_half = a < 90.0
        r = torch.where(front_half, 1.0 - a / 90.0, 2.0 - a / 90.0)  # share of the nearer view
        if self.mode == "labels":
            cond = table[cams.label_index(self.overhead_elevation).to(table.device)]
        else:
            near = torch.where(front_half, FRONT, SIDE)
            far = torch.where(front_half, SIDE, BACK)
            w = r.view(-1, 1, 1).to(table.dtype)
            cond = torch.where(overhead.view(-1, 1, 1), table[OVERHEAD], w * table[near] + (1.0 - w) * table[far])
        uncond = self.uncond.expand_as(cond)
        if not self.perp_neg:
            return ViewConditioning(cond, uncond)
        decay = lambda abc, x: abc[0] * torch.exp(-abc[1] * x) + abc[2]  # noqa: E731
        neg_idx = torch.stack([torch.where(front_half, FRONT, SIDE), torch.where(front_half, SIDE, FRONT)], dim=1)
        weights = -torch.stack([torch.where(front_half, decay(PERP_NEG_F_FS, r), decay(PERP_NEG_F_SB, r)),
                                torch.where(front_half, decay(PERP_NEG_F_SF, 1.0 - r), decay(PERP_NEG_F_FSB, r))], dim=1)
        neg_idx = torch.where(overhead.view(-1, 1), UNCOND, neg_idx)
        weights = torch.where(overhead.view(-1, 1), torch.zeros_like(weights), weights)
        return ViewConditioning(cond, uncond, table[neg_idx], weights.float())
