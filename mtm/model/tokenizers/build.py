"""The tokens section of a run (`TokenConfig`, `tokens` in a config) and the tokenizers it builds
from the training data's statistics (`build_tokenizers`). A new tokenizer kind is chosen here: a
value in the Literal of its modality's field and its branch in `build_tokenizers`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

from mtm.model.tokenizers.base import Tokenizer
from mtm.model.tokenizers.binned import BinnedTokenizer
from mtm.model.tokenizers.continuous import ContinuousTokenizer
from mtm.model.tokenizers.image import ImageTokenizer


@dataclasses.dataclass
class TokenConfig:
    """How each modality becomes tokens (see mtm.model.tokenizers)."""

    states: Literal["continuous", "binned"] = "continuous"  # one z-scored token per step, or one per dimension
    actions: Literal["continuous", "binned"] = "continuous"  # the same choice for actions (binned: cross-entropy over bins)
    use_returns: bool = True  # add the return-to-go modality (needed for RCBC)
    num_bins: int = 64  # bins per dimension for binned modalities (uniform over the data's min..max)
    min_std: float = 0.1  # z-score floor: x_norm = (x - mean) / max(std, min_std)
    image_keys: list[str] | None = None  # image observations to tokenize; null = all in the data, [] = none
    image_patch_size: int = 16  # pixels per patch side: (H/p)(W/p) tokens per frame
    image_encoder: Literal["patch", "conv", "keypoints"] = "patch"  # linear patch projection (ViT/VIMA), a conv stem per patch, or conv + spatial-softmax keypoints (one token per frame)
    image_keypoints: int = 16  # keypoints per frame with image_encoder=keypoints (the token holds their 2-D coordinates)
    image_augment_pad: int = 4  # random-shift augmentation in training (pixels each way); 0 = off

    def __post_init__(self) -> None:
        # ValueError "field ...": the config loader's convention (mtm.config), reported with the section.
        for name, ok, rule in (("num_bins", self.num_bins >= 2, ">= 2"),
                               ("image_patch_size", self.image_patch_size >= 1, ">= 1"),
                               ("image_keypoints", self.image_keypoints >= 1, ">= 1"),
                               ("image_augment_pad", self.image_augment_pad >= 0, ">= 0"),
                               ("min_std", self.min_std > 0, "> 0")):
            if not ok:
                raise ValueError(f"{name} must be {rule}, got {getattr(self, name)}")


def build_tokenizers(config: TokenConfig, stats: Mapping[str, Any],
                     frame_shapes: Mapping[str, tuple[int, ...]] | None = None) -> dict[str, Tokenizer]:
    """Tokenizers in the token order states -> images -> returns -> actions (the autoregressive
    order; images are observations). stats: per modality, objects with (dim,) arrays mean, std,
    min and max (mtm.data's ModalityStats); frame_shapes: (H, W, C) per image key to tokenize."""

    def make(name: str, kind: str) -> Tokenizer:
        if kind == "binned":
            return BinnedTokenizer.from_stats(stats[name], config.num_bins, name=name)
        return ContinuousTokenizer.from_stats(stats[name], config.min_std, name=name)

    tokenizers: dict[str, Tokenizer] = {"states": make("states", config.states)}
    for key, (height, width, channels) in (frame_shapes or {}).items():
        tokenizers[key] = ImageTokenizer(height, width, channels, encoder=config.image_encoder,
                                         patch_size=config.image_patch_size, keypoints=config.image_keypoints,
                                         augment_pad=config.image_augment_pad, name=key)
    if config.use_returns:
        tokenizers["returns"] = make("returns", "continuous")
    tokenizers["actions"] = make("actions", config.actions)
    return tokenizers
