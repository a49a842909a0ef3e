"""Build a model by its kind: the MTM network, an MLP baseline (BC, RCBC, IQL) or the image baseline
CNN-BC, from a config or a saved spec."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from mtm.errors import ConfigError
from mtm.model.cnn_bc import CNNBCModel
from mtm.model.iql import IQL_KIND, IQLModel
from mtm.model.mlp import MLP_KINDS, MLPPolicyModel
from mtm.model.network import MTM, ModelConfig
from mtm.model.tokenizers import Tokenizer


def build_model(config: ModelConfig, tokenizers: Mapping[str, Tokenizer], window: int) -> nn.Module:
    if config.kind == "mtm":
        return MTM(config, tokenizers, window)
    if config.kind in MLP_KINDS:
        return MLPPolicyModel(config, tokenizers, window)
    if config.kind == IQL_KIND:
        return IQLModel(config, tokenizers, window)
    if config.kind == "cnn_bc":
        return CNNBCModel(config, tokenizers, window)
    raise ConfigError(f"unknown model.kind {config.kind!r}; choose mtm, {', '.join(MLP_KINDS)}, {IQL_KIND}, cnn_bc")


def model_from_spec(spec: dict) -> nn.Module:
    """Rebuild any model from `model.spec()` (then load its state_dict); old specs mean an MTM."""
    kind = spec.get("config", {}).get("kind", "mtm")
    if kind in MLP_KINDS:
        return MLPPolicyModel.from_spec(spec)
    if kind == IQL_KIND:
        return IQLModel.from_spec(spec)
    if kind == "cnn_bc":
        return CNNBCModel.from_spec(spec)
    return MTM.from_spec(spec)
