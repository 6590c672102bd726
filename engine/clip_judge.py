"""A CLIP model as judge: image-caption cosine similarity, loaded safely through transformers.

Safety as for the diffusion models (engine/guidance.py): safetensors only, never code from the model
folder (no trust_remote_code; a config with ``auto_map`` is refused), offline mode respected.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .errors import ModelError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's own normalisation, when no preprocessor_config.json
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def known_clip_models() -> dict[str, str]:
    """The judges of the known-model table (engine/known_models.json, 'judges')."""
    from .models import clip_judges

    return clip_judges()


def resolve_clip(name: str) -> tuple[str, bool]:
    """(path or hub id, is_local). Short names (B/32, B/16, L/14) come from the known-model table."""
    name = known_clip_models().get(name.strip(), name.strip())
    folder = Path(os.path.expanduser(name))
    if folder.exists() or name.startswith((".", "/", "~")) or name.count("/") != 1:
        if not folder.is_dir():
            raise ModelError(f"--clip {name}: no such folder. Give a CLIP model folder (config.json + model.safetensors), "
                             f"a hub id, or one of {', '.join(known_clip_models())}")
        if not any(folder.glob("*.safetensors")):
            raise ModelError(f"--clip {folder} has no .safetensors weights; for safety only safetensors are loaded "
                             "(pickle files can run code). Convert it with save_pretrained(safe_serialization=True)")
        return str(folder), True
    return name, False


class ClipJudge:
    def __init__(self, name: str, device, offline: bool = False):
        from transformers import CLIPModel, CLIPTokenizer

        from .guidance import is_offline

        self.name = name
        path, local = resolve_clip(name)
        offline = local or is_offline(offline)
        try:
            from huggingface_hub import hf_hub_download

            cfg_path = Path(path) / "config.json" if local else Path(hf_hub_download(path, "config.json", local_files_only=offline))
            config = json.loads(cfg_path.read_text())
            if config.get("auto_map"):
                raise ModelError(f"--clip {name}: config.json points at custom code (auto_map); the engine never runs it")
            self.model = CLIPModel.from_pretrained(path, use_safetensors=True, local_files_only=offline).to(device).eval()
            self.tokenizer = CLIPTokenizer.from_pretrained(path, local_files_only=offline)
        except ModelError:
            raise
        except Exception as exc:
            hint = ("offline mode is on and the model is not in the local cache" if offline and not local
                    else "the folder or id is not a complete CLIP model with safetensors weights")
            raise ModelError(f"could not load CLIP {name!r}: {hint}. Detail: {type(exc).__name__}: {str(exc)[:300]}") from exc
        pre = {}
        pre_path = Path(path) / "preprocessor_config.json"
        if local and pre_path.is_file():
            pre = json.loads(pre_path.read_text())
        self.mean = torch.tensor(pre.get("image_mean", OPENAI_MEAN)).view(1, 3, 1, 1)
        self.std = torch.tensor(pre.get("image_std", OPENAI_STD)).view(1, 3, 1, 1)
        self.size = int(self.model.config.vision_config.image_size)
        self.device = device

    @torch.no_grad()
    def text_embeddings(self, captions: list[str]) -> torch.Tensor:
        tok = self.tokenizer(captions, padding=True, truncation=True, return_tensors="pt").to(self.device)
        return torch.nn.functional.normalize(_features(self.model.get_text_features(**tok)), dim=-1)

    @torch.no_grad()
    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1], square renders: resized to CLIP's input (no crop needed)."""
        x = torch.nn.functional.interpolate(images.float(), size=(self.size, self.size), mode="bicubic",
                                            align_corners=False, antialias=True).clamp(0, 1)
        x = ((x - self.mean) / self.std).to(self.device)
        return torch.nn.functional.normalize(_features(self.model.get_image_features(pixel_values=x)), dim=-1)

    def similarity(self, views: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """One run's row: the cosine similarity to each caption, averaged over its views."""
        return (self.image_embeddings(views) @ text.T).mean(0).cpu()


def _features(out) -> torch.Tensor:
    """transformers 4 returns the projected embedding; 5 wraps it as ``pooler_output``."""
    return (out if isinstance(out, torch.Tensor) else out.pooler_output).float()
