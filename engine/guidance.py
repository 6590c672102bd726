"""The frozen 2D diffusion model used as a loss: loading it, caching text embeddings, and Score
Distillation Sampling.

SDS (paper eq. 3): for a render x, t ~ U(t_min, t_max), ε ~ N(0, I), z_t = √ᾱ_t x + √(1-ᾱ_t) ε,
ε̂ = ε_u + s (ε_c − ε_u) (classifier-free guidance, weight s), and the gradient w.r.t. x is
``w(t) (ε̂ − ε)`` with w(t) = 1 − ᾱ_t. The U-Net runs under ``torch.no_grad``: its Jacobian is
omitted by construction, and we inject the gradient through a surrogate loss
``0.5 * |x − stopgrad(x − g)|²`` whose derivative w.r.t. x is exactly g.

Latent models (Stable Diffusion) do this on VAE latents of the render (upsampled to the VAE's
resolution; gradients flow back through the VAE encoder); pixel-space models (DeepFloyd IF stage I,
the project's ``builtin:shapes``) on the render resized to the U-Net's size.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F

from . import hub_errors, models
from .errors import DeviceError, ModelError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
REQUIRED_COMPONENTS = ("unet", "text_encoder", "tokenizer", "scheduler")
# Text encoders we know how to drive. Loading by explicit class (never AutoModel with remote code)
# keeps arbitrary code in a model folder from running.
TEXT_ENCODER_CLASSES = ("CLIPTextModel", "CLIPTextModelWithProjection", "T5EncoderModel")
# Defaults per family. The paper used 100 with Imagen; stable-dreamfusion found the same for Stable
# Diffusion, and 20 for DeepFloyd IF, whose pixel-space U-Net saturates colours at 100.
DEFAULT_GUIDANCE = {"latent": 100.0, "pixel": 20.0}


@dataclass
class ModelSource:
    """Where a model comes from: a local folder, or a hub id (downloaded or from the local cache)."""

    name: str
    path: str  # folder or hub id passed to from_pretrained
    is_local: bool


def resolve_model(name: str) -> ModelSource:
    name = name.strip()
    if name.startswith("builtin:"):
        from .priors import resolve_builtin

        return ModelSource(name, str(resolve_builtin(name)), True)
    expanded = os.path.expanduser(name)
    # A hub id is exactly "owner/name"; anything else (or anything that exists on disk) is a folder.
    looks_like_path = os.path.exists(expanded) or not _HUB_ID.match(name)
    if looks_like_path:
        folder = Path(expanded)
        if not folder.exists():
            raise ModelError(
                f"model folder not found: {folder}. Pass --model with an existing diffusers folder, a hub id such as "
                f"'{models.default_model()}', or builtin:shapes"
            )
        if not folder.is_dir():
            raise ModelError(f"--model {folder} is a file; it must be a diffusers model folder (with unet/, text_encoder/, ...)")
        missing = [c for c in REQUIRED_COMPONENTS if not (folder / c).is_dir()]
        if missing:
            raise ModelError(
                f"{folder} is not a diffusers text-to-image model folder: missing {', '.join(m + '/' for m in missing)}. "
                "Point --model at the folder that holds model_index.json, unet/, text_encoder/, tokenizer/, scheduler/"
            )
        return ModelSource(name, str(folder), True)
    removed = models.removed_message(name)
    if removed:  # the table knows it is gone: say what replaced it, never load something else instead
        raise ModelError(removed)
    return ModelSource(name, name, False)


def is_offline(requested: bool) -> bool:
    return requested or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def pick_device(requested: str) -> torch.device:
    from .config import check_device_name

    check_device_name(requested)  # a clear input error for e.g. "banana", not torch's RuntimeError
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                "CUDA was requested but no CUDA GPU is usable here "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}). "
                "Install a CUDA build of torch, check the driver with nvidia-smi, or use --device cpu"
            )
        dev = torch.device(requested)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"{requested} does not exist: {torch.cuda.device_count()} CUDA device(s) found")
        return dev
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError("MPS (Apple GPU) was requested but is not available; use --device cpu")
    return torch.device(requested)


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    if requested == "auto":
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[requested]
    if device.type == "cpu" and dtype == torch.float16:
        raise DeviceError("fp16 is not supported for the diffusion model on CPU; use --dtype fp32 or bf16")
    return dtype


def _load_component(loader, source: ModelSource, subfolder: str, offline: bool, **kwargs):
    """from_pretrained with our safety and error policy: safetensors only, no remote code."""
    try:
        if source.is_local:
            return loader(os.path.join(source.path, subfolder), local_files_only=True, **kwargs)
        return loader(source.path, subfolder=subfolder, local_files_only=offline, **kwargs)
    except (OSError, ValueError, EnvironmentError) as exc:
        text = str(exc)
        if "custom code" in text or "trust_remote_code" in text:
            raise ModelError(
                f"{source.name}: {subfolder}/ needs custom Python code to load; the engine never runs code from a "
                "model folder. Use a standard diffusers model"
            ) from exc
        if "safetensors" in text.lower() and ("not found" in text.lower() or "no file" in text.lower() or "could not find" in text.lower()):
            raise ModelError(
                f"{source.name}: {subfolder}/ has no .safetensors weights. For safety the engine only loads safetensors "
                "(pickle files can run code); convert the model, e.g. with diffusers' save_pretrained(safe_serialization=True)"
            ) from exc
        known = None if source.is_local else hub_errors.model_error(source.name, exc, what=f"{subfolder}/")
        if known is not None:  # 404 / 401 / 403 / gated / offline / no network: the cause and the alternatives
            raise known from exc
        if not source.is_local:
            hint = (
                "offline mode is on (HF_HUB_OFFLINE=1 or --offline) and the model is not in the local cache"
                if offline
                else "the model hub could not be reached or the id does not exist"
            )
            raise ModelError(
                f"could not load {subfolder} of {source.name!r}: {hint}. Check the id and your network, download it "
                f"once with network access, or pass --model with a local folder (or builtin:shapes). Detail: {text[:300]}"
            ) from exc
        raise ModelError(f"could not load {subfolder}/ from {source.path}: the folder looks corrupt or incomplete. Detail: {text[:300]}") from exc
    except Exception as exc:  # safetensors header errors, json errors, shape mismatches; httpx network errors
        known = None if source.is_local else hub_errors.model_error(source.name, exc, what=f"{subfolder}/")
        if known is not None:
            raise known from exc
        raise ModelError(
            f"could not load {subfolder}/ from {source.name}: {type(exc).__name__}: {str(exc)[:300]}. "
            "The files may be corrupt or from a different model; re-download or re-export the folder"
        ) from exc


def _read_json(source: ModelSource, rel: str, offline: bool) -> dict | None:
    if source.is_local:
        p = Path(source.path) / rel
        if not p.exists():
            return None
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise ModelError(f"{p} is not valid JSON: {exc}") from exc
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(source.path, rel, local_files_only=offline)).read_text())
    except Exception:
        return None


def load_tiny_encoder(name: str, dtype: torch.dtype, offline: bool):
    """A diffusers AutoencoderTiny (TAESD family) from a folder or hub id, as the latent encoder."""
    from diffusers import AutoencoderTiny

    source = resolve_tiny_source(name)
    config = _read_json(source, "config.json", offline)
    if config is not None and config.get("_class_name") not in (None, "AutoencoderTiny"):
        raise ModelError(f"latent_encoder {name}: its config.json is a {config.get('_class_name')}, not an AutoencoderTiny (TAESD)")
    return _load_component(AutoencoderTiny.from_pretrained, source, "", offline, use_safetensors=True, torch_dtype=dtype)


def resolve_tiny_source(name: str) -> ModelSource:
    expanded = os.path.expanduser(name.strip())
    if os.path.exists(expanded) or not _HUB_ID.match(name.strip()):
        folder = Path(expanded)
        if not (folder / "config.json").is_file():
            raise ModelError(
                f"latent_encoder {name}: not an AutoencoderTiny folder (no config.json). Use vae, a hub id such as "
                f"{models.latent_encoders()[0]}, or a folder saved with AutoencoderTiny.save_pretrained"
            )
        return ModelSource(name, str(folder), True)
    return ModelSource(name, name.strip(), False)


# Config files in which transformers looks for ``auto_map`` (a pointer to Python code in the folder).
CODE_POINTERS = ("model_index.json", "tokenizer/tokenizer_config.json", "tokenizer/config.json", "text_encoder/config.json",
                 "unet/config.json", "vae/config.json", "scheduler/scheduler_config.json")


def refuse_custom_code(source: ModelSource, offline: bool) -> None:
    """A model folder is data: refuse one whose configs point at code (``auto_map``) before any loader
    sees it, with a message that says why, instead of a loader's question or a "corrupt folder"."""
    for rel in CODE_POINTERS:
        data = _read_json(source, rel, offline)
        if isinstance(data, dict) and data.get("auto_map"):
            raise ModelError(
                f"{source.name}: {rel} points at custom Python code (auto_map: {json.dumps(data['auto_map'])[:200]}). "
                "The engine never runs code from a model folder; use a standard diffusers model (plain CLIP/T5 "
                "tokenizer and text encoder) or remove auto_map if the standard classes suffice"
            )


class Guidance:
    """A loaded diffusion model, ready to compute SDS gradients for renders."""

    def __init__(self, model: str, device: torch.device, dtype: torch.dtype, offline: bool = False,
                 latent_encoder: str = "vae"):
        from diffusers import DDPMScheduler, UNet2DConditionModel
        import transformers

        if device.type == "cuda":
            # TF32 matmuls/convolutions on Ampere+ for the fp32 parts (NeRF, any fp32 guidance model).
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

        self.source = resolve_model(model)
        self.device = device
        self.dtype = dtype
        offline = is_offline(offline)
        if not self.source.is_local and offline:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")

        te_config = _read_json(self.source, "text_encoder/config.json", offline)
        if te_config is None and self.source.is_local:
            raise ModelError(f"{self.source.path}/text_encoder/config.json is missing: not a complete diffusers model folder")
        arch = ((te_config or {}).get("architectures") or ["CLIPTextModel"])[0]
        if arch not in TEXT_ENCODER_CLASSES:
            raise ModelError(f"text encoder {arch} is not supported; supported: {', '.join(TEXT_ENCODER_CLASSES)}")
        # Per-model recommendations a model folder may carry (the builtin prior does).
        self.recommended = _read_json(self.source, "dreamfusion.json", offline) or {}
        refuse_custom_code(self.source, offline)

        # Weights load straight into the run's dtype (no fp32 copy first: half the load time and host memory).
        safe = dict(use_safetensors=True, torch_dtype=dtype)
        # trust_remote_code=False explicitly: the default makes transformers *ask* on stdout (and run the
        # code if someone answers y); False makes it refuse without a question.
        no_code = dict(trust_remote_code=False)
        self.tokenizer = _load_component(transformers.AutoTokenizer.from_pretrained, self.source, "tokenizer", offline, **no_code)
        self.text_encoder = _load_component(getattr(transformers, arch).from_pretrained, self.source, "text_encoder", offline,
                                            **safe, **no_code)
        self.unet = _load_component(UNet2DConditionModel.from_pretrained, self.source, "unet", offline, **safe)
        self.scheduler = _load_component(DDPMScheduler.from_pretrained, self.source, "scheduler", offline)
        self.vae = None
        has_vae = (Path(self.source.path) / "vae").is_dir() if self.source.is_local else _read_json(self.source, "vae/config.json", offline) is not None
        self.family = "latent" if has_vae else "pixel"
        self.latent_encoder = None  # which encoder SDS goes back through: "vae" or the tiny encoder's source
        if has_vae and latent_encoder == "vae":
            from diffusers import AutoencoderKL

            self.vae = _load_component(AutoencoderKL.from_pretrained, self.source, "vae", offline, **safe)
            self.latent_encoder = "vae"
        elif has_vae:
            self.vae = load_tiny_encoder(latent_encoder, dtype, offline)
            self.latent_encoder = latent_encoder
        elif latent_encoder != "vae":
            raise ModelError(
                f"latent_encoder={latent_encoder!r} only applies to latent (VAE) models; {self.source.name} is a pixel-space "
                "model. Leave latent_encoder at vae"
            )
        expected_in = self.vae.config.latent_channels if self.vae is not None else 3
        if self.unet.config.in_channels != expected_in:
            raise ModelError(
                f"{self.source.name}: the U-Net takes {self.unet.config.in_channels} channels but a {self.family}-space "
                f"model needs {expected_in}; this does not look like a text-to-image base model"
            )

        try:
            for module in (self.text_encoder, self.unet, self.vae):
                if module is not None:
                    module.requires_grad_(False)
                    module.eval()
                    module.to(device=device)  # already in the run's dtype (torch_dtype at load)
        except torch.cuda.OutOfMemoryError as exc:  # pragma: no cover - needs a GPU
            from .errors import OutOfMemory

            raise OutOfMemory("the GPU ran out of memory loading the diffusion model; close other GPU programs or use a smaller model") from exc
        if self.vae is not None:
            # Only the encoder is used (SDS never decodes); dropping the decoder saves ~100 MB.
            self.vae.decoder = None
        self.alphas_cumprod = self.scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)
        self.num_train_timesteps = int(self.scheduler.config.num_train_timesteps)
        self.prediction_type = self.scheduler.config.get("prediction_type", "epsilon")
        self._embedding_cache: dict[str, torch.Tensor] = {}

    # --- text -----------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Text embeddings (B, L, D), cached per string: each view label is encoded once per run."""
        missing = [t for t in texts if t not in self._embedding_cache]
        if missing:
            if self.text_encoder is None:
                raise RuntimeError(f"the text encoder was released after caching; {missing[0]!r} was not encoded before")
            max_len = min(getattr(self.tokenizer, "model_max_length", 77) or 77, 512)
            tok = self.tokenizer(missing, padding="max_length", max_length=max_len, truncation=True, return_tensors="pt")
            kwargs = {}
            if "attention_mask" in tok and type(self.text_encoder).__name__ == "T5EncoderModel":
                kwargs["attention_mask"] = tok["attention_mask"].to(self.device)
            out = self.text_encoder(tok["input_ids"].to(self.device), **kwargs)
            # The token sequence, for every encoder class: out[0] of CLIPTextModelWithProjection is
            # its pooled, projected embedding (B, D), not what the U-Net cross-attends to.
            for t, e in zip(missing, out.last_hidden_state):
                self._embedding_cache[t] = e
        return torch.stack([self._embedding_cache[t] for t in texts])

    @property
    def _tiny(self) -> bool:
        return type(self.vae).__name__ == "AutoencoderTiny"

    def use_tiny_encoder(self, name: str, offline: bool = True) -> None:
        """Swap the latent encoder for an AutoencoderTiny (the benchmark compares both on one loaded U-Net)."""
        if self.family != "latent":
            raise ModelError("a tiny latent encoder only applies to latent (VAE) models")
        vae = load_tiny_encoder(name, self.dtype, offline).requires_grad_(False).eval().to(self.device)
        vae.decoder = None
        self.vae, self.latent_encoder = vae, name

    def release_text_encoder(self) -> None:
        """Free the text encoder once every prompt the run needs is cached (SDS never encodes text
        again): its weights (0.25 GB for SD 1.5, 0.68 GB for 2.1 in fp16) leave the device."""
        self.text_encoder = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def default_guidance_scale(self) -> float:
        return float(self.recommended.get("guidance_scale", DEFAULT_GUIDANCE[self.family]))

    # --- images -----------------------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        """Resolution the model wants renders at (the VAE's input size for latent models)."""
        size = int(self.unet.config.sample_size)
        if self.vae is not None:
            blocks = self.vae.config.encoder_block_out_channels if self._tiny else self.vae.config.block_out_channels
            size *= 2 ** (len(blocks) - 1)
        return size

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Renders (B,3,H,W) in [0,1] -> the space SDS works in (latents, or pixels in [-1,1])."""
        x = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        x = x * 2.0 - 1.0
        if self.vae is None:
            return x
        if self._tiny:  # TAESD encodes straight to (scaled) latents: no distribution to sample
            latents = self.vae.encode(x.to(self.dtype)).latents
        else:
            latents = self.vae.encode(x.to(self.dtype)).latent_dist.sample()
        return latents.float() * self.vae.config.scaling_factor

    # --- SDS ----------------------------------------------------------------------------------------
    def predict_noise(self, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor, scale: float | torch.Tensor,
                      negatives: torch.Tensor | None = None, negative_weights: torch.Tensor | None = None) -> torch.Tensor:
        """Classifier-free guided ε̂ = ε_u + s (ε_c − ε_u) for a batch, from one U-Net call on
        [uncond; cond] (plus Perp-Neg's K negatives per sample, ``negatives`` (B, K, L, D) with
        ``negative_weights`` (B, K) <= 0: ε̂ = ε_u + s (e + Σ_k w_k (e_k − proj_e e_k)), e = ε_c − ε_u,
        e_k = ε_k − ε_u, as threestudio and stable-dreamfusion combine them).

        s here is the paper's ω + 1: the paper writes ε̂ = (1 + ω) ε_c − ω ε_u. ``scale``: one number,
        or one per sample (B,)."""
        k = 0 if negatives is None else negatives.shape[1]
        with torch.no_grad():
            eps = self.noise_predictions(z_t, t, [uncond, cond] + [negatives[:, i] for i in range(k)])
            eps_u, delta = eps[0], eps[1] - eps[0]
            for i in range(k):
                w = negative_weights[:, i].to(delta).view(-1, 1, 1, 1)
                delta = delta + w * perpendicular_component(eps[2 + i] - eps_u, eps[1] - eps_u)
            if torch.is_tensor(scale):
                scale = scale.to(delta).view(-1, *([1] * (delta.dim() - 1)))
            return eps_u + scale * delta

    @torch.no_grad()
    def noise_predictions(self, z_t: torch.Tensor, t: torch.Tensor, embeddings: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """The model's ε for one batch z_t under each of ``embeddings`` (each (B, L, D)), from one U-Net
        call; v-prediction models' output converted to ε."""
        n = len(embeddings)
        model_in = torch.cat([z_t] * n).to(self.dtype)
        tt = torch.cat([t] * n)
        out = self.unet(model_in, tt, encoder_hidden_states=torch.cat(embeddings).to(self.dtype)).sample.float()
        out = out[:, : z_t.shape[1]]  # learned-variance models (IF) output 2x channels
        if self.prediction_type == "v_prediction":
            a = self.alphas_cumprod[tt].view(-1, 1, 1, 1)
            out = a.sqrt() * out + (1 - a).sqrt() * torch.cat([z_t] * n).float()
        return out.chunk(n)

    def sds_loss(
        self,
        images: torch.Tensor,
        cond: torch.Tensor,
        uncond: torch.Tensor,
        guidance_scale: float,
        t_range: tuple[float, float],
        generator: torch.Generator | None = None,
        negatives: torch.Tensor | None = None,
        negative_weights: torch.Tensor | None = None,
        high_noise_guidance: tuple[float, float] | None = None,
    ) -> tuple[torch.Tensor, dict]:
        """Surrogate loss whose gradient w.r.t. ``images`` is the SDS gradient; plus diagnostics.
        ``high_noise_guidance`` (t_from, scale): the samples drawn with t > t_from·T use that guidance
        instead of ``guidance_scale``."""
        x = self.encode_images(images)
        b = x.shape[0]
        lo = max(1, int(t_range[0] * self.num_train_timesteps))
        hi = min(self.num_train_timesteps - 1, int(t_range[1] * self.num_train_timesteps))
        # Drawn on the generator's device (the run's device): no host copy, no synchronisation.
        gen_device = generator.device if generator is not None else self.device
        t = torch.randint(lo, hi + 1, (b,), generator=generator, device=gen_device).to(self.device)
        noise = torch.randn(x.shape, generator=generator, device=gen_device).to(self.device)
        if high_noise_guidance is not None:
            t_from, high_scale = high_noise_guidance
            guidance_scale = self.scale_per_sample(t, guidance_scale, t_from, high_scale)
        grad, w = self.sds_gradient(x.detach(), t, noise, cond, uncond, guidance_scale, negatives, negative_weights)
        grad = torch.nan_to_num(grad)
        target = (x - grad).detach()
        loss = 0.5 * F.mse_loss(x, target, reduction="sum") / b
        # Diagnostics stay device tensors: read them only when reporting.
        return loss, {"t": t.detach(), "grad_norm": grad.detach().norm() / b}

    def scale_per_sample(self, t: torch.Tensor, scale: float, t_from: float, high_scale: float) -> torch.Tensor:
        """(B,) guidance weights: ``high_scale`` where t > t_from·T, ``scale`` elsewhere."""
        # Python scalars, not tensors built from them: no host-to-device copy inside a step.
        return torch.where(t > t_from * self.num_train_timesteps, float(high_scale), float(scale))

    def sds_gradient(self, x, t, noise, cond, uncond, guidance_scale, negatives=None, negative_weights=None):
        """w(t) (ε̂ − ε) for clean inputs x (latents or pixels), timesteps t and noise ε."""
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        z_t = a.sqrt() * x + (1 - a).sqrt() * noise
        eps_hat = self.predict_noise(z_t, t, cond, uncond, guidance_scale, negatives, negative_weights)
        w = 1.0 - a
        return w * (eps_hat - noise), w


def perpendicular_component(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The part of each sample of ``x`` orthogonal to the same sample of ``y`` (B, ...)."""
    dims = tuple(range(1, x.dim()))
    coef = (x * y).sum(dims, keepdim=True) / (y * y).sum(dims, keepdim=True).clamp_min(1e-6)
    return x - coef * y
