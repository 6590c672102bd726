"""Shared fixtures: tiny diffusers models built once per session, and CLI flags for fast CPU runs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Small enough that a run is a few seconds on 2 CPU cores, big enough to exercise every stage.
FAST_ARGS = [
    "--preset", "draft", "--steps", "4", "--render-resolution", "32", "--samples-per-ray", "16",
    "--mesh-resolution", "48", "--texture-size", "64", "--set", "albedo_warmup=1", "--set", "preview_every=2",
    "--set", "preview_views=2", "--set", "checkpoint_every=2", "--device", "cpu", "--no-progress",
]


@pytest.fixture(scope="session")
def tiny_pixel_model(tmp_path_factory) -> Path:
    from tiny_models import make_tiny_pixel_model

    return make_tiny_pixel_model(tmp_path_factory.mktemp("models") / "tiny-pixel")


@pytest.fixture(scope="session")
def tiny_latent_model(tmp_path_factory) -> Path:
    from tiny_models import make_tiny_latent_model

    return make_tiny_latent_model(tmp_path_factory.mktemp("models") / "tiny-latent")


@pytest.fixture(scope="session")
def fast_args() -> list[str]:
    return list(FAST_ARGS)
