"""Moved to :mod:`monai_dnaprior.bundle.io`; this name is kept so that existing imports and configs still work."""

from __future__ import annotations

from monai_dnaprior.bundle.io import *  # noqa: F401,F403
from monai_dnaprior.bundle.io import __all__  # noqa: F401
