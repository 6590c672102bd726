"""Small diffusion priors shipped with the engine (``--model builtin:NAME``).

``builtin:shapes`` is a pixel-space, text-conditioned DDPM trained on analytic renders of five shapes
in four colours (see docs/PRIOR.md); it is the offline default and what CI uses to prove SDS.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelError

PRIORS_DIR = Path(__file__).resolve().parent
BUILTINS = ("shapes",)
PREFIX = "builtin:"


def available_builtins() -> list[str]:
    """Names of the shipped priors (those whose folder has a model_index.json)."""
    return [n for n in BUILTINS if (PRIORS_DIR / n / "model_index.json").is_file()]


def resolve_builtin(name: str) -> Path:
    """``"builtin:shapes"`` (or ``"shapes"``) -> the model folder ``engine/priors/shapes``.

    Raises ModelError naming the available builtins when the name is unknown or its folder is
    missing or incomplete."""
    key = name[len(PREFIX):] if name.startswith(PREFIX) else name
    listed = ", ".join(PREFIX + n for n in BUILTINS)
    if key not in BUILTINS:
        raise ModelError(f"unknown builtin model {name!r}; available: {listed}")
    folder = PRIORS_DIR / key
    if not (folder / "model_index.json").is_file():
        raise ModelError(
            f"the builtin model {PREFIX}{key} is missing or incomplete at {folder} (no model_index.json); "
            f"reinstall the engine or retrain it with `python -m engine.priors.train_shapes --out {folder}`"
        )
    return folder
