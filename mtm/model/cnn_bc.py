"""CNN-BC, the image baseline: behaviour cloning from the current frame(s) and state, no Transformer.

Each image key's tokenizer encodes its frame (with `tokens.image_encoder: keypoints`, the robomimic /
DrQ recipe: a few 3x3 convolutions, spatial-softmax keypoints, random-shift augmentation in training
when `tokens.image_augment_pad > 0`; all of it is `mtm.model.tokenizers.image`, not repeated here).
The features of every camera are concatenated with the z-scored state and an MLP (`model.width`,
`model.mlp_layers`, as the MLP baselines) maps them to the action, trained with MSE on each step.
One encoder per image key, so a second camera is a second tokenizer and a longer feature vector.

It speaks the network's interface like `mtm.model.mlp.MLPPolicyModel`: the window's L timesteps are
L independent samples, masks are ignored, only the action head is trained, and it acts in mode bc.
Selected with `model.kind: cnn_bc` (mtm/configs/cnn-bc.yaml).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import torch

from mtm.errors import ConfigError
from mtm.model.mlp import mlp
from mtm.model.network import ModelConfig, TokenModel
from mtm.model.tokenizers import ContinuousTokenizer, ImageTokenizer, Tokenizer


class CNNBCModel(TokenModel):
    outputs = ("actions",)
    policy_modes = ("bc",)
    prediction_tasks = ("bc",)

    def __init__(self, config: ModelConfig, tokenizers: Mapping[str, Tokenizer], window: int):
        if config.kind != "cnn_bc":
            raise ConfigError(f"CNNBCModel builds cnn_bc, not {config.kind!r}")
        missing = [m for m in ("states", "actions") if m not in tokenizers]
        if missing:
            raise ConfigError(f"model.kind=cnn_bc needs the modalities {missing}")
        if not all(isinstance(tokenizers[m], ContinuousTokenizer) for m in ("states", "actions")):
            raise ConfigError("model.kind=cnn_bc takes continuous states and actions only (tokens.states/actions)")
        self.image_keys = [name for name, tok in tokenizers.items() if isinstance(tok, ImageTokenizer)]
        if not self.image_keys:
            raise ConfigError("model.kind=cnn_bc needs image observations, and the data has none to use "
                              "(collect with --pixels or a pixel env; or tokens.image_keys=[] left none); "
                              "for state-only data use mlp-bc")
        super().__init__(config, tokenizers, window)
        # Each frame's features, flattened over its tokens (one token of 2K coordinates for keypoints).
        in_dim = tokenizers["states"].input_dim + sum(
            tokenizers[k].tokens_per_step * tokenizers[k].input_dim for k in self.image_keys)
        self.net = mlp(in_dim, tokenizers["actions"].output_dim, config)

    def features(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(B, L, in_dim): each step's state token, then every camera's encoded frame, in key order."""
        parts = [self.tokenizers["states"].encode(batch["states"])[:, :, 0]]
        parts += [self.tokenizers[k].encode(batch[k]).flatten(2) for k in self.image_keys]
        return torch.cat([p.to(parts[0].dtype) for p in parts], dim=-1)

    def forward(self, batch: Mapping[str, torch.Tensor], visible: torch.Tensor | None = None,
                valid: torch.Tensor | None = None, *, heads: Collection[str] | None = None,
                queries: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """{"actions": (B, L, 1, act_dim)}: each step's action from that step's state and frames."""
        return {"actions": self.net(self.features(batch)).unsqueeze(2)}

    @torch.no_grad()
    def predict(self, batch: Mapping[str, torch.Tensor], visible: torch.Tensor | None = None,
                valid: torch.Tensor | None = None, *, heads: Collection[str] | None = None,
                queries: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return {"actions": self.tokenizers["actions"].decode(self.forward(batch)["actions"])}
