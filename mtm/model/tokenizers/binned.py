"""Binned tokens: one token per dimension, uniform bins over the data's range, cross-entropy loss."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mtm.errors import ConfigError
from mtm.model.tokenizers.base import Tokenizer, as_vector


class BinnedTokenizer(Tokenizer):
    """One token per DIMENSION per step (k = dim): uniform bins over [low, high], cross-entropy.

    Bin b covers [low + b*w, low + (b+1)*w), w = (high - low) / num_bins; values outside [low, high]
    fall into the edge bins. A token's input is the one-hot of its bin (the input Linear acts as an
    embedding table); its head outputs num_bins logits. decode = centre of the arg-max bin, not the
    softmax expectation: bins exist to represent multi-modal distributions, whose expectation lies
    between the peaks, where the data never is. The round trip is exact to w / 2.
    """

    def __init__(self, dim: int, low: Any, high: Any, num_bins: int = 64, *, name: str = "binned"):
        super().__init__()
        if dim < 1 or num_bins < 2:
            raise ConfigError(f"tokenizer {name!r}: need dim >= 1 and num_bins >= 2, got {dim}, {num_bins}")
        low_t, high_t = as_vector(low, dim, f"{name} min"), as_vector(high, dim, f"{name} max")
        if (high_t < low_t).any():
            raise ConfigError(f"tokenizer {name!r}: max < min in some dimension")
        self.name = name
        self.dim = int(dim)
        self.num_bins = int(num_bins)
        self.tokens_per_step = self.dim
        self.input_dim = self.output_dim = self.num_bins
        self.register_buffer("low", low_t)
        self.register_buffer("high", high_t)

    @classmethod
    def from_stats(cls, stats: Any, num_bins: int = 64, *, name: str = "binned") -> BinnedTokenizer:
        """From any object with (dim,) arrays `.min` and `.max` (e.g. mtm.data's ModalityStats)."""
        low = np.asarray(stats.min).reshape(-1)
        return cls(low.shape[0], low, stats.max, num_bins, name=name)

    @property
    def bin_width(self) -> torch.Tensor:
        # A constant dimension (high == low) still needs a non-zero width to divide by.
        return ((self.high - self.low) / self.num_bins).clamp_min(1e-6)

    def targets(self, raw: torch.Tensor) -> torch.Tensor:
        """(B, L, dim) raw -> (B, L, dim) int64 bin ids."""
        if raw.shape[-1] != self.dim:
            raise ValueError(f"{self.name}: last dimension is {raw.shape[-1]}, expected {self.dim}")
        ids = torch.floor((raw.float() - self.low) / self.bin_width)
        # nan_to_num: a NaN (e.g. an unfilled future step) must not become an out-of-range index.
        return ids.nan_to_num(0.0).clamp(0, self.num_bins - 1).long()

    def encode(self, raw: torch.Tensor) -> torch.Tensor:
        return F.one_hot(self.targets(raw), self.num_bins).float()  # (B, L, dim, num_bins)

    def token_loss(self, head_out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = head_out.float()
        loss = F.cross_entropy(logits.reshape(-1, self.num_bins), targets.reshape(-1), reduction="none")
        return loss.view(targets.shape)

    def decode(self, head_out: torch.Tensor) -> torch.Tensor:
        ids = head_out.argmax(-1)  # (B, L, dim)
        return self.low + (ids.float() + 0.5) * self.bin_width

    def spec(self) -> dict:
        return {"type": "binned", "name": self.name, "dim": self.dim, "num_bins": self.num_bins}
