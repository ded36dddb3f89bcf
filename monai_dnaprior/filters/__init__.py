"""The collaborative filter: block matching (:mod:`.block_matching`), the hard-thresholding and Wiener passes over
groups of similar patches, each coefficient with its own noise variance (:mod:`.collaborative`), the NL-Bayes step
(:mod:`.nl_bayes`), the iterated linear combinations of patches (:mod:`.ridge`), large images in slabs
(:mod:`.slabs`), and the pipeline that composes them (:mod:`.pipeline`)."""

from __future__ import annotations

from monai_dnaprior.filters.block_matching import match_blocks
from monai_dnaprior.filters.collaborative import CollaborativePass, collaborative_filter, collaborative_refine
from monai_dnaprior.filters.nl_bayes import BayesPass, bayes_refine, bayes_variance
from monai_dnaprior.filters.pipeline import FilterResult, bayes_pass, filter_observation, filter_passes, ridge_pass
from monai_dnaprior.filters.ridge import RidgePass, ridge_refine

__all__ = [
    "BayesPass",
    "CollaborativePass",
    "FilterResult",
    "RidgePass",
    "bayes_pass",
    "bayes_refine",
    "bayes_variance",
    "collaborative_filter",
    "collaborative_refine",
    "filter_observation",
    "filter_passes",
    "match_blocks",
    "ridge_pass",
    "ridge_refine",
]
