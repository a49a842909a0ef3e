"""The MTM model: tokenizers, token layout and masks, the network and its loss.

Knows nothing of files, environments or the CLI: tensors and statistics in, tensors out.
"""

from mtm.model.build import build_model, model_from_spec
from mtm.model.loss import mtm_loss
from mtm.model.masks import (DEFAULT_KEEP_RATIOS, DEFAULT_ROLE_WEIGHTS, TRAINING_MODES, MaskConfig,
                             MaskMixture, TokenLayout, apply_valid, bc_mask, forward_dynamics_mask,
                             goal_reaching_mask, imputation_mask, inverse_dynamics_mask,
                             random_autoregressive_mask, random_mask, rcbc_mask)
from mtm.model.network import MTM, ModelConfig
from mtm.model.tokenizers import BinnedTokenizer, ContinuousTokenizer, Tokenizer, tokenizer_from_spec

__all__ = ["DEFAULT_KEEP_RATIOS", "DEFAULT_ROLE_WEIGHTS", "MTM", "TRAINING_MODES", "BinnedTokenizer",
           "ContinuousTokenizer", "MaskConfig", "MaskMixture", "ModelConfig", "TokenLayout", "Tokenizer",
           "apply_valid", "build_model", "model_from_spec", "bc_mask", "forward_dynamics_mask",
           "goal_reaching_mask", "imputation_mask", "inverse_dynamics_mask", "mtm_loss",
           "random_autoregressive_mask", "random_mask", "rcbc_mask", "tokenizer_from_spec"]
