"""Tokenizers, raw values of a modality <-> tokens, targets and losses; one module per kind: base (the
interface, shapes and contract), continuous (one z-scored token per step: states, actions, return-to-go),
binned (one token per dimension, classified into bins) and image (patch, conv-stem or keypoint tokens);
build: `TokenConfig` (a run's `tokens` section) and `build_tokenizers`, which makes a run's tokenizers.

A new kind is a new module, its choice in `TokenConfig` and `build_tokenizers`, plus one line in
`tokenizer_from_spec`, the single place that maps a saved spec's "type" back to its class
(checkpoints store specs, never code).
"""

from __future__ import annotations

import numpy as np

from mtm.errors import ConfigError
from mtm.model.tokenizers.base import Tokenizer, as_vector
from mtm.model.tokenizers.binned import BinnedTokenizer
from mtm.model.tokenizers.build import TokenConfig, build_tokenizers
from mtm.model.tokenizers.continuous import ContinuousTokenizer
from mtm.model.tokenizers.image import ImageTokenizer

__all__ = ["BinnedTokenizer", "ContinuousTokenizer", "ImageTokenizer", "TokenConfig", "Tokenizer", "as_vector",
           "build_tokenizers", "tokenizer_from_spec"]


def tokenizer_from_spec(spec: dict) -> Tokenizer:
    """Rebuild a tokenizer from `spec()`; statistics are placeholders until `load_state_dict`."""
    kind = spec.get("type")
    if kind == "continuous":
        dim = spec["dim"]
        return ContinuousTokenizer(dim, np.zeros(dim), np.ones(dim), spec["min_std"], name=spec["name"])
    if kind == "binned":
        dim = spec["dim"]
        return BinnedTokenizer(dim, np.zeros(dim), np.ones(dim), spec["num_bins"], name=spec["name"])
    if kind == "image":
        return ImageTokenizer.from_spec(spec)
    raise ConfigError(f"unknown tokenizer type {kind!r} (expected 'continuous', 'binned' or 'image')")
