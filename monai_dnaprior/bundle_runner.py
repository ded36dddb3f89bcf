"""Moved to :mod:`monai_dnaprior.bundle.runner`; this name is kept so that existing imports and configs still work."""

from __future__ import annotations

from monai_dnaprior.bundle.runner import *  # noqa: F401,F403
from monai_dnaprior.bundle.runner import __all__, _as_bool, _root_cause  # noqa: F401
