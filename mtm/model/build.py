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


# Every model kind and the class that builds it: adding a kind is one entry here.
MODEL_CLASSES: dict[str, type] = {"mtm": MTM, **{kind: MLPPolicyModel for kind in MLP_KINDS}, IQL_KIND: IQLModel,
                                  "cnn_bc": CNNBCModel}


def build_model(config: ModelConfig, tokenizers: Mapping[str, Tokenizer], window: int) -> nn.Module:
    model_class = MODEL_CLASSES.get(config.kind)
    if model_class is None:
        raise ConfigError(f"unknown model.kind {config.kind!r}; choose {', '.join(MODEL_CLASSES)}")
    return model_class(config, tokenizers, window)


def model_from_spec(spec: dict) -> nn.Module:
    """Rebuild any model from `model.spec()` (then load its state_dict); old specs mean an MTM."""
    kind = spec.get("config", {}).get("kind", "mtm")
    return MODEL_CLASSES.get(kind, MTM).from_spec(spec)
