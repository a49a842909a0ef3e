"""The tokenizer interface: raw per-step values of one modality <-> tokens, targets and per-token losses.

A tokenizer owns both directions for its modality: `encode` (features the network embeds), `targets`
(what its head is trained to output), `decode` (a head's output back into raw units). Statistics are
buffers, so they travel in the state_dict; `spec()` holds everything else, so `tokenizer_from_spec`
+ `load_state_dict` rebuilds a tokenizer exactly without unpickling anything.

Shapes (B = batch, L = window, k = tokens per step):
    raw      (B, L, *raw_shape)           e.g. states (B, L, S), images (B, L, H, W, C)
    encode   (B, L, k, input_dim)         float32 features per token, fed to Linear(input_dim -> width)
    head out (B, L, k, output_dim)        what the network predicts per token
    targets  (B, L, k, output_dim) float  (regression) or (B, L, k) int64 bin ids (classification)
    loss     (B, L, k)                    one loss per token, unreduced (mtm.model.loss masks and averages)
`token_loss` must accept any leading shape, (..., output_dim) and targets (..., [dim]) -> (...):
the loss function passes only the selected tokens, (T, output_dim).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch
from torch import nn

from mtm.errors import ConfigError


def as_vector(values: Any, dim: int, what: str) -> torch.Tensor:
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
    """The interface every modality implements. `name` is for messages and specs only: the network
    and the loss key modalities by the keys of the tokenizer dict they are given (the batch keys)."""

    name: str
    tokens_per_step: int  # k
    input_dim: int  # features per token fed to the network's input Linear
    output_dim: int  # size of the network's head output per token; 0 = input-only (no head, no loss)
    # True: the random training masks keep or hide the k tokens of a step together (image patches).
    mask_whole_steps: bool = False
    # The role the masks give a modality whose name is not a role (mtm.model.masks.ROLES): image
    # frames are observations, "states". None: the modality must be named after its role.
    mask_role: str | None = None

    @abstractmethod
    def encode(self, raw: torch.Tensor) -> torch.Tensor:
        """(B, L, *raw_shape) raw -> (B, L, k, input_dim) float32 features."""

    def encode_shown(self, raw: torch.Tensor, shown: torch.Tensor) -> torch.Tensor:
        """`encode`, where only the tokens with `shown` (B, L, k) True need to be right: the network
        zeroes the rest before embedding them. A tokenizer whose encoding is costly computes only
        the steps with a shown token (ImageTokenizer); the default encodes every step."""
        return self.encode(raw)

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
