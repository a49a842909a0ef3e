"""The MTM paper's MLP baselines: an action from the current state (MLP-BC), or from the current
state and return-to-go (MLP-RCBC).

They speak the network's interface (`TokenModel`: tokenizers, token layout, `spec` / `from_spec`;
`forward` / `predict` returning per-timestep head outputs), so the training loop, the checkpoints,
the policy and `mtm eval` treat them exactly like an MTM. The window's L timesteps are L
independent samples (each step's action from that step's state), masks are ignored, and only the
action head is trained. Selected with `model.kind: mlp_bc | mlp_rcbc`; hidden width `model.width`,
depth `model.mlp_layers`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import torch
from torch import nn

from mtm.errors import ConfigError
from mtm.model.dropout import Dropout
from mtm.model.network import ModelConfig, TokenModel
from mtm.model.tokenizers import ContinuousTokenizer, Tokenizer

MLP_KINDS = ("mlp_bc", "mlp_rcbc")


def mlp(in_dim: int, out_dim: int, config: ModelConfig) -> nn.Sequential:
    """config.mlp_layers hidden layers of config.width (Linear, GELU, dropout), then Linear to out_dim."""
    layers: list[nn.Module] = []
    for _ in range(config.mlp_layers):
        layers += [nn.Linear(in_dim, config.width), nn.GELU(), Dropout(config.dropout)]
        in_dim = config.width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class MLPPolicyModel(TokenModel):
    outputs = ("actions",)

    def inference_work(self, windows: int) -> int:
        """One row per step of each window through mlp_layers layers of width^2 multiply-adds each:
        a Transformer layer's projections are 12 width^2 per token, hence / 12. By the token measure
        (12 tokens a window) a 10-env MLP-BC policy counted as bf16 work and ran 0.72-0.83x fp32's
        speed; by this one it stays fp32 there and takes bf16 from ~100 envs (1.3x; BENCHMARKS.md,
        "precision auto against fp32")."""
        return windows * self.window * self.config.width ** 2 * self.config.mlp_layers // 12

    def __init__(self, config: ModelConfig, tokenizers: Mapping[str, Tokenizer], window: int):
        if config.kind not in MLP_KINDS:
            raise ConfigError(f"MLPPolicyModel builds {MLP_KINDS}, not {config.kind!r}")
        conditioned = config.kind == "mlp_rcbc"
        needed = ("states", "returns", "actions") if conditioned else ("states", "actions")
        missing = [m for m in needed if m not in tokenizers]
        if missing:
            raise ConfigError(f"model.kind={config.kind} needs the modalities {missing} (tokens.use_returns)")
        if not all(isinstance(tokenizers[m], ContinuousTokenizer) for m in needed):
            raise ConfigError(f"model.kind={config.kind} takes continuous tokens only (tokens.states/actions)")
        super().__init__(config, tokenizers, window)
        self.conditioned = conditioned
        # What this model can be used for, a genuine per-model subset of what an MTM does
        # (POLICY_MODES, PREDICTION_TASK_NAMES): it predicts the action from the current step alone,
        # so it acts in one policy mode and scores the prediction task of the same name.
        mode = "rcbc" if conditioned else "bc"
        self.policy_modes = (mode,)
        self.prediction_tasks = (mode,)

        in_dim = tokenizers["states"].input_dim + (tokenizers["returns"].input_dim if conditioned else 0)
        self.net = mlp(in_dim, tokenizers["actions"].output_dim, config)

    def forward(self, batch: Mapping[str, torch.Tensor], visible: torch.Tensor | None = None,
                valid: torch.Tensor | None = None, *, heads: Collection[str] | None = None,
                queries: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """{"actions": (B, L, 1, act_dim)}: each step's action from that step's inputs (masks and
        query restrictions are the MTM's business and are ignored)."""
        x = self.tokenizers["states"].encode(batch["states"])[:, :, 0]
        if self.conditioned:
            x = torch.cat([x, self.tokenizers["returns"].encode(batch["returns"])[:, :, 0]], dim=-1)
        return {"actions": self.net(x).unsqueeze(2)}

    @torch.no_grad()
    def predict(self, batch: Mapping[str, torch.Tensor], visible: torch.Tensor | None = None,
                valid: torch.Tensor | None = None, *, heads: Collection[str] | None = None,
                queries: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return {"actions": self.tokenizers["actions"].decode(self.forward(batch)["actions"])}
