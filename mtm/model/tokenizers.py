"""Tokenizers: raw per-step values of one modality <-> tokens, targets and per-token losses.

A tokenizer owns both directions for its modality: `encode` turns raw values into the features the
network embeds, `targets` into what the network's head is trained to output, `decode` turns a head's
output back into raw units. Statistics are buffers, so they travel in the model's state_dict;
`spec()` holds everything else, so `tokenizer_from_spec(spec)` + `load_state_dict` rebuilds a
tokenizer exactly without unpickling anything.

Shapes (B = batch, L = window, k = tokens per step):
    raw      (B, L, *raw_shape)           e.g. states (B, L, S); a future image modality (B, L, H, W, C)
    encode   (B, L, k, input_dim)         float32 features per token, fed to Linear(input_dim -> width)
    head out (B, L, k, output_dim)        what the network predicts per token
    targets  (B, L, k, output_dim) float  (regression) or (B, L, k) int64 bin ids (classification)
    loss     (B, L, k)                    one loss per token, unreduced: masking and averaging are the
                                          loss function's job (mtm.model.loss)
`token_loss` must accept any leading shape, (..., output_dim) and targets (..., [dim]) -> (...):
the loss function passes only the selected tokens, (T, output_dim).

A new modality (images: k patches per frame) only has to implement this interface; the network and
the masks deal in (modality, k) and never look at raw shapes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtm.errors import ConfigError


def _vector(values: Any, dim: int, what: str) -> torch.Tensor:
    """A float32 (dim,) tensor from a statistic given as a numpy array, list or scalar."""
    t = torch.as_tensor(np.asarray(values, dtype=np.float32).reshape(-1))
    if t.numel() == 1 and dim != 1:
        t = t.expand(dim).clone()
    if t.shape != (dim,):
        raise ConfigError(f"{what} has {t.numel()} values, expected {dim} (one per dimension)")
    if not torch.isfinite(t).all():
        raise ConfigError(f"{what} contains NaN or infinite values: recompute the dataset statistics")
    return t


class Tokenizer(nn.Module, ABC):
    """The interface every modality implements (see the module docstring for shapes).

    `name` is for messages and specs only: the network and the loss key modalities by the keys of
    the tokenizer dict they are given (which match the batch keys).
    """

    name: str
    tokens_per_step: int  # k
    input_dim: int  # features per token fed to the network's input Linear
    output_dim: int  # size of the network's head output per token; 0 = input-only (no head, no loss)
    # True: the random training masks keep or hide the k tokens of a step together (image patches).
    mask_whole_steps: bool = False

    @abstractmethod
    def encode(self, raw: torch.Tensor) -> torch.Tensor:
        """(B, L, *raw_shape) raw -> (B, L, k, input_dim) float32 features."""

    @abstractmethod
    def targets(self, raw: torch.Tensor) -> torch.Tensor:
        """(B, L, *raw_shape) raw -> training targets: float (B, L, k, output_dim) or int64 (B, L, k)."""

    @abstractmethod
    def token_loss(self, head_out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(..., output_dim) head outputs and matching targets -> (...) one loss per token."""

    @abstractmethod
    def decode(self, head_out: torch.Tensor) -> torch.Tensor:
        """(B, L, k, output_dim) head outputs -> (B, L, *raw_shape) raw-unit values."""

    @abstractmethod
    def spec(self) -> dict:
        """JSON-able hyper-parameters: with the state_dict, `tokenizer_from_spec` rebuilds the tokenizer."""


class ContinuousTokenizer(Tokenizer):
    """One token per step holding the whole z-scored vector; MSE on z-scored targets.

    Scale rule: x_norm = (x - mean) / max(std, min_std). The official MTM code instead replaces any
    std < 0.1 by 1 (leaves the dimension unscaled). Both stop near-constant dimensions from being
    blown up into noise; the floor does so without a jump: under the official rule a dimension with
    std 0.099 weighs (0.099/1)^2 ~ 1/100 as much in the loss as one with std 0.101, under the floor
    the weight changes continuously. Constant dimensions (std 0) are centred and stay at 0.

    Return-to-go uses this tokenizer too, with its own (1,) statistics: it is z-scored like any other
    continuous modality, so its loss is on the same scale as states' and actions'.
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
        self.register_buffer("mean", _vector(mean, dim, f"{name} mean"))
        self.register_buffer("std", _vector(std, dim, f"{name} std"))

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


class BinnedTokenizer(Tokenizer):
    """One token per DIMENSION per step (k = dim): uniform bins over [low, high], cross-entropy.

    Bin b of a dimension covers [low + b*w, low + (b+1)*w) with w = (high - low) / num_bins; values
    outside [low, high] fall into the edge bins. A token's input is the one-hot of its bin (the
    input Linear then acts as an embedding table); its head outputs num_bins logits.

    decode = centre of the arg-max bin, not the softmax expectation: binning exists to represent
    multi-modal distributions, and the expectation of a two-peaked distribution is a value between
    the peaks that the data never takes. The round trip x -> bin -> centre is exact to w / 2.
    """

    def __init__(self, dim: int, low: Any, high: Any, num_bins: int = 64, *, name: str = "binned"):
        super().__init__()
        if dim < 1 or num_bins < 2:
            raise ConfigError(f"tokenizer {name!r}: need dim >= 1 and num_bins >= 2, got {dim}, {num_bins}")
        low_t, high_t = _vector(low, dim, f"{name} min"), _vector(high, dim, f"{name} max")
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
        from mtm.model.image_tokenizer import ImageTokenizer  # imports this module: import here, not above

        return ImageTokenizer.from_spec(spec)
    raise ConfigError(f"unknown tokenizer type {kind!r} (expected 'continuous', 'binned' or 'image')")
