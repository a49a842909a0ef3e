"""The MTM paper's MLP baselines: an action from the current state (MLP-BC), or from the current
state and return-to-go (MLP-RCBC).

They speak the network's interface — tokenizers, a token layout over the window, `forward` /
`predict` returning per-timestep head outputs, `spec` / `from_spec` — so the training loop, the
checkpoints, the policy and `mtm eval` treat them exactly like an MTM: same data, same
normalisation, same evaluation. The window's L timesteps are L independent samples (each step's
action from that step's state), masks are ignored, and only the action head is trained.
Selected with `model.kind: mlp_bc | mlp_rcbc`; hidden width `model.width`, depth `model.mlp_layers`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping

import torch
from torch import nn

from mtm.errors import ConfigError
from mtm.model.dropout import Dropout
from mtm.model.masks import TokenLayout
from mtm.model.tokenizers import ContinuousTokenizer, Tokenizer, tokenizer_from_spec

MLP_KINDS = ("mlp_bc", "mlp_rcbc")


class MLPPolicyModel(nn.Module):
    outputs = ("actions",)

    def __init__(self, config, tokenizers: Mapping[str, Tokenizer], window: int):
        super().__init__()
        if config.kind not in MLP_KINDS:
            raise ConfigError(f"MLPPolicyModel builds {MLP_KINDS}, not {config.kind!r}")
        self.conditioned = config.kind == "mlp_rcbc"
        needed = ("states", "returns", "actions") if self.conditioned else ("states", "actions")
        missing = [m for m in needed if m not in tokenizers]
        if missing:
            raise ConfigError(f"model.kind={config.kind} needs the modalities {missing} (tokens.use_returns)")
        if not all(isinstance(tokenizers[m], ContinuousTokenizer) for m in needed):
            raise ConfigError(f"model.kind={config.kind} takes continuous tokens only (tokens.states/actions)")
        self.config = config
        self.window = int(window)
        self.tokenizers = nn.ModuleDict(tokenizers)
        self.layout = TokenLayout.from_tokenizers(tokenizers, window)
        # What this model can be used for: one policy mode and one prediction task each.
        self.policy_modes = ("rcbc",) if self.conditioned else ("bc",)
        self.prediction_tasks = self.policy_modes

        width, layers = config.width, []
        in_dim = tokenizers["states"].input_dim + (tokenizers["returns"].input_dim if self.conditioned else 0)
        for _ in range(config.mlp_layers):
            layers += [nn.Linear(in_dim, width), nn.GELU(), Dropout(config.dropout)]
            in_dim = width
        layers.append(nn.Linear(in_dim, tokenizers["actions"].output_dim))
        self.net = nn.Sequential(*layers)

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

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def optim_groups(self, weight_decay: float) -> list[dict]:
        decay = [m.weight for m in self.modules() if isinstance(m, nn.Linear)]
        ids = {id(p) for p in decay}
        rest = [p for p in self.parameters() if id(p) not in ids and p.requires_grad]
        return [{"params": decay, "weight_decay": float(weight_decay)}, {"params": rest, "weight_decay": 0.0}]

    def spec(self) -> dict:
        return {"config": dataclasses.asdict(self.config), "window": self.window,
                "tokenizers": {name: tok.spec() for name, tok in self.tokenizers.items()}}

    @classmethod
    def from_spec(cls, spec: dict, config_cls) -> "MLPPolicyModel":
        tokenizers = {name: tokenizer_from_spec(s) for name, s in spec["tokenizers"].items()}
        return cls(config_cls(**spec["config"]), tokenizers, spec["window"])
