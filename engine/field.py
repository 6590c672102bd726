"""The NeRF: a positional encoding (multi-resolution hash grid or sinusoidal), small MLP heads for
density and albedo, the initial density blob, and the background model on ray direction.

Pure PyTorch so it runs on CPU, CUDA and MPS without custom extensions.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

_PRIMES = (1, 2654435761, 805459861)  # instant-NGP's spatial hash


class HashGridEncoding(nn.Module):
    """Multi-resolution hash encoding (Müller et al. 2022), trilinear, in plain PyTorch.

    Input points in [-bound, bound]^3; output (N, levels * features_per_level)."""

    def __init__(self, bound: float = 1.0, levels: int = 12, log2_table: int = 16, features: int = 2,
                 base_resolution: int = 16, max_resolution: int = 1024):
        super().__init__()
        self.bound = bound
        self.levels = levels
        self.table_size = 2**log2_table
        self.features = features
        growth = math.exp((math.log(max_resolution) - math.log(base_resolution)) / max(levels - 1, 1))
        res = torch.tensor([math.floor(base_resolution * growth**i) for i in range(levels)], dtype=torch.float32)
        self.register_buffer("resolutions", res, persistent=False)
        # Coarse levels whose dense grid fits the table are indexed densely (no collisions), as in NGP.
        dense = [(int(r) + 1) ** 3 <= self.table_size for r in res]
        self.register_buffer("dense", torch.tensor(dense), persistent=False)
        self.register_buffer("offsets", torch.arange(levels) * self.table_size, persistent=False)
        # Inference path (_forward_no_grad): per level and axis the number a corner coordinate is multiplied by
        # (dense: 1, res+1, (res+1)^2; hashed: the prime mod table size, which leaves the index mod the
        # table size unchanged and keeps the products small enough for int32 when they fit).
        res1 = [int(r) + 1 for r in res]
        mult = [[1, r1, r1 * r1] if d else [p % self.table_size for p in _PRIMES] for r1, d in zip(res1, dense)]
        small = (max(res1) + 1) * self.table_size < 2**31
        self.register_buffer("mult", torch.tensor(mult, dtype=torch.int32 if small else torch.int64), persistent=False)
        self.n_dense = sum(dense)  # resolutions grow, so the dense levels come first
        self.table = nn.Parameter(torch.empty(levels * self.table_size, features).uniform_(-1e-4, 1e-4))
        # Coarse-to-fine (threestudio's progressive grid): levels past ``active_levels`` output zeros,
        # so early SDS steps shape smooth geometry and fine levels join later.
        self.active_levels = levels
        self.register_buffer("level_mask", torch.ones(levels), persistent=False)

    def set_active_levels(self, n: int) -> None:
        """Keep the ``n`` coarsest levels live (at least one); the rest output zeros."""
        self.active_levels = max(1, min(int(n), self.levels))
        self.level_mask.copy_((torch.arange(self.levels, device=self.level_mask.device) < self.active_levels).float())

    @property
    def output_dim(self) -> int:
        return self.levels * self.features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return self._forward_no_grad(x)
        u = ((x / self.bound) + 1.0) * 0.5  # [0, 1]
        u = u.clamp(0.0, 1.0)
        scaled = u[:, None, :] * self.resolutions[None, :, None]  # (N, L, 3)
        base_f = scaled.floor()
        frac = scaled - base_f
        base = base_f.long()
        # The 8 corners' indices and weights are combined per axis (two choices each) instead of
        # materialising (N, L, 8, 3) integer tensors: ~3x faster on CPU.
        res1 = self.resolutions.long() + 1  # (L,)
        dense = self.dense[None, :]
        axis_idx, axis_w = [], []
        for d, (prime, stride) in enumerate(zip(_PRIMES, (1, res1, res1 * res1))):
            c0, c1 = base[..., d], base[..., d] + 1
            h0 = torch.where(dense, c0 * stride, c0 * prime)
            h1 = torch.where(dense, c1 * stride, c1 * prime)
            axis_idx.append((h0, h1))
            axis_w.append((1.0 - frac[..., d], frac[..., d]))
        idx_list, w_list = [], []
        for c in range(8):
            bx, by, bz = (c >> 2) & 1, (c >> 1) & 1, c & 1
            ix, iy, iz = axis_idx[0][bx], axis_idx[1][by], axis_idx[2][bz]
            idx_list.append(torch.where(dense, ix + iy + iz, ix ^ iy ^ iz))
            w_list.append(axis_w[0][bx] * axis_w[1][by] * axis_w[2][bz])
        idx = torch.stack(idx_list, dim=-1) % self.table_size + self.offsets[None, :, None]  # (N, L, 8)
        w = torch.stack(w_list, dim=-1)  # (N, L, 8)
        # index_select, not F.embedding: the same gather, but its backward (index_add) is ~14x cheaper on
        # CPU than embedding's dense backward, which was half of a fast-path render's time (measured).
        feats = self.table.index_select(0, idx.reshape(-1)).reshape(*idx.shape, self.features)  # (N, L, 8, F)
        out = (feats * w[..., None]).sum(2)  # (N, L, F)
        if self.active_levels < self.levels:
            out = out * self.level_mask[None, :, None]
        return out.reshape(x.shape[0], -1)

    def _forward_no_grad(self, x: torch.Tensor) -> torch.Tensor:
        """The same encoding for queries without autograd (export, evaluation, previews), ~2x faster on
        CPU (7 -> 3.5 us per point, 12 levels): the 8 corners' indices and weights come from per-axis
        pairs by broadcasting (no torch.where over both index kinds, no stacking of 8 tensors), in int32
        where the products fit, and the corner sum is one einsum. Same indices and weights as
        ``forward``; only the corner sum's rounding differs (~1e-7 relative). Not used with autograd:
        its backward is slower than ``forward``'s (measured)."""
        n, nd, levels = x.shape[0], self.n_dense, self.levels
        u = (((x / self.bound) + 1.0) * 0.5).clamp(0.0, 1.0)
        scaled = u[:, None, :] * self.resolutions[None, :, None]  # (N, L, 3)
        base_f = scaled.floor()
        frac = scaled - base_f
        h0 = base_f.to(self.mult.dtype) * self.mult  # corner 0's term per axis; corner 1's adds mult
        pair = torch.stack([h0, h0 + self.mult], -1)  # (N, L, 3, 2)
        hx, hy, hz = pair[:, :, 0, :, None, None], pair[:, :, 1, None, :, None], pair[:, :, 2, None, None, :]
        parts = []
        if nd > 0:  # dense levels: x + y*(res+1) + z*(res+1)^2
            parts.append((hx[:, :nd] + hy[:, :nd] + hz[:, :nd]).reshape(n, nd, 8))
        if nd < levels:  # hashed levels: instant-NGP's xor of prime products
            parts.append((hx[:, nd:] ^ hy[:, nd:] ^ hz[:, nd:]).reshape(n, levels - nd, 8))
        idx = torch.cat(parts, 1) if len(parts) > 1 else parts[0]
        # & (size - 1) == % size: the table size is a power of two and the indices are non-negative.
        idx = (idx & (self.table_size - 1)) + self.offsets.to(idx.dtype)[None, :, None]  # (N, L, 8)
        wpair = torch.stack([1.0 - frac, frac], -1)  # (N, L, 3, 2)
        w = ((wpair[:, :, 0, :, None, None] * wpair[:, :, 1, None, :, None]) * wpair[:, :, 2, None, None, :])
        feats = self.table.index_select(0, idx.reshape(-1)).reshape(n, levels, 8, self.features)
        out = torch.einsum("nlc,nlcf->nlf", w.reshape(n, levels, 8), feats)
        if self.active_levels < self.levels:
            out = out * self.level_mask[None, :, None]
        return out.reshape(n, -1)


class FrequencyEncoding(nn.Module):
    """NeRF's sinusoidal encoding (octaves 2^0..2^(n-1) times pi), with Nerfies' coarse-to-fine
    window: ``set_band_fraction(f)`` keeps the first f*n bands, the next one fading in smoothly."""

    def __init__(self, n_freqs: int = 8, bound: float = 1.0, include_input: bool = True):
        super().__init__()
        self.bound = bound
        self.include_input = include_input
        self.n_freqs = n_freqs
        self.register_buffer("freqs", 2.0 ** torch.arange(n_freqs) * math.pi, persistent=False)
        self.register_buffer("band_weights", torch.ones(n_freqs), persistent=False)
        self.output_dim = 3 * (2 * n_freqs + int(include_input))

    def set_band_fraction(self, fraction: float) -> None:
        """Nerfies (Park et al. 2021, eq. 8): band k weighs (1 - cos(pi * clamp(alpha - k, 0, 1))) / 2
        with alpha = fraction * n, so 1 keeps every band and 0 only the raw coordinates."""
        alpha = float(fraction) * self.n_freqs
        k = torch.arange(self.n_freqs, device=self.band_weights.device, dtype=torch.float32)
        self.band_weights.copy_((1.0 - torch.cos(math.pi * (alpha - k).clamp(0.0, 1.0))) / 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x / self.bound
        xf = x[..., None] * self.freqs  # (N, 3, F)
        w = self.band_weights
        parts = [(torch.sin(xf) * w).flatten(-2), (torch.cos(xf) * w).flatten(-2)]
        if self.include_input:
            parts.insert(0, x)
        return torch.cat(parts, dim=-1)


def mlp(in_dim: int, hidden: int, out_dim: int, layers: int = 2) -> nn.Sequential:
    mods: list[nn.Module] = []
    d = in_dim
    for _ in range(layers - 1):
        mods += [nn.Linear(d, hidden), nn.ReLU(inplace=True)]
        d = hidden
    mods.append(nn.Linear(d, out_dim))
    return nn.Sequential(*mods)


# The start shapes NeRFField knows (config start_shape also takes "auto": engine/start_shape.py).
START_SHAPES = ("ball", "ring")
# The ring start's centre-circle radius and tube radius, as shares of blob_radius (0.5: 0.35 and 0.2,
# a ring as wide as the ball). Not the builtin prior's torus (0.4 / 0.15): docs/SDS_SHAPES.md.
RING_MAJOR, RING_TUBE = 0.7, 0.4


class NeRFField(nn.Module):
    """Density and albedo inside a sphere of radius ``bound``.

    density(x) = softplus(mlp(x) + blob(x)); softplus rather than the paper's exp keeps fp32 CPU
    training stable with the large SDS gradients of guidance weight 100. The blob
    ``blob_density * (1 - |x| / blob_radius)`` (Magic3D's linear form, threestudio's "blob_magic3d";
    the paper's is a Gaussian) starts
    the optimisation from a ball of radius ``blob_radius`` at the centre, so early gradients shape an
    object rather than empty space. It is *negative* outside that radius on purpose: a freshly
    initialised MLP outputs ~0, and softplus(0) = 0.69 everywhere would fill the whole bounding sphere
    with fog (a Gaussian blob, which never goes below zero, does exactly that).

    ``start_shape="ring"`` replaces the ball with a ring in the XZ plane (a torus about +Y): the same
    linear form in the distance to the ring's centre circle, ``blob_density * (1 - d / tube)``. SDS in a
    few hundred steps does not change the start's topology (docs/SDS_SHAPES.md), so a holed object needs
    a holed start; engine/start_shape.py lets the prior choose between the two."""

    def __init__(self, bound: float = 1.0, encoding: str = "hashgrid", hidden_dim: int = 64,
                 hash_levels: int = 12, hash_log2_table: int = 16, blob_density: float = 10.0,
                 blob_radius: float = 0.5, frequency_bands: int = 8, hash_max_resolution: int = 1024,
                 start_shape: str = "ball"):
        super().__init__()
        if start_shape not in START_SHAPES:
            raise ValueError(f"start_shape must be one of {', '.join(START_SHAPES)}, got {start_shape!r}")
        self.bound = bound
        self.blob_density = blob_density
        self.blob_radius = blob_radius
        self.start_shape = start_shape
        self.blob_core = 1.0  # share of the positive core kept (config blob_core, a schedule)
        if encoding == "hashgrid":
            self.encoding = HashGridEncoding(bound=bound, levels=hash_levels, log2_table=hash_log2_table,
                                             max_resolution=hash_max_resolution)
        else:
            self.encoding = FrequencyEncoding(n_freqs=frequency_bands, bound=bound)
        self.trunk = mlp(self.encoding.output_dim, hidden_dim, hidden_dim, layers=2)
        self.density_head = nn.Linear(hidden_dim, 1)
        self.albedo_head = nn.Linear(hidden_dim, 3)

    def set_level_fraction(self, fraction: float) -> None:
        """Progressive hash grid: keep floor(fraction * levels) levels live (no-op for other encodings)."""
        if isinstance(self.encoding, HashGridEncoding):
            self.encoding.set_active_levels(math.floor(fraction * self.encoding.levels + 1e-6))

    def set_band_fraction(self, fraction: float) -> None:
        """Coarse-to-fine sinusoidal bands (no-op for the hash grid): see FrequencyEncoding."""
        if isinstance(self.encoding, FrequencyEncoding):
            self.encoding.set_band_fraction(fraction)

    def blob(self, x: torch.Tensor) -> torch.Tensor:
        if self.start_shape == "ring":
            # distance to the ring's centre circle (radius RING_MAJOR x blob_radius, in the XZ plane)
            rxz = torch.sqrt(x[..., 0] ** 2 + x[..., 2] ** 2 + 1e-12)
            d = torch.sqrt((rxz - RING_MAJOR * self.blob_radius) ** 2 + x[..., 1] ** 2 + 1e-12)
            b = self.blob_density * (1.0 - d / (RING_TUBE * self.blob_radius))
        else:
            r = torch.sqrt((x * x).sum(-1) + 1e-12)  # not x.norm(): finite gradient at the origin
            b = self.blob_density * (1.0 - r / self.blob_radius)
        if self.blob_core == 1.0:
            return b
        # A fading core: inside blob_radius only a share is left; the negative shell keeps empty space empty.
        return torch.where(b > 0, b * self.blob_core, b)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.trunk(self.encoding(x)))

    def _density(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        sigma = F.softplus(self.density_head(h).squeeze(-1) + self.blob(x))
        inside = (x * x).sum(-1) <= self.bound**2
        return torch.where(inside, sigma, torch.zeros_like(sigma))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,3) world points -> (density (N,), albedo (N,3)); zero density outside the sphere."""
        h = self._features(x)
        return self._density(h, x), torch.sigmoid(self.albedo_head(h))

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """Density only (normals, occupancy updates, mesh export): the albedo head is skipped."""
        return self._density(self._features(x), x)

    def compile_query(self, **kwargs) -> None:
        """torch.compile the encoding + trunk (the field's cost) in place; parameters and state_dict
        keys are unchanged. Sample counts vary per step, hence dynamic shapes."""
        self._features = torch.compile(self._features, dynamic=True, **kwargs)

    def albedo(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)[1]

    def param_groups(self, lr: float, mlp_lr_scale: float) -> list[dict]:
        """Hash tables learn fast; the MLPs need a smaller step (as in instant-NGP setups)."""
        enc = list(self.encoding.parameters())
        rest = [p for n, p in self.named_parameters() if not n.startswith("encoding.")]
        groups = [{"params": rest, "lr": lr * mlp_lr_scale, "name": "mlp"}]
        if enc:
            groups.insert(0, {"params": enc, "lr": lr, "name": "encoding"})
        return groups


class BackgroundField(nn.Module):
    """Background colour as a function of ray direction only (paper: a separate MLP), so it cannot
    explain anything that moves with parallax and the object has to live in the NeRF."""

    def __init__(self, n_freqs: int = 4, hidden_dim: int = 32, fixed: str = "learned"):
        super().__init__()
        self.encoding = FrequencyEncoding(n_freqs=n_freqs, bound=1.0)
        self.net = mlp(self.encoding.output_dim, hidden_dim, 3, layers=2)
        # "white": a constant white background for priors trained only on white backgrounds (the
        # builtin shapes prior); the MLP is kept (unused) so checkpoints have one layout.
        self.fixed = fixed

    def forward(self, directions: torch.Tensor) -> torch.Tensor:
        if self.fixed == "white":
            return torch.ones(*directions.shape[:-1], 3, device=directions.device, dtype=directions.dtype)
        return torch.sigmoid(self.net(self.encoding(directions)))


class SolidBackground(nn.Module):
    """One colour behind every ray: stable-dreamfusion swaps a random one in for the learned
    background on a share of steps, so the background cannot take on the prompt's look."""

    def __init__(self, colour: torch.Tensor):
        super().__init__()
        self.colour = colour

    def forward(self, directions: torch.Tensor) -> torch.Tensor:
        return self.colour.to(directions).expand(*directions.shape[:-1], 3)
