"""Continuous tokens: one z-scored token per step (states, actions, return-to-go), MSE loss."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mtm.errors import ConfigError
from mtm.model.tokenizers.base import Tokenizer, as_vector


class ContinuousTokenizer(Tokenizer):
    """One token per step holding the whole z-scored vector; MSE on z-scored targets.

    x_norm = (x - mean) / max(std, min_std): the floor stops near-constant dimensions from being
    blown up into noise without the jump of the official code's rule (std < 0.1 -> 1; why:
    docs/model.md). Constant dimensions (std 0) are centred and stay at 0. Return-to-go is z-scored
    with its own (1,) statistics, so its loss is on the same scale as states' and actions'.
    """

    def __init__(self, dim: int, mean: Any, std: Any, min_std: float = 0.1, *, name: str = "continuous"):
        super().__init__()
        if dim < 1:
            raise ConfigError(f"tokenizer {name!r}: dim must be >= 1, got {dim}")
        if not min_std > 0:
            raise ConfigError(f"tokenizer {name!r}: min_std must be > 0, got {min_std}")
        self.name = name
        self.dim = int(dim)
        self.min_std = float(min_std)
        self.tokens_per_step = 1
        self.input_dim = self.output_dim = self.dim
        self.register_buffer("mean", as_vector(mean, dim, f"{name} mean"))
        self.register_buffer("std", as_vector(std, dim, f"{name} std"))

    @classmethod
    def from_stats(cls, stats: Any, min_std: float = 0.1, *, name: str = "continuous") -> ContinuousTokenizer:
        """From any object with (dim,) arrays `.mean` and `.std` (e.g. mtm.data's ModalityStats)."""
        mean = np.asarray(stats.mean).reshape(-1)
        return cls(mean.shape[0], mean, stats.std, min_std, name=name)

    @property
    def scale(self) -> torch.Tensor:
        return self.std.clamp_min(self.min_std)

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        """(B, L, dim) raw -> (B, L, dim) z-scored float32."""
        if raw.shape[-1] != self.dim:
            raise ValueError(f"{self.name}: last dimension is {raw.shape[-1]}, expected {self.dim}")
        return (raw.float() - self.mean) / self.scale

    def encode(self, raw: torch.Tensor) -> torch.Tensor:
        return self.normalize(raw).unsqueeze(-2)  # (B, L, 1, dim)

    def targets(self, raw: torch.Tensor) -> torch.Tensor:
        return self.encode(raw)

    def token_loss(self, head_out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # Mean over the dimensions of a token, so a token's loss does not grow with the state size.
        return (head_out.float() - targets).square().mean(-1)

    def decode(self, head_out: torch.Tensor) -> torch.Tensor:
        return head_out.float().squeeze(-2) * self.scale + self.mean

    def spec(self) -> dict:
        return {"type": "continuous", "name": self.name, "dim": self.dim, "min_std": self.min_std}
