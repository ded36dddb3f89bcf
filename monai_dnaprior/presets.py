"""Named fit settings: ``fast``, ``default`` and ``quality`` trade seconds for decibels."""

from __future__ import annotations

from dataclasses import replace

from monai_dnaprior.fit import FitConfig
from monai_dnaprior.validation import check_choice

__all__ = ["PRESETS", "preset_config"]

PRESETS: dict[str, FitConfig] = {
    "fast": FitConfig(max_iters=60, min_iters=40, match_step=4),
    "default": FitConfig(),
    "quality": FitConfig(max_iters=400, min_iters=200, channels=(32, 32, 64, 64), match_step=2),
}


def preset_config(preset: str = "default", **overrides: float | int | None) -> FitConfig:
    """The :class:`FitConfig` of ``preset`` with every override that is not None applied."""
    check_choice("preset", preset, tuple(PRESETS))
    unknown = set(overrides) - set(FitConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"Unknown fit settings {sorted(unknown)}; known: {sorted(FitConfig.__dataclass_fields__)}.")
    return replace(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})
